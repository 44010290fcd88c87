"""Where files go, and how they are written so that a kill at any moment leaves no half file.

Every file is written to a hidden ``.{name}.{random}.part`` beside its final path, flushed, then
renamed over it (``os.replace`` is atomic on POSIX). A process killed mid-write leaves only a
``.part`` file, which the next crawl removes at start (``remove_partial_files``). There is no fsync:
a killed process loses nothing the kernel already has, and fsync per image cost more CPU than the
JPEG conversion (bench/crawl.py); after a power cut, the catalogue row is the source of truth and
a re-run rewrites what is missing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

PART_SUFFIX = ".part"
IMAGES_DIR = "images"
ORIGINALS_DIR = "originals"
FACES_DIR = "faces"
DROPPED_DIR = "dropped"
# Every folder a crawl writes under OUTPUT_DIR (sprites: stages/sprites, logs: scheduled runs);
# nothing else (an export's DEST) may be put inside or over one of them.
CRAWL_FOLDERS = (IMAGES_DIR, DROPPED_DIR, ORIGINALS_DIR, FACES_DIR, "sprites", "logs")


def status_path(stored: str, status: str) -> str:
    """Where a crawled picture's file lives for its status: ``dropped/`` when dropped, else ``images/``."""
    return f"{DROPPED_DIR if status == 'dropped' else IMAGES_DIR}/{Path(stored).name}"


def output_dir(settings: BaseSettings) -> Path:
    return Path(settings.get("OUTPUT_DIR") or "output")


def catalog_path(settings: BaseSettings) -> Path:
    return Path(settings.get("CATALOG_DB") or output_dir(settings) / "catalog.db")


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_partial_files(root: str | os.PathLike[str]) -> int:
    """Delete ``.part`` leftovers of a killed run; return how many there were."""
    removed = 0
    for sub in (IMAGES_DIR, ORIGINALS_DIR, FACES_DIR):
        folder = Path(root) / sub
        if folder.is_dir():
            for leftover in folder.glob(f".*{PART_SUFFIX}"):
                leftover.unlink(missing_ok=True)
                removed += 1
    return removed


def remove_file(root: str | os.PathLike[str], relative: str | None) -> None:
    if relative:
        (Path(root) / relative).unlink(missing_ok=True)
