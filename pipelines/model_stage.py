"""What every model stage shares: load once, batch across items, never block the reactor.

A stage names the setting that points at its model; without it the stage is off with one log line.
The model is loaded in, and only ever called from, one dedicated thread: TensorFlow and torch
release the GIL in their kernels, so the reactor keeps crawling while a batch runs, and one model
is never used from two threads at once. Items wait on ``Batcher.submit``; a picture that cannot be
read costs that picture, not its batch.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from scrapy.exceptions import NotConfigured

from core.items import ArtworkItem
from core.storage import output_dir
from models.imaging import to_8bit
from pipelines.batching import Batcher

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


def open_pictures(root: Path, paths: list[str]) -> tuple[list[Image.Image], list[int], list[str | None]]:
    """The readable pictures, their positions, and per position why a picture could not be read."""
    images: list[Image.Image] = []
    readable: list[int] = []
    errors: list[str | None] = []
    for i, relative in enumerate(paths):
        try:
            with Image.open(root / relative) as image:
                image = to_8bit(image)  # 16-bit grayscale: scaled, where convert would clip it to white
                images.append(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB"))
            readable.append(i)
            errors.append(None)
        except OSError as exc:
            errors.append(f"could not read {relative}: {exc}")
    return images, readable, errors


class BatchedModelStage:
    """Base of the model stages. Subclasses set ``name``, ``model_setting``, ``result_field``."""

    name = "model"
    model_setting = ""
    result_field = ""

    def __init__(self, crawler: Crawler):
        s = crawler.settings
        self.model_path = s.get(self.model_setting)
        if not self.model_path:
            logger.info("%s: %s is not set; this stage is off", self.name.capitalize(), self.model_setting)
            raise NotConfigured
        self.settings = s
        self.root = Path(s.get("FILES_STORE") or output_dir(s))
        self.stats = crawler.stats
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.model: Any = None
        self.batcher: Batcher[str, Any] = Batcher(
            self._run_batch, s.getint("CURATE_BATCH_SIZE"), s.getfloat("CURATE_MAX_WAIT") / 1000
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BatchedModelStage:
        return cls(crawler)

    # --- what a stage defines (load_model and run_model run in the stage's thread) ---------------
    def load_model(self) -> Any:
        raise NotImplementedError

    def run_model(self, images: list[Image.Image]) -> list[Any]:
        """One result per picture, in order."""
        raise NotImplementedError

    # --- shared machinery -------------------------------------------------------------------------
    async def open_spider(self) -> None:
        loop = asyncio.get_running_loop()
        self.model = await loop.run_in_executor(self.thread, self.load_model)
        logger.info("%s: %s loaded from %s", self.name.capitalize(), self.model.version, self.model_path)

    def _predict_paths(self, paths: list[str]) -> list[Any]:
        images, readable, results = open_pictures(self.root, paths)
        if images:
            for i, result in zip(readable, self.run_model(images), strict=True):
                results[i] = result
        return results  # a str where the picture could not be read

    async def _run_batch(self, paths: list[str]) -> list[Any]:
        self.stats.inc_value(f"{self.name}/batches")
        return await asyncio.get_running_loop().run_in_executor(self.thread, self._predict_paths, paths)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArtworkItem):
            return item
        records = item.kept_jpegs()
        results = await asyncio.gather(*(self.batcher.submit(r["path"]) for r in records), return_exceptions=True)
        for record, result in zip(records, results, strict=True):
            record[f"{self.name}_model"] = self.model.version  # tried with this version (scrapy curate skips it)
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                result = f"the {self.name} failed: {type(result).__name__}: {result}"
            if isinstance(result, str):
                logger.warning("%s (failed): artwork %s page %s: %s", self.name.capitalize(), item.artwork["id"], record["page"], result)
                self.stats.inc_value(f"{self.name}/failed")
                record[f"{self.name}_error"] = result
                continue
            record[self.result_field] = result
            self.stats.inc_value(f"{self.name}/images")
        return item

    async def close_spider(self) -> None:
        await self.batcher.flush()
        self.thread.shutdown(wait=True)
