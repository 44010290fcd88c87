"""Scrapy adapter of the face stage (stages/faces.py): runs ``page_faces`` in the worker pool for each
kept JPEG page of an item; off unless ``FACES_ENABLED``, or when no detector can run here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured

from core.items import ArtworkItem
from core.storage import files_root
from pipelines.workers import pool_for
from stages.faces import FaceSearch, page_faces

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class FacesPipeline:
    """Scrapy adapter: runs ``page_faces`` in the worker pool for each kept JPEG page of an item."""

    def __init__(self, crawler: Crawler):
        s = crawler.settings
        if not s.getbool("FACES_ENABLED"):
            raise NotConfigured
        search = FaceSearch(s)
        if not search.detectors:
            raise NotConfigured("no face detector can run, face crops are off. " + search.why_none())
        for problem in search.problems:
            logger.warning(problem)
        self.settings = search.settings
        self.version = search.version  # recorded per page, so `scrapy curate` can skip it
        self.root = str(files_root(s))
        self.stats = crawler.stats
        self.pool = pool_for(crawler)
        logger.info("Faces: detectors %s", "+".join(search.detectors))

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FacesPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArtworkItem):
            return item
        pages = item.kept_jpegs()
        results = await asyncio.gather(
            *(self.pool.run(page_faces, self.root, str(item.artwork["id"]), record, self.settings) for record in pages),
            return_exceptions=True,  # a dead worker or a bug costs this page its faces, not the item
        )
        for record, result in zip(pages, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation, KeyboardInterrupt
                result = {"faces": None, "faces_error": f"{type(result).__name__}: {result}"}
            record.update(result, faces_model=self.version)
            if result["faces_error"]:
                logger.warning("Faces (failed): artwork %s page %s: %s", item.artwork["id"], record.get("page"), result["faces_error"])
                self.stats.inc_value("faces/failed")
            else:
                self.stats.inc_value("faces/detected", len(result["faces"]))
                self.stats.inc_value("faces/pages_with_face" if result["faces"] else "faces/pages_without_face")
        return item
