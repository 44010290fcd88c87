"""One writer at a time per output folder: the lock that crawls, curation and scheduled runs take.

Two crawls over one ``OUTPUT_DIR`` each fetch every artwork again, race on the catalogue's rows,
and the second one's start-up clean-up deletes the first one's half-written ``.part`` files. So
``scrapy crawl``, ``scrapy curate``, an export into ``OUTPUT_DIR`` and ``ops.scheduled`` all take
an exclusive, non-blocking ``flock`` on ``OUTPUT_LOCK_FILE`` (default ``OUTPUT_DIR/output.lock``)
for as long as they run. A second one says who holds it and exits with ``EXIT_LOCKED`` (75,
EX_TEMPFAIL: try again later), touching nothing. The kernel drops a ``flock`` when its holder dies,
so a killed run leaves no stale lock behind.

A scheduled run holds the lock across the crawls it starts. Its children inherit the locked file
descriptor and find its number in ``OUTPUT_LOCK_FD``; a child whose descriptor is that very file
(same device and inode) works under its parent's lock instead of refusing itself.
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from core.errors import ProjectError
from core.storage import output_dir

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

EXIT_LOCKED = 75  # EX_TEMPFAIL
INHERITED_FD_ENV = "OUTPUT_LOCK_FD"  # a parent that holds the lock passes its descriptor's number here
LOCK_NAME = "output.lock"


def lock_path(settings: BaseSettings) -> Path:
    return Path(settings.get("OUTPUT_LOCK_FILE") or output_dir(settings) / LOCK_NAME).resolve()


class OutputLocked(ProjectError):
    """Someone else holds the output folder's lock; ``holder`` is what they wrote in it."""

    exit_code = EXIT_LOCKED

    def __init__(self, path: Path, holder: str):
        super().__init__(f"another process holds {path} ({holder})")
        self.path = path
        self.holder = holder


class OutputLock:
    """An exclusive, non-blocking ``flock`` on ``path``; the file says who holds it and since when."""

    def __init__(self, path: Path):
        self.path = path
        self.file: TextIO | None = None
        self.inherited = False

    @classmethod
    def for_settings(cls, settings: BaseSettings) -> OutputLock:
        return cls(lock_path(settings))

    def acquire(self, what: str) -> str | None:
        """None when taken (or inherited from a parent that holds it); otherwise what the holder wrote."""
        if self._held_by_parent():
            self.inherited = True
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            self.file = None
            return holder
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now_text()}: {what}\n")
        self.file.flush()
        return None

    def release(self) -> None:
        if self.file is not None:
            self.file.truncate(0)  # nobody holds it now; and a finished run leaves the folder as it was
            self.file.close()  # closing drops the flock
            self.file = None
        self.inherited = False

    def hold(self, what: str) -> OutputLock:
        """Take the lock or raise ``OutputLocked``; use as ``with lock.hold("..."):``."""
        holder = self.acquire(what)
        if holder is not None:
            raise OutputLocked(self.path, holder)
        return self

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def child_env(self) -> dict[str, str]:
        """What a child process needs in its environment to work under this (held) lock."""
        assert self.file is not None, "the lock is not held"
        return {INHERITED_FD_ENV: str(self.file.fileno())}

    def _held_by_parent(self) -> bool:
        number = os.environ.get(INHERITED_FD_ENV, "")
        if not number.isdigit():
            return False
        try:
            inherited, ours = os.fstat(int(number)), os.stat(self.path)
        except OSError:  # no such descriptor, or no lock file: nothing was handed down
            return False
        return (inherited.st_dev, inherited.st_ino) == (ours.st_dev, ours.st_ino)


def _now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
