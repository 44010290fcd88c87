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
