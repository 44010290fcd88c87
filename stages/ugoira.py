"""Stage 2b: an ugoira (Pixiv's animation: a zip of frames plus per-frame delays) → animated WebP.

The zip from ``ugoira_meta.originalSrc`` is kept as the original; the WebP plays with the
original delays, which GIF (10 ms units, clamped by browsers) would not keep.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from core.storage import IMAGES_DIR, atomic_write
from stages.convert import BadImage, open_checked, sha256_hex

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024 * 1024  # one frame's uncompressed size in the zip (zip-bomb guard)


@dataclass(frozen=True)
class WebpResult:
    data: bytes
    width: int
    height: int
    delays: list[int]


def ugoira_to_webp(zip_bytes: bytes, frames: list[dict[str, Any]], *, quality: int = 90, max_pixels: int = 64_000_000) -> WebpResult:
    if not frames:
        raise BadImage("ugoira_meta lists no frames")
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except zipfile.BadZipFile as exc:
        raise BadImage(f"ugoira zip is not a zip archive: {exc}") from None
    images: list[Image.Image] = []
    delays: list[int] = []
    with archive:
        for frame in frames:
            name = str(frame.get("file", ""))
            try:
                info = archive.getinfo(name)
            except KeyError:
                raise BadImage(f"ugoira zip has no frame {name!r}") from None
            if info.file_size > MAX_FRAME_BYTES:
                raise BadImage(f"ugoira frame {name!r} unpacks to {info.file_size} bytes, over the limit")
            try:
                frame_bytes = archive.read(info)
            except (zipfile.BadZipFile, OSError) as exc:
                raise BadImage(f"ugoira frame {name!r} is corrupt: {exc}") from None
            image = open_checked(frame_bytes, max_pixels).convert("RGB")
            if images and image.size != images[0].size:
                image = image.resize(images[0].size)
            images.append(image)
            delays.append(max(int(frame.get("delay") or 0), 1))
    out = io.BytesIO()
    images[0].save(
        out, "WEBP", save_all=True, append_images=images[1:], duration=delays, loop=0, quality=quality
    )
    return WebpResult(out.getvalue(), images[0].width, images[0].height, delays)


def convert_ugoira(root: str, artwork_id: str, frames: list[dict[str, Any]], record: dict[str, Any], quality: int,
                   max_pixels: int) -> dict[str, Any]:
    """Write ``images/{id}_ugoira.webp`` from the stored zip; return the record's new fields."""
    root_path = Path(root)
    source = root_path / record["original_path"]
    try:
        result = ugoira_to_webp(source.read_bytes(), frames, quality=quality, max_pixels=max_pixels)
    except (BadImage, OSError) as exc:
        source.unlink(missing_ok=True)
        return {"status": "failed", "reason": str(exc), "original_path": None}
    relative = f"{IMAGES_DIR}/{artwork_id}_ugoira.webp"
    atomic_write(root_path / relative, result.data)
    return {
        "path": relative,
        "sha256": sha256_hex(result.data),
        "width": result.width,
        "height": result.height,
        "format": "webp",
        "source_format": "zip",
        "frame_delays": result.delays,
        "status": "kept",
        "reason": None,
    }
