"""The records that flow from the spider through the item pipelines into the catalogue."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ArtworkItem:
    """One artwork and the outcome of each of its pages.

    The spider fills ``artwork``, ``status`` and ``file_urls``; ``OriginalsPipeline`` fills
    ``files`` and starts ``images`` with one record per page; later stages complete those records
    (path, sha256, size, status, reason). The catalogue stage writes it all in one transaction.
    """

    artwork: dict[str, Any]
    status: str = "ok"  # ok, deleted, login_required, skipped, error (artworks.status)
    reason: str | None = None
    file_urls: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    ugoira_frames: list[dict[str, Any]] | None = None  # [{"file": "000000.jpg", "delay": 80}, ...]

    def kept_jpegs(self) -> list[dict[str, Any]]:
        """The page records the curation stages work on: kept and stored as JPEG (not ugoira)."""
        return [r for r in self.images if r.get("status") == "kept" and str(r.get("path") or "").endswith(".jpg")]


@dataclass
class SpriteSheetItem:
    """One kind's list page and sprite sheet, as the wiki spider found them.

    ``status`` ``ok``: the pipeline (``pipelines/sprite_sheets.py``) slices the sheet with the CSS
    (``css``) or the browser's computed styles (``computed``). ``unchanged``: page revision, CSS and
    sheet are what was sliced last, so nothing is fetched or cut again. ``failed``: ``reason`` says
    why, and the kind keeps what an earlier crawl cut.
    """

    kind: str  # collectible, trinket
    page_url: str
    status: str = "ok"  # ok, unchanged, failed
    reason: str | None = None
    source: str | None = None  # api, html, browser
    revid: int | None = None
    rows: list[Any] = field(default_factory=list)  # stages.sprites.ItemRow
    skipped_rows: list[str] = field(default_factory=list)  # table rows that are no item, and why
    css: Any = None  # the CSS text, or a parsed stylesheet (stages.sprites.css.Stylesheet)
    css_url: str = ""  # what relative url()s in the CSS are joined to
    computed: list[Any] | None = None  # stages.sprites.css.ComputedIcon, render=browser
    styles_sha1: str | None = None
    sheet_url: str | None = None
    sheet_sha1: str | None = None
    sheet_bytes: bytes | None = field(default=None, repr=False)
