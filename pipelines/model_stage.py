"""What every model stage's Scrapy adapter shares: load once, batch across items, never block the reactor.

A stage names the setting that points at its model; without it the stage is off with one log line.
The model is loaded when the stage is built, before the crawl opens or sends a request, so a model
setting that names no usable model stops the crawl with one line (``core.errors.SettingError``,
exit 2) and no crawl row. It is loaded in, and only ever called from, one dedicated thread: TensorFlow and torch
release the GIL in their kernels, so the reactor keeps crawling while a batch runs, and one model
is never used from two threads at once. Items wait on ``Batcher.submit``; a picture that cannot be
read costs that picture, not its batch. The model's own part is a ``stages.picture_model.PictureModel``
(stages/classify.py, stages/tag.py), the same one ``scrapy curate`` runs.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured

from core.errors import SettingError
from core.items import ArtworkItem
from core.storage import files_root
from pipelines.batching import Batcher
from stages.picture_model import PictureModel

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class BatchedModelStage:
    """Base of the model stages. Subclasses set ``name``, ``model_setting``, ``result_field``."""

    name = "model"
    model_setting = ""
    result_field = ""

    def __init__(self, crawler: Crawler):
        s = crawler.settings
        from models.registry import resolve_setting

        self.model_path = resolve_setting(s, self.model_setting)  # a path, or a catalogue name made one
        if not self.model_path:
            logger.info("%s: %s is not set; this stage is off", self.name.capitalize(), self.model_setting)
            raise NotConfigured
        self.settings = s
        self.root = files_root(s)
        self.stats = crawler.stats
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.stage = self.make_stage()
        try:
            self.thread.submit(self.stage.load).result()  # nothing else runs yet: the crawl has not started
        except Exception as exc:
            self.thread.shutdown(wait=False)
            raise SettingError(f"{self.model_setting}={self.model_path}: the {self.name} model cannot be loaded: "
                               f"{type(exc).__name__}: {exc}") from exc
        logger.info("%s: %s loaded from %s", self.name.capitalize(), self.model.version, self.model_path)
        self.batcher: Batcher[str, Any] = Batcher(
            self._run_batch, s.getint("CURATE_BATCH_SIZE"), s.getfloat("CURATE_MAX_WAIT") / 1000
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BatchedModelStage:
        return cls(crawler)

    def make_stage(self) -> PictureModel:
        """The stage's plain part, for ``self.model_path``."""
        raise NotImplementedError

    @property
    def model(self) -> Any:
        return self.stage.model

    # --- shared machinery -------------------------------------------------------------------------
    def _predict_paths(self, paths: list[str]) -> list[Any]:
        return self.stage.results(self.root, paths)  # a str where the picture could not be read

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
