"""Deterministic image bytes for the mock Pixiv image host.

Why a module of its own: the crawler must meet real, decodable originals (JPEG and PNG,
transparent PNGs, EXIF-rotated JPEGs), ugoira zips and several kinds of broken files, and all of
them must be reproducible from a seed string. Nothing here knows about HTTP, so it can be used
and tested without a web framework.
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import io
import math
import random
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

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

# Aspect ratios (width, height) drawn per page; the longest side is always the site's --image-size.
ASPECTS = ((3, 4), (2, 3), (1, 1.414), (1, 1), (4, 3), (16, 9))

# Characters (the site's --characters option): what a picture shows, so that curation has a truth
# to be checked against. The target is drawn as a motif a small CNN can learn from pixels.
TARGET_CHARACTER = "mona"  # a purple witch hat with a gold star, on a night-blue sky
OTHER_CHARACTER = "other"  # anything else, sometimes with one of the target's cues as a decoy
CHARACTERS = (TARGET_CHARACTER, OTHER_CHARACTER)
# Decoys give "other" pictures one cue of the target each, so no single colour gives it away.
DECOYS = (None, None, None, "night_sky", "purple_shape", "gold_star", "other_hat")
LABELLED_SEED_PREFIX = "labelled"  # seed keys of the labelled set; the site's start with its --seed
# Faces (--characters): the target's under her hat, and most others' somewhere, drawn as anime faces are
# (big eyes with a highlight, a fringe, a pointed chin) so that the crawl's default face detectors find
# them: the demo's head crops and face counts have something to work on (tests/mocksites check it).
OTHER_FACE_SHARE = 0.65  # "other" pictures with a face
TARGET_HAIR_HUES = (0.70, 0.78)  # her dark violet hair; her eyes are teal
FACE_SKINS = ((255, 228, 210), (250, 218, 196), (255, 236, 222))


def pick_page_kind(rng: random.Random) -> str:
    """How a page's original is encoded: 40% PNG (half of them transparent), 3% EXIF-rotated JPEG."""
    if rng.random() < 0.4:
        return PNG_RGBA if rng.random() < 0.5 else PNG
    return JPEG_EXIF6 if rng.random() < 0.05 else JPEG


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


