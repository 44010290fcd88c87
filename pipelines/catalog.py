"""Last stage: write each artwork and its pages' outcomes to the catalogue; close the crawl row.

At the end of a crawl that finished cleanly, it also records how far down the search results are
now known to be complete (``search_coverage``), which is what lets the next run stop early safely.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals

from catalog.store import Catalog, utc_now
from core.items import ArtworkItem
from core.storage import catalog_path

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


def artwork_outcome(item: ArtworkItem) -> tuple[str, str | None]:
    """The artwork's catalogue status: a page that failed for a passing reason makes it 'error',
    so that the next run fetches it again; a broken image is a final answer and does not."""
    if item.status != "ok":
        return item.status, item.reason
    if len(item.images) != len(item.file_urls) or any(not r.get("status") for r in item.images):
        return "error", "not every page reached an outcome"
    transient = [r for r in item.images if r.get("transient")]
    if transient:
        pages = ", ".join(str(r["page"]) for r in transient)
        return "error", f"page {pages} failed for a passing reason; retried on the next run"
    return "ok", None


class CatalogPipeline:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.catalog: Catalog | None = None
        self.crawl_id: int | None = None
        self.counts = {"artworks_seen": 0, "artworks_fetched": 0, "images_kept": 0, "images_dropped": 0, "images_failed": 0}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CatalogPipeline:
        pipe = cls(crawler)
        crawler.signals.connect(pipe.spider_closed, signal=signals.spider_closed)
        return pipe

    def open_spider(self) -> None:
        spider = self.crawler.spider
        self.catalog = Catalog(catalog_path(self.crawler.settings))
        self.crawl_id = self.catalog.start_crawl(
            spider.name,
            getattr(spider, "tag", None),
            getattr(spider, "query_key", None),
            spider.crawl_arguments() if hasattr(spider, "crawl_arguments") else {},
        )
        spider.crawl_id = self.crawl_id

    def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArtworkItem):
            return item
        assert self.catalog is not None
        status, reason = artwork_outcome(item)
        images = item.images if item.status == "ok" else []
        for record in images:
            if not record.get("status"):
                record.update(status="failed", reason="no stage produced a file for this page")
        self.catalog.record_artwork({**item.artwork, "status": status, "reason": reason}, images, utc_now())
        stats = self.crawler.stats
        stats.inc_value(f"artworks/{status}")
        self.counts["artworks_fetched"] += 1
        for record in images:
            self.counts[f"images_{record['status']}"] += 1
            stats.inc_value(f"images/catalogued_{record['status']}")
        return item

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.catalog is None or self.crawl_id is None:
            return
        stats = self.crawler.stats
        progress = getattr(spider, "state", {}) or {}
        self.counts["artworks_seen"] = int(progress.get("artworks_seen", 0))
        errors = stats.get_value("log_count/ERROR", 0)
        status, why = spider.crawl_outcome(reason, errors) if hasattr(spider, "crawl_outcome") else (reason, None)
        covered = getattr(spider, "completed_coverage", lambda *_: None)(reason, errors)
        if covered is not None:
            self.catalog.set_coverage(spider.query_key, spider.tag, covered[0], covered[1], self.crawl_id)
        self.catalog.finish_crawl(self.crawl_id, status, why, self.counts, stats.get_stats())
        summary = self.catalog.summary()
        logger.info(
            "Crawl %s (%s): %d artworks seen in search, %d fetched; images kept %d, dropped %d, "
            "failed %d; catalogue %s",
            self.crawl_id, status, self.counts["artworks_seen"], self.counts["artworks_fetched"],
            self.counts["images_kept"], self.counts["images_dropped"], self.counts["images_failed"],
            summary["catalog"],
        )
        self.catalog.close()
