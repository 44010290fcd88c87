"""Start a bundled local site in a subprocess and talk to its control endpoints.

One helper for the demo, the tests and the benchmark: the site prints its URLs as one JSON line
once it listens (port 0 → a free port), and is stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class LocalSite:
    def __init__(self, module: str = "mocksites.pixiv", *options: str, startup_timeout: float = 30.0):
        self.command = [sys.executable, "-m", module, "--port", "0", "--image-port", "0", *options]
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[str] | None = None
        self.urls: dict[str, str] = {}

    def __enter__(self) -> LocalSite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            self.command, cwd=REPO, stdout=subprocess.PIPE, stderr=None, text=True, env=env
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], self.startup_timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.process.kill()
            code = self.process.wait()
            raise RuntimeError(f"{' '.join(self.command)} did not announce its URLs (exit code {code})")
        self.urls = json.loads(line)
        assert set(self.urls) == {"api", "images"}, self.urls

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def api(self) -> str:
        return self.urls["api"]

    @property
    def images(self) -> str:
        return self.urls["images"]

    def control(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(self.api + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def truth(self) -> list[dict[str, Any]]:
        truth: list[dict[str, Any]] = self.control("/_mock/truth")
        return truth

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.control("/_mock/stats")
        return stats

    def reset_stats(self) -> None:
        self.control("/_mock/reset-stats", "POST")
