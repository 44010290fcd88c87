"""What a curation run (jobs/curate.py) and its set-wide identity stage (jobs/identity.py) share: the
input pictures and how they are named, the run's summary, its errors, and what a stage may ask of it.

It sits below both so that neither imports the other's module for these names.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from catalog.curation import is_still
from catalog.store import LOCAL_PREFIX
from core.errors import EXIT_FAILED, ProjectError

if TYPE_CHECKING:
    from catalog.store import Catalog


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SQLITE_MAGIC = b"SQLite format 3\x00"


class CurateError(ProjectError, ValueError):
    """A run that cannot start (a stage without its model, a missing input); the message says why."""


class ModelLoadError(ProjectError, RuntimeError):
    """A configured model that cannot be loaded; the run stops (finished batches stay committed)."""

    exit_code = EXIT_FAILED
    hint = "curate stopped; finished batches are in the catalogue"


@dataclass(frozen=True)
class CatalogueInput:
    artwork_id: str
    page: int


@dataclass(frozen=True)
class FileInput:
    path: Path  # absolute


@dataclass
class Picture:
    """One input picture in the batch being curated."""

    artwork_id: str
    page: int
    file: Path  # where it is now
    path: str  # as ``images.path`` holds it
    status: str
    reason: str | None
    label: str  # how messages and the report name it
    error: str | None = None  # it cannot be read: no stage runs on it
    new_row: dict[str, Any] | None = None  # a folder picture seen for the first time
    path_changed: bool = False
    from_catalogue: bool = False  # listed from the catalogue (or a folder file it already holds by path)

    @property
    def key(self) -> tuple[str, int]:
        return self.artwork_id, self.page

    @property
    def local(self) -> bool:
        return self.artwork_id.startswith(LOCAL_PREFIX)

    @property
    def still(self) -> bool:
        return is_still(self.artwork_id, self.path)


def is_catalogue_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def picture_files(folder: Path) -> list[Path]:
    """The pictures under ``folder``, recursively, sorted; hidden files and folders left out.

    A broken symbolic link is listed too, so that the run reports why it has no picture."""
    return [
        p for p in sorted(folder.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.exists()))
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(path))


def printable(text: str | os.PathLike[str]) -> str:
    """A name as text that UTF-8 can hold: bytes of a file name that are not UTF-8 (which Python
    keeps as lone surrogates) written as ``\\xff``. SQLite, the JSON report and the terminal
    refuse lone surrogates; any other name comes back unchanged."""
    text = os.fspath(text)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name makes: kept visible as one
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def from_printable(text: str) -> Path:
    """The file that ``printable`` wrote as ``text`` (its ``\\xNN`` back to bytes)."""
    raw = re.sub(rb"\\x([89a-f][0-9a-f])", lambda m: bytes([int(m[1], 16)]), text.encode("utf-8"))
    return Path(os.fsdecode(raw))


@dataclass
class Summary:
    pictures: int = 0
    from_catalogue: int = 0
    from_folders: int = 0
    new_pictures: int = 0
    duplicates: int = 0
    processed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # picture -> first reason
    animations: int = 0  # ugoira: decided by the rules, not run through the picture stages
    decided: int = 0
    now_kept: int = 0
    now_dropped: int = 0
    reasons_updated: int = 0
    measured: int = 0  # pictures whose pixel statistics this run took
    duplicates_found: int = 0  # copies the duplicate rule matched
    versions: dict[str, str] = field(default_factory=dict)
    identity: str = ""  # the identity stage's line: how many pictures are the character

    def lines(self, catalog: Path, report: str | None) -> list[str]:
        out = [
            f"Curated {self.pictures} pictures ({self.from_catalogue} from the catalogue, {self.from_folders} from "
            f"folders, {self.new_pictures} of them new to it; {self.duplicates} more files were copies of these) "
            f"in {printable(catalog)}"
        ]
        for stage, version in self.versions.items():
            out.append(
                f"  {stage} ({version}): {self.processed[stage]} processed, {self.skipped[stage]} skipped "
                f"(same model version), {self.failed[stage]} failed"
            )
        if not self.versions:
            out.append("  no stage ran (none named with --stages, or none configured)")
        if self.measured:
            out.append(f"  pixel statistics: {self.measured} pictures measured (colorfulness, line art, phash)")
        if self.animations:
            out.append(f"  animations: {self.animations} ugoira decided by the rules alone (no picture stage reads them)")
        out.append(f"  failed: {len(self.failures)} pictures")
        for label, reason in list(self.failures.items())[:20]:
            out.append(f"    {label}: {reason}")
        if len(self.failures) > 20:
            out.append(f"    ... and {len(self.failures) - 20} more (see the log)")
        if self.decided:
            out.append(
                f"  decisions: {self.decided} pictures decided; changed: {self.now_dropped} now dropped, "
                f"{self.now_kept} now kept, {self.reasons_updated} with a new reason only"
            )
            if self.duplicates_found:
                out.append(f"  duplicates: {self.duplicates_found} copies of kept pictures found (duplicate rule)")
        elif self.new_pictures:
            out.append(
                f"  decisions: none (no curation rules: CURATE_RULES or CURATE_RULES_FILE); the {self.new_pictures} "
                "pictures new from folders are catalogued as kept, as chosen by hand, so `scrapy export` takes them "
                "all. Rules over the stages' results (classifier, tag, faces) keep or drop them instead"
            )
        else:
            out.append("  decisions: unchanged (no curation rules configured)")
        if self.identity:
            out.append(f"  {self.identity}")
        if report:
            out.append(f"  report: {printable(report)}")
        return out


class Run(Protocol):
    """What a stage that works over the whole run (jobs/identity.py) may use of it."""

    catalog: Catalog
    summary: Summary
    force: bool
    batch_size: int

    def failed(self, label: str, reason: str, stage: str | None = None) -> None:
        """Count a picture a stage could not do, and say why once."""

