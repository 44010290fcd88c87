"""A pipeline stage that raises on some artworks, for the crawls of tests/pipelines/test_guarded.py.

It sits between the decision stage and the catalogue, where a real stage's bug would leave JPEGs in
``images/`` and ``dropped/`` without a row. ``FAILING_STAGE_EVERY = N`` makes it raise on every
artwork whose id is a multiple of N.
"""

from __future__ import annotations

from typing import Any

from core.items import ArtworkItem


class FailingStage:
    def __init__(self, every: int):
        self.every = every

    @classmethod
    def from_crawler(cls, crawler: Any) -> FailingStage:
        return cls(crawler.settings.getint("FAILING_STAGE_EVERY", 3))

    def process_item(self, item: Any) -> Any:
        if isinstance(item, ArtworkItem) and item.status == "ok" and int(item.artwork["id"]) % self.every == 0:
            raise RuntimeError(f"a bug that meets artwork {item.artwork['id']}")
        return item
