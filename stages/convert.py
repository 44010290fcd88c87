"""Stage 2 (pipelines/jpeg.py runs it in the crawl): turn each stored original into a JPEG for training, or say exactly why not.

``to_jpeg`` is the plain function: alpha composited on white (never the RGB hidden under
transparent pixels, which is what ImagesPipeline leaves), EXIF orientation applied, explicit
quality, ICC profile kept. A JPEG that needs no rotation is kept byte for byte: re-encoding would
only lose quality. Broken input (truncated, not an image, over the pixel limit) raises ``BadImage``.
The picture's pixel statistics (stages/filters.py) are taken here too, from the decoded pixels
this stage has anyway, so the monochrome and duplicate rules never read the file again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import EXIT_FAILED, ProjectError
from core.storage import IMAGES_DIR, atomic_write
from models.imaging import flatten_on_white
from stages.filters import PictureStats, picture_stats

logger = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112


class BadImage(ProjectError, ValueError):
    """These bytes are not a usable image; the message says why, for the catalogue."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class JpegResult:
    data: bytes
    width: int
    height: int
    source_format: str  # png, jpeg, gif, webp, ...
    reencoded: bool
    stats: PictureStats | None = None


def open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open and fully decode, refusing empty, non-image, truncated and oversized input."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    if data[:512].lstrip().lower().startswith((b"<!doctype html", b"<html")):
        raise BadImage("an HTML page, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise BadImage(f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise BadImage(f"not a recognised image format (starts with {data[:8]!r})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(
            f"decompression bomb refused: {width}x{height} = {width * height / 1e6:.1f} Mpx "
            f"is over the IMAGE_MAX_PIXELS limit of {max_pixels / 1e6:.1f} Mpx"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"truncated or corrupt {image.format or 'image'}: {exc}") from None
    return image


def to_jpeg(data: bytes, *, quality: int = 92, max_pixels: int = 64_000_000) -> JpegResult:
    image = open_checked(data, max_pixels)
    source_format = (image.format or "unknown").lower()
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if source_format == "jpeg" and orientation in (0, 1) and image.mode in ("RGB", "L"):
        return JpegResult(data, image.width, image.height, source_format, reencoded=False, stats=picture_stats(image))
    icc_profile = image.info.get("icc_profile")
    image = ImageOps.exif_transpose(image)
    image = flatten_on_white(image)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, icc_profile=icc_profile)
    return JpegResult(out.getvalue(), image.width, image.height, source_format, reencoded=True,
                      stats=picture_stats(image))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def convert_page(
    root: str, artwork_id: str, record: dict[str, Any], quality: int, max_pixels: int, keep_originals: bool,
    data: bytes | None = None,
) -> dict[str, Any]:
    """Convert one original into ``images/{id}_p{n}.jpg``; return the record's new fields.

    The original is ``data`` when the originals stage handed its bytes over, else the stored file
    ``record["original_path"]``. A plain function so that it can run in a worker process.
    """
    root_path = Path(root)
    source = root_path / record["original_path"] if data is None else None
    try:
        result = to_jpeg(source.read_bytes() if source else data or b"", quality=quality, max_pixels=max_pixels)
    except (BadImage, OSError) as exc:
        if source:
            source.unlink(missing_ok=True)
        return {"status": "failed", "reason": str(exc), "original_path": None}
    relative = f"{IMAGES_DIR}/{artwork_id}_p{record['page']}.jpg"
    target = root_path / relative
    if source and not result.reencoded and not keep_originals:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)  # the original already is the JPEG we want
    else:
        atomic_write(target, result.data)
        if source and not keep_originals:
            source.unlink(missing_ok=True)
    return {
        "path": relative,
        "original_path": record["original_path"] if keep_originals else None,
        "sha256": sha256_hex(result.data),
        "width": result.width,
        "height": result.height,
        "format": "jpeg",
        "source_format": result.source_format,
        "status": "kept",
        "reason": None,
        **(result.stats.as_record() if result.stats else {}),
    }
