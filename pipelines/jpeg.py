"""Scrapy adapter of stage 2 (stages/convert.py): each stored original becomes a JPEG in the worker pool."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from core.items import ArtworkItem
from core.storage import files_root
from pipelines.workers import pool_for
from stages.convert import convert_page

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class JpegPipeline:
    """Scrapy adapter: converts each stored original of an ArtworkItem in the worker pool."""

    def __init__(self, crawler: Crawler):
        s = crawler.settings
        self.root = str(files_root(s))
        self.quality = s.getint("JPEG_QUALITY")
        self.max_pixels = s.getint("IMAGE_MAX_PIXELS")
        self.keep_originals = s.getbool("KEEP_ORIGINALS")
        self.stats = crawler.stats
        self.pool = pool_for(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> JpegPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArtworkItem) or item.ugoira_frames is not None:
            return item
        pending = [r for r in item.images if r.get("original_path") and not r.get("status")]
        # the bytes leave the record here, so they never reach the catalogue or a feed
        originals = [record.pop("original_bytes", None) for record in pending]
        results = await asyncio.gather(*(
            self.pool.run(convert_page, self.root, item.artwork["id"], record,
                          self.quality, self.max_pixels, self.keep_originals, data)
            for record, data in zip(pending, originals, strict=True)
        ))
        for record, update in zip(pending, results, strict=True):
            record.update(update)
            if update["status"] == "failed":
                logger.warning("Image (failed): artwork %s page %d: %s", item.artwork["id"], record["page"], update["reason"])
                self.stats.inc_value("images/failed")
        return item