def _hsv(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return (round(red * 255), round(green * 255), round(blue * 255))


def _night_blue(rng: random.Random) -> tuple[int, int, int]:
    return _hsv(rng.uniform(0.58, 0.68), rng.uniform(0.55, 0.95), rng.uniform(0.12, 0.42))


def _purple(rng: random.Random) -> tuple[int, int, int]:
    return _hsv(rng.uniform(0.73, 0.81), rng.uniform(0.45, 0.85), rng.uniform(0.45, 0.8))


def _gold(rng: random.Random) -> tuple[int, int, int]:
    return _hsv(rng.uniform(0.11, 0.15), rng.uniform(0.7, 1.0), rng.uniform(0.85, 1.0))


def _plain_colour(rng: random.Random) -> tuple[int, int, int]:
    """Any colour but the target's purple (hues 0.70..0.86 are left out)."""
    hue = rng.uniform(-0.14, 0.70)
    return _hsv(hue, rng.uniform(0.2, 1.0), rng.uniform(0.3, 1.0))


def _star(centre_x: float, centre_y: float, radius: float, turn: float) -> list[tuple[float, float]]:
    """The ten corners of a five-pointed star."""
    corners = []
    for point in range(10):
        reach = radius if point % 2 == 0 else radius * 0.42
        angle = turn + math.pi * point / 5 - math.pi / 2
        corners.append((centre_x + reach * math.cos(angle), centre_y + reach * math.sin(angle)))
    return corners


class _Canvas:
    """Paints RGB, and the alpha of a transparent picture, with the same shapes."""

    def __init__(self, image: Image.Image, alpha: Image.Image | None) -> None:
        self.painter = ImageDraw.Draw(image)
        self.alpha_painter = ImageDraw.Draw(alpha) if alpha is not None else None
        self.faces: list[tuple[float, float, float, float]] = []  # the faces drawn: (left, top, right, bottom)

    def shape(self, kind: str, coordinates: list[Any] | tuple[Any, ...], fill: tuple[int, int, int],
              **options: Any) -> None:
        getattr(self.painter, kind)(coordinates, fill=fill, **options)
        if self.alpha_painter is not None:
            getattr(self.alpha_painter, kind)(coordinates, fill=255, **options)


def _hat_place(rng: random.Random, width: int, height: int) -> tuple[float, float, float, float, float]:
    """Where a hat goes: (left, brim width, height, brim y, tip x), anywhere, at any scale."""
    side = min(width, height)
    size = rng.uniform(0.45, 0.75) * side  # brim width
    tall = size * rng.uniform(0.8, 1.1)
    left = rng.uniform(0, width - size)
    brim_y = rng.uniform(tall, height - size * 0.1)
    tip_x = left + size * rng.uniform(0.3, 0.75)
    return left, size, tall, brim_y, tip_x


def _hat(
    canvas: _Canvas, rng: random.Random, place: tuple[float, float, float, float, float],
    colour: tuple[int, int, int], *, star: tuple[int, int, int] | None,
) -> None:
    """A witch hat: a tall, slightly bent triangle on a flat brim."""
    left, size, tall, brim_y, tip_x = place
    cone = [(left + size * 0.18, brim_y), (left + size * 0.82, brim_y), (tip_x, brim_y - tall)]
    canvas.shape("polygon", cone, colour)
    canvas.shape("ellipse", (left, brim_y - size * 0.09, left + size, brim_y + size * 0.09), colour)
    if star is not None:
        radius = size * rng.uniform(0.13, 0.18)
        centre_x = (cone[0][0] + cone[1][0] + cone[2][0]) / 3
        canvas.shape("polygon", _star(centre_x, brim_y - tall * 0.3, radius, rng.uniform(0, 1.2)), star)


def _anime_face(canvas: _Canvas, rng: random.Random, centre_x: float, centre_y: float, width: float,
                hair: tuple[int, int, int], iris: tuple[int, int, int]) -> None:
    """A head ``width`` px across, centred on the face: hair behind, a face with a pointed chin, two big
    eyes (white, iris, pupil, a highlight, a thick upper lash line), brows, a nose, a mouth, a jagged
    fringe and side locks; and shoulders below."""
    w, h, x, y = width, width * 1.1, centre_x, centre_y
    canvas.faces.append((x - w / 2, y - h / 2, x + w / 2, y + h * 0.48))
    skin = rng.choice(FACE_SKINS)
    dark_hair = (hair[0] // 2, hair[1] // 2, hair[2] // 2)
    canvas.shape("polygon", [(x - w * 0.9, y + h * 1.6), (x - w * 0.45, y + h * 0.55), (x + w * 0.45, y + h * 0.55),
                             (x + w * 0.9, y + h * 1.6)], _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)))
    canvas.shape("ellipse", (x - w * 0.75, y - h * 0.75, x + w * 0.75, y + h * 0.7), hair)
    canvas.shape("ellipse", (x - w / 2, y - h / 2, x + w / 2, y + h * 0.25), skin)
    canvas.shape("polygon", [(x - w / 2, y - 2), (x + w / 2, y - 2), (x + w * 0.12, y + h * 0.48),
                             (x - w * 0.12, y + h * 0.48)], skin)
    line = max(2, round(w * 0.03))
    for side in (-1, 1):
        eye_x, eye_y, eye_w, eye_h = x + side * w * 0.21, y + h * 0.06, w * 0.2, w * 0.25
        canvas.shape("ellipse", (eye_x - eye_w / 2, eye_y - eye_h / 2, eye_x + eye_w / 2, eye_y + eye_h / 2), (255, 255, 255))
        canvas.shape("ellipse", (eye_x - eye_w * 0.4, eye_y - eye_h * 0.42, eye_x + eye_w * 0.4, eye_y + eye_h / 2), iris)
        canvas.shape("ellipse", (eye_x - eye_w * 0.2, eye_y - eye_h * 0.15, eye_x + eye_w * 0.2, eye_y + eye_h * 0.3),
                     (iris[0] // 3, iris[1] // 3, iris[2] // 3))
        canvas.shape("ellipse", (eye_x - eye_w * 0.3, eye_y - eye_h * 0.3, eye_x - eye_w * 0.05, eye_y - eye_h * 0.05),
                     (255, 255, 255))
        canvas.shape("line", [(eye_x - eye_w * 0.62, eye_y - eye_h * 0.3), (eye_x - eye_w * 0.2, eye_y - eye_h * 0.55),
                              (eye_x + eye_w * 0.3, eye_y - eye_h * 0.55), (eye_x + eye_w * 0.6, eye_y - eye_h * 0.35)],
                     (30, 20, 30), width=line)
        canvas.shape("line", [(eye_x - eye_w * 0.5, eye_y - eye_h * 0.95), (eye_x + eye_w * 0.5, eye_y - eye_h)],
                     dark_hair, width=max(1, line // 2))
    canvas.shape("line", [(x, y + h * 0.2), (x - w * 0.01, y + h * 0.23)], (200, 150, 140), width=1)
    canvas.shape("line", [(x - w * 0.05, y + h * 0.33), (x + w * 0.05, y + h * 0.33)], (170, 80, 90), width=max(1, line // 2))
    top, locks = y - h * 0.55, 6
    for lock in range(locks):
        x0 = x - w * 0.55 + lock * w * 1.1 / locks
        x1 = x0 + w * 1.1 / locks
        tip = y - h * (0.12 if lock % 2 else 0.2) + rng.uniform(-0.03, 0.03) * h
        canvas.shape("polygon", [(x0 - w * 0.05, top), (x1 + w * 0.05, top), ((x0 + x1) / 2 + rng.uniform(-0.05, 0.05) * w, tip)], hair)
    canvas.shape("ellipse", (x - w * 0.6, top - h * 0.15, x + w * 0.6, top + h * 0.2), hair)
    for side in (-1, 1):
        canvas.shape("polygon", [(x + side * w * 0.5, y - h * 0.4), (x + side * w * 0.62, y - h * 0.3),
                                 (x + side * w * 0.55, y + h * 0.5), (x + side * w * 0.45, y + h * 0.1)], hair)


def _face_under(canvas: _Canvas, rng: random.Random, place: tuple[float, float, float, float, float], height: int,
                hair: tuple[int, int, int], iris: tuple[int, int, int]) -> None:
    """A face wearing the hat at ``place`` (drawn before the hat, which covers the top of the hair),
    smaller when the hat sits low; none when even a small one would leave the picture."""
    left, size, _tall, brim_y, _tip = place
    width = min(size * 0.55, (height - brim_y) / 1.05)
    if width >= size * 0.3:
        _anime_face(canvas, rng, left + size / 2, brim_y + width * 0.45, width, hair, iris)


def _other_hair(rng: random.Random) -> tuple[int, int, int]:
    """Blonde, white, pink, brown, red, green or black: never the target's violet."""
    hue, saturation, value = rng.choice(((0.13, 0.6, 0.95), (0.0, 0.0, 0.95), (0.93, 0.4, 0.95), (0.07, 0.6, 0.45),
                                         (0.0, 0.75, 0.7), (0.35, 0.5, 0.6), (0.6, 0.2, 0.15)))
    return _hsv(hue + rng.uniform(-0.02, 0.02), saturation, value)


def _draw_character_scene(
    rng: random.Random, width: int, height: int, character: str, *, transparent: bool = False
) -> Image.Image:
    """A picture that shows ``character``: the target's hat-and-star on a night sky, or not.

    Both classes get a few plain shapes; an "other" picture may carry one decoy (a night sky, a
    purple blob, a gold star, a hat of another colour), so telling them apart takes the motif.
    A transparent picture's opaque part is a backdrop disc plus the shapes, as on the plain scenes.
    """
    decoy = None if character == TARGET_CHARACTER else rng.choice(DECOYS)
    if character == TARGET_CHARACTER or decoy == "night_sky":
        start, end = _night_blue(rng), _night_blue(rng)
    else:
        start, end = _plain_colour(rng), _plain_colour(rng)
    image = _gradient(width, height, start, end, vertical=rng.random() < 0.5)
    alpha = Image.new("L", (width, height), 0) if transparent else None
    if alpha is not None:
        margin_x, margin_y = width * rng.uniform(0.02, 0.12), height * rng.uniform(0.02, 0.12)
        ImageDraw.Draw(alpha).ellipse((margin_x, margin_y, width - margin_x, height - margin_y), fill=255)
    canvas = _Canvas(image, alpha)
    for _ in range(rng.randint(1, 4)):
        x0, y0 = rng.uniform(0, width * 0.85), rng.uniform(0, height * 0.85)
        w, h = rng.uniform(0.1, 0.35) * width, rng.uniform(0.1, 0.35) * height
        canvas.shape(rng.choice(("ellipse", "rectangle")), (x0, y0, x0 + w, y0 + h), _plain_colour(rng))
    side = min(width, height)
    # The faces take their numbers from a generator of their own, so the rest of a picture is drawn
    # as it was before they were added.
    faces = random.Random(repr(rng.getstate()[1][:8]))
    if character == TARGET_CHARACTER:
        place = _hat_place(rng, width, height)
        _face_under(canvas, faces, place, height, _hsv(faces.uniform(*TARGET_HAIR_HUES), 0.55, 0.45),
                    _hsv(faces.uniform(0.46, 0.5), 0.7, 0.6))
        _hat(canvas, rng, place, _purple(rng), star=_gold(rng))
    elif decoy == "other_hat":
        star = _plain_colour(rng) if rng.random() < 0.5 else None
        place = _hat_place(rng, width, height)
        _face_under(canvas, faces, place, height, _other_hair(faces), _hsv(faces.uniform(0, 1), 0.7, 0.6))
        _hat(canvas, rng, place, _plain_colour(rng), star=star)
    elif decoy == "purple_shape":
        w, h = rng.uniform(0.3, 0.6) * side, rng.uniform(0.3, 0.6) * side
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        canvas.shape(rng.choice(("ellipse", "rectangle")), (x0, y0, x0 + w, y0 + h), _purple(rng))
    elif decoy == "gold_star":
        radius = rng.uniform(0.06, 0.15) * side
        centre_x, centre_y = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        canvas.shape("polygon", _star(centre_x, centre_y, radius, rng.uniform(0, 1.2)), _gold(rng))
    if character != TARGET_CHARACTER and decoy != "other_hat" and faces.random() < OTHER_FACE_SHARE:
        width_px = faces.uniform(0.22, 0.38) * side
        _anime_face(canvas, faces, faces.uniform(width_px, width - width_px), faces.uniform(0.8 * width_px, height - 1.2 * width_px),
                    width_px, _other_hair(faces), _hsv(faces.uniform(0, 1), 0.7, 0.6))
    if alpha is not None:
        image.putalpha(alpha)
    image.info["faces"] = canvas.faces
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


def _scene(
    rng: random.Random, width: int, height: int, character: str | None, *, transparent: bool = False
) -> Image.Image:
    if character is None:
        return _draw_scene(rng, width, height, transparent=transparent)
    return _draw_character_scene(rng, width, height, character, transparent=transparent)


def render_original(seed_key: str, width: int, height: int, kind: str, character: str | None = None) -> bytes:
    """Encoded bytes of one page original; ``width``/``height`` are the stored pixel size.

    ``character`` (one of CHARACTERS) draws what that character looks like; None, abstract shapes.
    """
    rng = random.Random(seed_key)
    if kind == PNG:
        return _encode_png(_scene(rng, width, height, character))
    if kind == PNG_RGBA:
        return _encode_png(_scene(rng, width, height, character, transparent=True))
    if kind == JPEG:
        return _encode_jpeg(_scene(rng, width, height, character))
    if kind == JPEG_EXIF6:
        # Draw the picture upright, then store it turned 90° counter-clockwise: Orientation 6
        # tells a viewer to turn it 90° clockwise, which shows it upright again.
        upright = _scene(rng, height, width, character)
        ImageDraw.Draw(upright).rectangle((0, 0, height - 1, max(1, width // 16)), fill=(0, 0, 0))
        stored = upright.transpose(Image.Transpose.ROTATE_90)
        return _encode_jpeg(stored, orientation=6)
    raise ValueError(f"unknown page kind {kind!r}")


def drawn_faces(seed_key: str, width: int, height: int, kind: str, character: str | None = None) -> list[tuple[float, ...]]:
    """The face boxes ``render_original`` draws on that page, upright (as a viewer shows it): a test's truth."""
    rng = random.Random(seed_key)
    upright = (height, width) if kind == JPEG_EXIF6 else (width, height)
    scene = _scene(rng, *upright, character, transparent=kind == PNG_RGBA)
    return list(scene.info.get("faces", []))


def render_ugoira_frames(
    seed_key: str, width: int, height: int, count: int, character: str | None = None
) -> list[bytes]:
    """JPEG frames of an animation: the same scene with a disc that moves from frame to frame."""
    rng = random.Random(seed_key)
    scene = _scene(rng, width, height, character)
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


def page_size(rng: random.Random, kind: str, longest: int) -> tuple[int, int]:
    """A page's stored (width, height): a random aspect, turned for EXIF-rotated JPEGs."""
    aspect_w, aspect_h = rng.choice(ASPECTS)
    if kind == JPEG_EXIF6 and aspect_w == aspect_h:
        aspect_w, aspect_h = 3, 4  # a square would hide whether the rotation was applied
    side = max(aspect_w, aspect_h)
    width, height = max(1, round(longest * aspect_w / side)), max(1, round(longest * aspect_h / side))
    return (height, width) if kind == JPEG_EXIF6 else (width, height)


def write_labelled(dest: str | Path, count: int, *, image_size: int = 256, seed: int = 1) -> dict[str, int]:
    """Write ``count`` pictures per character to ``dest/{mona,other}/``; returns files per folder.

    Why: the site can label its own pictures, so a classifier can be trained without anyone
    sorting images by hand. Same generator and page kinds as the crawled originals (transparent
    PNGs, EXIF-rotated JPEGs included), but seed keys under their own prefix, so no crawled
    artwork is ever in the training set. Existing files are overwritten with the same bytes.
    """
    written = {}
    for character in CHARACTERS:
        folder = Path(dest) / character
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(count):
            seed_key = f"{LABELLED_SEED_PREFIX}:{seed}:{character}:{number}"
            rng = random.Random(seed_key + ":page")
            kind = pick_page_kind(rng)
            width, height = page_size(rng, kind, image_size)
            data = render_original(seed_key, width, height, kind, character)
            (folder / f"{character}_{number:04d}.{EXTENSIONS[kind]}").write_bytes(data)
        written[character] = count
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mocksites.images", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    labelled = commands.add_parser("labelled", help="write DEST/mona/* and DEST/other/*, a labelled training set")
    labelled.add_argument("dest")
    labelled.add_argument("--count", type=int, default=200, help="pictures per character (default: %(default)s)")
    labelled.add_argument("--image-size", type=int, default=256, help="longest side, px (default: %(default)s)")
    labelled.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    written = write_labelled(args.dest, args.count, image_size=args.image_size, seed=args.seed)
    print(", ".join(f"{n} in {Path(args.dest) / name}" for name, n in written.items()))


if __name__ == "__main__":
    main()
