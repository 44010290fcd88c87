"""Deterministic image bytes for the mock Pixiv image host.

Why a module of its own: the crawler must meet real, decodable originals (JPEG and PNG,
transparent PNGs, EXIF-rotated JPEGs), ugoira zips and several kinds of broken files, and all of
them must be reproducible from a seed string. Nothing here knows about HTTP, so it can be used
and tested without a web framework.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib

from PIL import Image, ImageDraw

# Page kinds: how a page's original is encoded.
PNG = "png"
PNG_RGBA = "png_rgba"  # transparent background, opaque shapes
JPEG = "jpeg"
JPEG_EXIF6 = "jpeg_exif6"  # pixels stored rotated, EXIF Orientation 6 turns them upright
PAGE_KINDS = (PNG, PNG_RGBA, JPEG, JPEG_EXIF6)
EXTENSIONS = {PNG: "png", PNG_RGBA: "png", JPEG: "jpg", JPEG_EXIF6: "jpg"}
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg"}

# Broken originals, in the order --broken-every cycles through them.
TRUNCATED = "truncated"
HTML = "html"
EMPTY = "empty"
BOMB = "bomb"
BROKEN_KINDS = (TRUNCATED, HTML, EMPTY, BOMB)
TRUNCATED_FRACTION = 0.6
BOMB_SIDE = 20_000  # px; 400 M pixels, far past Pillow's decompression-bomb limit
BROKEN_HTML = (
    b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>pixiv</title></head>"
    b"<body><p>Just a moment... Please enable JavaScript and cookies to continue.</p>"
    b"</body></html>"
)

EXIF_ORIENTATION_TAG = 0x0112
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 1  # cheap to encode; the benchmark fetches thousands of distinct images
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _gradient(
    width: int, height: int, start: tuple[int, int, int], end: tuple[int, int, int], *, vertical: bool
) -> Image.Image:
    """A linear two-colour gradient, built as one stretched line (about 0.1 ms at 256 px)."""
    ends = Image.new("RGB", (2, 1), start)
    ends.putpixel((1, 0), end)
    line = ends.resize((height if vertical else width, 1), Image.Resampling.BILINEAR)
    if vertical:
        line = line.transpose(Image.Transpose.ROTATE_270)
    return line.resize((width, height), Image.Resampling.NEAREST)


def _draw_scene(
    rng: random.Random, width: int, height: int, *, transparent: bool = False
) -> Image.Image:
    """A gradient background with a few coloured shapes (RGB, or RGBA with only the shapes opaque)."""
    image = _gradient(width, height, _colour(rng), _colour(rng), vertical=rng.random() < 0.5)
    alpha = Image.new("L", (width, height), 0) if transparent else None
    painter = ImageDraw.Draw(image)
    alpha_painter = ImageDraw.Draw(alpha) if alpha is not None else None
    for _ in range(rng.randint(3, 6)):
        x0, x1 = sorted((rng.randrange(width), rng.randrange(width)))
        y0, y1 = sorted((rng.randrange(height), rng.randrange(height)))
        # Keep every shape at least a few pixels wide so transparent images have opaque content.
        box = (x0, y0, max(x1, x0 + width // 8), max(y1, y0 + height // 8))
        shape = painter.ellipse if rng.random() < 0.5 else painter.rectangle
        shape(box, fill=_colour(rng))
        if alpha_painter is not None:
            alpha_shape = alpha_painter.ellipse if shape == painter.ellipse else alpha_painter.rectangle
            alpha_shape(box, fill=255)
    if alpha is not None:
        # The RGB under the transparent pixels stays the gradient on purpose: a converter that
        # drops alpha instead of compositing on white shows it.
        image.putalpha(alpha)
    return image


def _encode_png(image: Image.Image) -> bytes:
    """PNG with filter type 0 on every row and zlib level 1.

    Written by hand because Pillow's encoder tries every row filter, which costs about three
    times as much CPU as the compression itself; the site shares its cores with the crawler.
    """
    colour_type = {"RGB": 2, "RGBA": 6}[image.mode]
    stride = image.width * len(image.mode)
    # Each PNG row is a filter byte (0) then the pixel bytes: lay the pixels out as a greyscale
    # image one byte narrower than the rows and let Pillow add the zero column in C.
    pixel_rows = Image.frombytes("L", (stride, image.height), image.tobytes())
    filtered = Image.new("L", (stride + 1, image.height), 0)
    filtered.paste(pixel_rows, (1, 0))
    rows = filtered.tobytes()
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, colour_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows, PNG_COMPRESS_LEVEL))
        + _png_chunk(b"IEND", b"")
    )


def _encode_jpeg(image: Image.Image, *, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    if orientation is None:
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())
    return buffer.getvalue()


def render_original(seed_key: str, width: int, height: int, kind: str) -> bytes:
    """Encoded bytes of one page original; ``width``/``height`` are the stored pixel size."""
    rng = random.Random(seed_key)
    if kind == PNG:
        return _encode_png(_draw_scene(rng, width, height))
    if kind == PNG_RGBA:
        return _encode_png(_draw_scene(rng, width, height, transparent=True))
    if kind == JPEG:
        return _encode_jpeg(_draw_scene(rng, width, height))
    if kind == JPEG_EXIF6:
        # Draw the picture upright, then store it turned 90° counter-clockwise: Orientation 6
        # tells a viewer to turn it 90° clockwise, which shows it upright again.
        upright = _draw_scene(rng, height, width)
        ImageDraw.Draw(upright).rectangle((0, 0, height - 1, max(1, width // 16)), fill=(0, 0, 0))
        stored = upright.transpose(Image.Transpose.ROTATE_90)
        return _encode_jpeg(stored, orientation=6)
    raise ValueError(f"unknown page kind {kind!r}")


def render_ugoira_frames(seed_key: str, width: int, height: int, count: int) -> list[bytes]:
    """JPEG frames of an animation: the same scene with a disc that moves from frame to frame."""
    rng = random.Random(seed_key)
    scene = _draw_scene(rng, width, height)
    disc_colour = _colour(rng)
    radius = max(2, min(width, height) // 8)
    frames = []
    for frame_index in range(count):
        frame = scene.copy()
        centre_x = radius + (width - 2 * radius) * frame_index // max(1, count - 1)
        centre_y = height // 2
        ImageDraw.Draw(frame).ellipse(
            (centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius),
            fill=disc_colour,
        )
        frames.append(_encode_jpeg(frame))
    return frames


def ugoira_frame_name(frame_index: int) -> str:
    return f"{frame_index:06d}.jpg"


def ugoira_zip(frames: list[bytes]) -> bytes:
    """A stored (uncompressed) zip of frames named 000000.jpg, 000001.jpg, ... like Pixiv's."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for frame_index, frame in enumerate(frames):
            archive.writestr(ugoira_frame_name(frame_index), frame)
    return buffer.getvalue()


def truncated(data: bytes, fraction: float = TRUNCATED_FRACTION) -> bytes:
    """The first part of a real file, as left by a dropped connection."""
    return data[: int(len(data) * fraction)]


def _png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(chunk_type + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", checksum)


@functools.cache
def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit greyscale PNG of side x side zeros: tiny on the wire, huge once decoded.

    Written chunk by chunk rather than through Pillow so that building it never holds the
    decoded image (50 MB at 20000 px) in memory.
    """
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte 0, then the packed pixels
    compressor = zlib.compressobj(9)
    rows = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )
