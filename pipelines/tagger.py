"""Stage: tag each kept picture with a DeepDanbooru-format model, in batches, inside the crawl.

The model is loaded once, in one dedicated thread, which also runs every batch: TensorFlow and
torch release the GIL in their kernels, so the reactor keeps crawling while a batch runs, and one
model is never used from two threads at once. Items wait on ``Batcher.submit``; the last partial
batch runs when the spider closes. Without ``TAGGER_PROJECT`` the stage is off (one log line).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from scrapy.exceptions import NotConfigured

from crawler.items import ArtworkItem
from crawler.storage import output_dir
from pipelines.batching import Batcher

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


def tag_records(tagger: Any, category_by_tag: dict[str, str], root: Path, paths: list[str]) -> list[list[dict[str, Any]] | str]:
    """Tags for each picture (a list of {tag, category, score, model}), or why it could not be read."""
    images: list[Image.Image] = []
    readable: list[int] = []
    results: list[list[dict[str, Any]] | str] = []
    for i, relative in enumerate(paths):
        try:
            with Image.open(root / relative) as image:
                images.append(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB"))
            readable.append(i)
            results.append([])
        except OSError as exc:
            results.append(f"could not read {relative}: {exc}")
    if images:
        for i, tags in zip(readable, tagger.predict(images, batch_size=len(images)), strict=True):
            results[i] = [
                {"tag": tag, "category": category_by_tag[tag], "score": float(score), "model": tagger.version}
                for tag, score in sorted(tags.items(), key=lambda kv: -kv[1])
            ]
    return results


class TaggerPipeline:
    def __init__(self, crawler: Crawler):
        s = crawler.settings
        self.project = s.get("TAGGER_PROJECT")
        if not self.project:
            logger.info("Tagger: TAGGER_PROJECT is not set; pictures are not tagged")
            raise NotConfigured
        self.threshold = s.getfloat("TAGGER_THRESHOLD")
        self.category_thresholds = dict(s.getdict("TAGGER_CATEGORY_THRESHOLDS"))
        self.root = Path(s.get("FILES_STORE") or output_dir(s))
        self.stats = crawler.stats
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="tagger")
        self.tagger: Any = None
        self.batcher: Batcher[str, Any] = Batcher(
            self._run_batch, s.getint("CURATE_BATCH_SIZE"), s.getfloat("CURATE_MAX_WAIT") / 1000
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> TaggerPipeline:
        return cls(crawler)

    def _load(self) -> Any:
        from models.tagger import DeepDanbooruTagger  # TensorFlow is imported only when tagging is on

        return DeepDanbooruTagger.load(
            self.project, threshold=self.threshold, category_thresholds=self.category_thresholds
        )

    async def open_spider(self) -> None:
        loop = asyncio.get_running_loop()
        self.tagger = await loop.run_in_executor(self.thread, self._load)
        self.category_by_tag = {tag: self.tagger.category_of(i) for i, tag in enumerate(self.tagger.tags)}
        logger.info("Tagger: %s loaded from %s", self.tagger.version, self.project)

    async def _run_batch(self, paths: list[str]) -> list[Any]:
        loop = asyncio.get_running_loop()
        self.stats.inc_value("tagger/batches")
        return await loop.run_in_executor(
            self.thread, tag_records, self.tagger, self.category_by_tag, self.root, paths
        )

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArtworkItem):
            return item
        records = [r for r in item.images if r.get("status") == "kept" and str(r.get("path") or "").endswith(".jpg")]
        results = await asyncio.gather(*(self.batcher.submit(r["path"]) for r in records), return_exceptions=True)
        for record, result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                result = f"the tagger failed: {type(result).__name__}: {result}"
            if isinstance(result, str):
                logger.warning("Tagger (failed): artwork %s page %s: %s", item.artwork["id"], record["page"], result)
                self.stats.inc_value("tagger/failed")
                record["tagger_error"] = result
                continue
            record["model_tags"] = result
            self.stats.inc_value("tagger/images")
        return item

    async def close_spider(self) -> None:
        await self.batcher.flush()
        self.thread.shutdown(wait=True)
