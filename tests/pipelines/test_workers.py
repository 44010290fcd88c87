"""The conversion pool survives a worker that dies, and runs in a thread when asked to."""

from __future__ import annotations

import asyncio
import os
import signal

from pipelines.workers import ConversionPool


def die_once(marker: str) -> int:
    """Kill the calling worker the first time, as the OOM killer would."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def test_a_dead_worker_is_replaced_and_the_call_retried(tmp_path):
    pool = ConversionPool(1)
    try:
        pid = asyncio.run(pool.run(die_once, str(tmp_path / "died")))
        assert pid != os.getpid()
        assert asyncio.run(pool.run(os.getpid)) == pid  # the new pool keeps working
    finally:
        pool.shutdown()


def test_zero_workers_runs_in_a_thread_of_this_process():
    pool = ConversionPool(0)
    assert asyncio.run(pool.run(os.getpid)) == os.getpid()
