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
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any, Callable

from scrapy import signals

_POOLS: dict[int, Executor] = {}


def worker_count(setting: int) -> int:
    return setting if setting >= 0 else max(1, (os.cpu_count() or 1))


def pool_for(crawler: Any) -> Executor | None:
    """One pool per crawler, shared by every stage, shut down when the spider closes."""
    workers = worker_count(crawler.settings.getint("IMAGE_WORKERS"))
    if workers == 0:
        return None
    key = id(crawler)
    if key not in _POOLS:
        # spawn, not fork: the crawler process has a running event loop and threads
        _POOLS[key] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

        def shutdown(spider: Any) -> None:
            pool = _POOLS.pop(key, None)
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

        crawler.signals.connect(shutdown, signal=signals.spider_closed, weak=False)
    return _POOLS[key]


async def run_in_pool(pool: Executor | None, function: Callable[..., Any], *args: Any) -> Any:
    if pool is None:
        return await asyncio.to_thread(function, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
