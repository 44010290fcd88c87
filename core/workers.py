"""Worker-process helpers shared by the crawl's conversion pool and ``scrapy curate``'s workers.

Plain code (no Scrapy), so library jobs can start workers without importing the crawl's adapters.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def start_worker(parent: int) -> None:
    """Worker initializer. A crawl killed with SIGKILL must not leave its workers running.

    Python's pool workers outlive a killed parent (they wait on their queue forever), so ask the
    kernel to kill them with it (Linux), or watch the parent from a thread elsewhere. Ctrl-C goes
    to the whole process group: the crawler handles it, the workers ignore it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # one core a worker: torch (the learned face detector, imported later) would otherwise start a
    # thread per core in every worker and the workers would fight over the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the call above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def worker_count(setting: int) -> int:
    return setting if setting >= 0 else max(1, (os.cpu_count() or 1))
