"""The one place where an exception in any item pipeline stage is caught (Scrapy's ``ITEM_PROCESSOR``).

Scrapy's own manager logs "Error processing" for an item whose stage raised and forgets the item:
its files stay in ``images/`` with no catalogue row, and the crawl still ends ``finished``. This
manager runs the stages in the same order, and when one raises (anything but ``DropItem``):

* it logs the stage, the item and the traceback once, at ERROR;
* it stops the item's way through the stages and hands it, with the reason, to every component
  that records failures (``record_failure(item, reason)``, true when it recorded the item): the
  catalogue stage writes the artwork as ``error``, which the next run fetches again, and a row for
  every page whose file is on disk; the sprite stage marks the wiki page failed;
* it counts the item in ``items/stage_failed``, which makes the crawl's ``crawls.status``
  ``failed`` and ``scrapy crawl`` exit non-zero (``crawler/commands/crawl.py``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from scrapy.exceptions import DropItem
from scrapy.pipelines import ItemPipelineManager
from scrapy.utils.defer import ensure_awaitable

from core.items import ArtworkItem, SpriteSheetItem

logger = logging.getLogger(__name__)

FAILED_STAT = "items/stage_failed"  # items a stage raised on
UNRECORDED_STAT = "items/stage_failed_unrecorded"  # ... whose failure could not be recorded either
STATUS_STAT = "crawl/status"  # the crawls row's final status, set by the stage that closes it: the exit code


def item_name(item: Any) -> str:
    """What a log line calls the item."""
    if isinstance(item, ArtworkItem):
        return f"artwork {item.artwork.get('id')}"
    if isinstance(item, SpriteSheetItem):
        return f"sprite sheet {item.kind}"
    return type(item).__name__


def stage_name(method: Callable[..., Any]) -> str:
    """``pipelines.decide.DecisionPipeline`` for its bound ``process_item``."""
    owner = getattr(method, "__self__", None)
    cls = type(owner) if owner is not None else method
    return f"{cls.__module__}.{cls.__qualname__}"


class GuardedPipelineManager(ItemPipelineManager):
    """Scrapy's item pipeline manager, with every stage's exception caught, recorded and counted."""

    async def process_item_async(self, item: Any) -> Any:
        for method in self.methods["process_item"]:
            assert method is not None
            try:
                if method in self._mw_methods_requiring_spider:
                    item = await ensure_awaitable(method(item, self._spider))
                else:
                    item = await ensure_awaitable(method(item))
            except DropItem:
                raise
            except Exception as exc:
                return await self._failed(item, method, exc)
        return item

    async def _failed(self, item: Any, method: Callable[..., Any], exc: Exception) -> Any:
        reason = f"{stage_name(method)} failed: {type(exc).__name__}: {exc}"
        logger.error("Item (failed): %s: %s", item_name(item), reason, exc_info=exc)
        stats = self.crawler.stats if self.crawler is not None else None
        if stats is not None:
            stats.inc_value(FAILED_STAT)
        recorded = False
        for component in self.middlewares:
            record = getattr(component, "record_failure", None)
            if record is None:
                continue
            try:
                recorded |= bool(await ensure_awaitable(record(item, reason)))
            except Exception:
                logger.exception("Item (failed): %s: %s could not record the failure either",
                                 item_name(item), stage_name(record))
        if not recorded and stats is not None:
            stats.inc_value(UNRECORDED_STAT)
        return item
