"""Scrapy adapter of the ugoira stage (stages/ugoira.py): an animation's frames become one WebP."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from core.items import ArtworkItem
from core.storage import files_root
from pipelines.workers import pool_for
from stages.ugoira import convert_ugoira

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class UgoiraPipeline:
    """Scrapy adapter: builds the WebP of an ugoira ArtworkItem in the worker pool."""

    def __init__(self, crawler: Crawler):
        s = crawler.settings
        self.root = str(files_root(s))
        self.quality = s.getint("UGOIRA_WEBP_QUALITY")
        self.max_pixels = s.getint("IMAGE_MAX_PIXELS")
        self.stats = crawler.stats
        self.pool = pool_for(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> UgoiraPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArtworkItem) or item.ugoira_frames is None:
            return item
        for record in item.images:
            if record.get("original_path") and not record.get("status"):
                update = await self.pool.run(
                    convert_ugoira, self.root, item.artwork["id"], item.ugoira_frames,
                    record, self.quality, self.max_pixels,
                )
                record.update(update)
                if update["status"] == "failed":
                    logger.warning("Image (failed): ugoira %s: %s", item.artwork["id"], update["reason"])
                    self.stats.inc_value("images/failed")
        return item
