"""Last stage: write each artwork and its pages' outcomes to the catalogue; close the crawl row.

At the end of a crawl that finished cleanly, it also records how far down the search results are
now known to be complete (``search_coverage``), which is what lets the next run stop early safely.

An item that a stage raised on (``pipelines/guarded.py``) reaches ``record_failure`` instead: the
artwork is written as ``error`` with the reason, so the next run fetches it again, and every page
gets a ``failed`` row that keeps the path of any file the stages had written, so that no file is
left without a row. The crawl then ends ``failed``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals

from catalog.store import Catalog, utc_now
from core.items import ArtworkItem
from core.storage import ORIGINALS_DIR, catalog_path, files_root
from pipelines.guarded import FAILED_STAT, STATUS_STAT
from sites.pixiv_api import original_file_name

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


OK_STATUSES = ("finished", "stopped_early")  # the crawl statuses of a run that did what it was asked


def failed_pages(item: ArtworkItem, reason: str, root: Path) -> list[dict[str, Any]]:
    """Every page of an item a stage raised on, as a ``failed`` row with ``reason``; a page's files
    (picture, kept original, face crops) stay named on its row, so none is left without one. Before
    the originals stage handed its pages over, an original already written under ``root`` is found
    where that stage puts it."""
    pages = item.images or [
        {"page": page, "url": url, "original_path": _original_on_disk(item, page, url, root)}
        for page, url in enumerate(item.file_urls)
    ]
    rows = []
    for record in pages:
        row = {k: v for k, v in record.items() if k != "original_bytes"}
        row.update(status="failed", reason=f"{reason}; fetched again on the next run")
        rows.append(row)
    return rows


def _original_on_disk(item: ArtworkItem, page: int, url: str, root: Path) -> str | None:
    try:
        name = original_file_name(item.artwork["id"], page, url, item.ugoira_frames is not None)
    except ValueError:  # not a Pixiv id: the originals stage wrote nothing for it
        return None
    relative = f"{ORIGINALS_DIR}/{name}"
    return relative if (root / relative).is_file() else None


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
        self.stage_failures: list[str] = []  # why each item a stage raised on failed

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CatalogPipeline:
        pipe = cls(crawler)
        crawler.signals.connect(pipe.spider_closed, signal=signals.spider_closed)
        return pipe

    def open_spider(self) -> None:
        spider: Any = self.crawler.spider  # the Pixiv spider, or one without its search (tests)
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
        status, reason = artwork_outcome(item)
        images = item.images if item.status == "ok" else []
        for record in images:
            if not record.get("status"):
                record.update(status="failed", reason="no stage produced a file for this page")
        self._record(item, status, reason, images)
        return item

    def record_failure(self, item: Any, reason: str) -> bool:
        """An item a stage raised on: the artwork as ``error``, every page ``failed`` with its files."""
        if not isinstance(item, ArtworkItem):
            return False
        self.stage_failures.append(f"artwork {item.artwork.get('id')}: {reason}")
        item.status, item.reason = "error", reason
        item.images = failed_pages(item, reason, files_root(self.crawler.settings))
        self._record(item, "error", reason, item.images)
        return True

    def _record(self, item: ArtworkItem, status: str, reason: str | None, images: list[dict[str, Any]]) -> None:
        assert self.catalog is not None
        self.catalog.record_artwork({**item.artwork, "status": status, "reason": reason}, images, utc_now())
        stats = self.crawler.stats
        stats.inc_value(f"artworks/{status}")
        self.counts["artworks_fetched"] += 1
        for record in images:
            self.counts[f"images_{record['status']}"] += 1
            stats.inc_value(f"images/catalogued_{record['status']}")

    def spider_closed(self, spider: Any, reason: str) -> None:
        if self.catalog is None or self.crawl_id is None:
            return
        stats = self.crawler.stats
        progress = getattr(spider, "state", {}) or {}
        self.counts["artworks_seen"] = int(progress.get("artworks_seen", 0))
        errors = stats.get_value("log_count/ERROR", 0)
        status, why = spider.crawl_outcome(reason, errors) if hasattr(spider, "crawl_outcome") else (reason, None)
        lost = stats.get_value(FAILED_STAT, 0)
        if lost:
            example = self.stage_failures[0] if self.stage_failures else "see the log"
            lost_why = (f"{lost} artworks failed in a pipeline stage (e.g. {example}); "
                        "each is catalogued as an error and fetched again on the next run")
            status, why = "failed", lost_why + (f"; {status}: {why}" if why and status not in OK_STATUSES else "")
        covered = getattr(spider, "completed_coverage", lambda *_: None)(reason, errors)
        if covered is not None and not lost:
            self.catalog.set_coverage(spider.query_key, spider.tag, covered[0], covered[1], self.crawl_id)
        self.catalog.finish_crawl(self.crawl_id, status, why, self.counts, stats.get_stats())
        stats.set_value(STATUS_STAT, status)
        summary = self.catalog.summary()
        logger.info(
            "Crawl %s (%s): %d artworks seen in search, %d fetched; images kept %d, dropped %d, "
            "failed %d; catalogue %s",
            self.crawl_id, status, self.counts["artworks_seen"], self.counts["artworks_fetched"],
            self.counts["images_kept"], self.counts["images_dropped"], self.counts["images_failed"],
            summary["catalog"],
        )
        self.catalog.close()
