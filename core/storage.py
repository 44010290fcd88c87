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


def move_to_status(root: Path, stored: str, status: str) -> str:
    """Put a crawled picture's file in its status's folder (``status_path``) under ``root``, and return
    its path there, relative as stored: the crawl's decision stage, ``scrapy curate`` and ``scrapy
    review`` all move a kept or dropped picture this way. A rename, so the file is never half there."""
    moved = status_path(stored, status)
    if moved != stored:
        (root / moved).parent.mkdir(parents=True, exist_ok=True)
        os.replace(root / stored, root / moved)
    return moved


def output_dir(settings: BaseSettings) -> Path:
    return Path(settings.get("OUTPUT_DIR") or "output")


def files_root(settings: BaseSettings) -> Path:
    """Where the crawl's files live: ``FILES_STORE``, or ``OUTPUT_DIR`` when that is empty."""
    return Path(settings.get("FILES_STORE") or output_dir(settings))


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
