"""A process pool for CPU-heavy stages (decoding and encoding images).

Pillow holds the GIL for much of a decode, so threads left the crawler on one core: image
conversion ran at the expense of the reactor (bench/crawl.py). Worker processes use the other
cores. Workers receive paths, not pixels, and write their output atomically themselves, so a crawl
killed mid-conversion leaves nothing half-written. ``IMAGE_WORKERS = 0`` runs stages in a thread.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from scrapy import signals

from core.workers import start_worker, worker_count


class ConversionPool:
    """Worker processes shared by every stage of one crawl.

    A worker that dies (the kernel's OOM killer on a huge image, a stray kill) breaks a Python
    process pool for good; this one is replaced once and the call retried, so one bad image costs
    one page, not the rest of the crawl.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self.executor: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: the crawler process has a running event loop and threads
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=start_worker,
            initargs=(os.getpid(),),
        )

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        if self.workers == 0:
            return await asyncio.to_thread(function, *args)
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            if self.executor is None:
                self.executor = self._start()
            executor = self.executor
            try:
                return await loop.run_in_executor(executor, function, *args)
            except BrokenProcessPool:
                if self.executor is executor:  # not yet replaced by a concurrent call
                    executor.shutdown(wait=False, cancel_futures=True)
                    self.executor = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


_POOLS: dict[int, ConversionPool] = {}


def pool_for(crawler: Any) -> ConversionPool:
    """One pool per crawler, shared by every stage, shut down when the spider closes."""
    key = id(crawler)
    if key not in _POOLS:
        pool = _POOLS[key] = ConversionPool(worker_count(crawler.settings.getint("IMAGE_WORKERS")))

        def shutdown(spider: Any) -> None:
            _POOLS.pop(key, None)
            pool.shutdown()

        crawler.signals.connect(shutdown, signal=signals.spider_closed, weak=False)
    return _POOLS[key]
