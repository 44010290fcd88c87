"""Head and upper-body crops from a face box, and pictures brought to a training size.

Plain functions over picture sizes, face boxes and Pillow images, used by ``scrapy export``
(``--crop``, ``--size``/``--fit``). Boxes are ``(left, top, right, bottom)`` in picture pixels, as
Pillow's ``crop`` takes them; a face is ``(x, y, w, h)`` as the ``faces`` table stores it (the box
of the detectors in models/faces.py: roughly brows to chin, cheek to cheek, without the hair).

The ratios below are in face widths and face heights, so they follow the character's size on the
page. They are applied at export time to the stored picture, never baked into stored crops, so
changing them needs no re-crawl.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from PIL import Image, ImageColor

from core.errors import EXIT_FAILED, ProjectError
from models.imaging import flatten_on_white

Box = tuple[int, int, int, int]  # left, top, right, bottom

CROP_KINDS = ("none", "face", "head", "upper_body")
FITS = ("pad", "crop", "resize")

# Head: the face box misses the hair, which in anime art rises well above the brows (bangs, ahoge,
# hats, ears) and spreads to the sides; below the chin only the neck is wanted. So 1.8 face widths
# across, 0.8 face heights above the face top and 0.3 below its bottom: 2.1 face heights tall.
HEAD_WIDTH = 1.8
HEAD_ABOVE = 0.8
HEAD_BELOW = 0.3
# Upper body (head to about the waist): anime figures are 5-7 heads tall and their shoulders about
# 2.5-3 face widths across, so 3 face widths, from 0.5 face heights above the face top (the hair)
# down to 3.5 face heights below it (chest and waist, where "upper body" tags and LoRA sets cut).
UPPER_BODY_WIDTH = 3.0
UPPER_BODY_ABOVE = 0.5
UPPER_BODY_DOWN = 3.5
RATIOS = {
    "head": {"width": HEAD_WIDTH, "above": HEAD_ABOVE, "below": HEAD_BELOW},
    "upper_body": {"width": UPPER_BODY_WIDTH, "above": UPPER_BODY_ABOVE, "down_from_face_top": UPPER_BODY_DOWN},
}
# A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's ``draft``) when the
# output is this many times smaller still, so LANCZOS has clean pixels to work from: what
# Pillow's own ``thumbnail`` does with its default ``reducing_gap``.
DRAFT_GAP = 2.0
# Then a large shrink starts with Pillow's integer ``reduce`` (box averaging) down to this many times
# the output, and LANCZOS does the rest: at 3, Pillow documents the result as indistinguishable
# from LANCZOS all the way, for a fraction of its time.
REDUCING_GAP = 3.0


class TooSmall(ProjectError, ValueError):
    """The picture would have to be enlarged more than ``max_upscale`` allows; the message says how much."""

    exit_code = EXIT_FAILED


def face_box_problem(face: Mapping[str, float], width: int | None, height: int | None) -> str | None:
    """Why a stored face box cannot be cut from a ``width`` x ``height`` picture (empty, not numbers,
    or wholly outside it), or None. A catalogue edited by hand or merged from elsewhere can hold such
    boxes; cut anyway, each would give a one-pixel crop."""
    try:
        x, y, w, h = (float(face[k]) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError):
        return f"its face box is not four numbers: {dict(face)!r}"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return f"its face box is not four finite numbers: {x:g},{y:g} {w:g}x{h:g}"
    if w <= 0 or h <= 0:
        return f"its face box is empty ({w:g}x{h:g} at {x:g},{y:g})"
    if width and height and not (x < width and y < height and x + w > 0 and y + h > 0):
        return f"its face box ({w:g}x{h:g} at {x:g},{y:g}) lies outside the {width}x{height} picture"
    return None


def clip_box(left: float, top: float, right: float, bottom: float, width: int, height: int) -> Box:
    """The box in whole pixels, cut to the picture (never empty: at least one pixel)."""
    x0 = min(max(round(left), 0), width - 1)
    y0 = min(max(round(top), 0), height - 1)
    return x0, y0, max(min(round(right), width), x0 + 1), max(min(round(bottom), height), y0 + 1)


def square_in(left: float, top: float, right: float, bottom: float, width: int, height: int) -> Box:
    """A square over the box (its longer side), shifted (not cut) to stay inside the picture, and
    shrunk to the picture's shorter side when larger: a real square of picture pixels."""
    side = min(max(right - left, bottom - top), width, height)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0 = min(max(cx - side / 2, 0.0), width - side)
    y0 = min(max(cy - side / 2, 0.0), height - side)
    side_px = max(1, round(side))
    x0_px, y0_px = min(round(x0), width - side_px), min(round(y0), height - side_px)
    return x0_px, y0_px, x0_px + side_px, y0_px + side_px


def _grown(face: Mapping[str, float], across: float, above: float, down_from_top: float,
           width: int, height: int, square: bool) -> Box:
    x, y, w, h = face["x"], face["y"], face["w"], face["h"]
    cx = x + w / 2
    box = (cx - across * w / 2, y - above * h, cx + across * w / 2, y + down_from_top * h)
    return square_in(*box, width, height) if square else clip_box(*box, width, height)


def head_box(face: Mapping[str, float], width: int, height: int, square: bool = False) -> Box:
    """The head around a face box (hair above, neck below), cut to the picture or ``square``."""
    return _grown(face, HEAD_WIDTH, HEAD_ABOVE, 1 + HEAD_BELOW, width, height, square)


def upper_body_box(face: Mapping[str, float], width: int, height: int, square: bool = False) -> Box:
    """Head to waist below a face box, cut to the picture or ``square``."""
    return _grown(face, UPPER_BODY_WIDTH, UPPER_BODY_ABOVE, UPPER_BODY_DOWN, width, height, square)


def crop_box(kind: str, face: Mapping[str, float], width: int, height: int, square: bool = False) -> Box:
    """The box of a ``head`` or ``upper_body`` crop (``face``: the face box itself)."""
    if kind == "head":
        return head_box(face, width, height, square)
    if kind == "upper_body":
        return upper_body_box(face, width, height, square)
    if kind == "face":
        box = (face["x"], face["y"], face["x"] + face["w"], face["y"] + face["h"])
        return square_in(*box, width, height) if square else clip_box(*box, width, height)
    raise ValueError(f"no crop kind {kind!r}; one of head, upper_body, face")


# --- alignment: one training size ------------------------------------------------------------------


def parse_colour(text: str) -> tuple[int, int, int] | str:
    """``--pad-colour``: ``edge`` (replicate the border pixels), or a colour: white, #808080, rgb(...)."""
    if text.strip().lower() == "edge":
        return "edge"
    return ImageColor.getrgb(text.strip())[:3]  # ValueError for an unknown colour


@dataclass(frozen=True)
class Fit:
    """How a picture is brought to ``size``.

    ``pad``: the whole picture, its longer side made ``size``, letterboxed to size x size with
    ``pad_colour`` (or its edge pixels). ``crop``: a square (on the face when one is known) made
    size x size. ``resize``: the shorter side made ``size``, aspect kept, then both sides cut down to
    a multiple of ``multiple`` (kohya's buckets are multiples of 64) by trimming the edges evenly.

    No picture is enlarged more than ``max_upscale`` times (1.0: never). ``pad`` and ``crop`` promise
    exactly size x size, so a picture that would need more is refused (TooSmall); ``resize`` keeps
    it at the largest allowed scale instead (smaller than ``size``, still on the multiple), as
    sd-scripts' ``bucket_no_upscale`` does, and refuses only one smaller than one multiple.
    """

    size: int
    mode: str = "resize"
    pad_colour: tuple[int, int, int] | str = (255, 255, 255)
    multiple: int = 64
    max_upscale: float = 1.0

    def as_dict(self) -> dict[str, object]:
        colour = self.pad_colour if isinstance(self.pad_colour, str) else "#%02x%02x%02x" % self.pad_colour
        return {"size": self.size, "fit": self.mode, "pad_colour": colour if self.mode == "pad" else None,
                "multiple": self.multiple if self.mode == "resize" else None, "max_upscale": self.max_upscale}


@dataclass(frozen=True)
class Plan:
    """What becomes of a picture of a given size: which part of it is resized to what, on what canvas."""

    source: tuple[float, float, float, float]  # the part of the picture that is kept
    size: tuple[int, int]  # ... resized to this
    canvas: tuple[int, int]  # the output; larger than ``size`` only when padding
    offset: tuple[int, int]  # where the resized part goes on the canvas

    @property
    def scale(self) -> float:
        return self.size[0] / (self.source[2] - self.source[0])


def plan(width: int, height: int, fit: Fit, focus: tuple[float, float] | None = None) -> Plan:
    """The plan for a ``width`` x ``height`` picture; ``focus`` (a face centre) places ``crop``'s
    square. Raises TooSmall when ``fit`` cannot be met without enlarging it too much."""
    n = fit.size
    if fit.mode == "pad":
        scale = min(n / width, n / height)
        _check_upscale(scale, fit, width, height)
        size = (min(n, max(1, round(width * scale))), min(n, max(1, round(height * scale))))
        return Plan((0, 0, width, height), size, (n, n), ((n - size[0]) // 2, (n - size[1]) // 2))
    if fit.mode == "crop":
        side = min(width, height)
        fx, fy = focus if focus is not None else (width / 2, height / 2)
        left = min(max(round(fx - side / 2), 0), width - side)
        top = min(max(round(fy - side / 2), 0), height - side)
        _check_upscale(n / side, fit, width, height)
        return Plan((left, top, left + side, top + side), (n, n), (n, n), (0, 0))
    if fit.mode == "resize":
        scale = min(n / min(width, height), fit.max_upscale)
        out_w = math.floor(width * scale + 1e-9) // fit.multiple * fit.multiple
        out_h = math.floor(height * scale + 1e-9) // fit.multiple * fit.multiple
        if not out_w or not out_h:
            raise TooSmall(f"{width}x{height} is under one multiple of {fit.multiple} px at most "
                           f"x{fit.max_upscale:g} (--max-upscale)")
        keep_w, keep_h = out_w / scale, out_h / scale  # the centre part that becomes the output
        x0, y0 = (width - keep_w) / 2, (height - keep_h) / 2
        if scale == 1:  # no resampling at all: whole pixels
            x0, y0 = math.floor(x0), math.floor(y0)
        return Plan((x0, y0, x0 + keep_w, y0 + keep_h), (out_w, out_h), (out_w, out_h), (0, 0))
    raise ValueError(f"no fit {fit.mode!r}; one of {', '.join(FITS)}")


def _check_upscale(scale: float, fit: Fit, width: int, height: int) -> None:
    if scale > fit.max_upscale + 1e-9:
        raise TooSmall(f"{width}x{height} would be enlarged x{scale:.2f} to {fit.size} px, more than "
                       f"x{fit.max_upscale:g} (--max-upscale)")


def align(image: Image.Image, fit: Fit, focus: tuple[float, float] | None = None) -> Image.Image:
    """The picture (RGB) brought to ``fit``: LANCZOS resampling, then the padding."""
    image = flatten_on_white(image).convert("RGB")
    steps = plan(image.width, image.height, fit, focus)
    return _apply(image, steps, fit, (0.0, 0.0, 1.0))


def _apply(image: Image.Image, steps: Plan, fit: Fit, origin: tuple[float, float, float]) -> Image.Image:
    """Carry out ``steps`` on ``image``, whose pixel (0, 0) is the plan's (``origin`` x, y), at
    ``origin`` scale (a drafted JPEG is smaller than the picture the plan was made for)."""
    ox, oy, factor = origin
    left, top, right, bottom = ((v - o) * factor for v, o in zip(steps.source, (ox, oy, ox, oy)))
    whole = all(float(v).is_integer() for v in (left, top, right, bottom))
    if whole and (right - left, bottom - top) == steps.size:
        resized = image.crop((int(left), int(top), int(right), int(bottom)))
    else:
        resized = image.resize(steps.size, Image.Resampling.LANCZOS, box=(left, top, right, bottom),
                               reducing_gap=REDUCING_GAP)
    if steps.canvas == steps.size:
        return resized
    x, y = steps.offset
    if fit.pad_colour == "edge":
        pixels = np.asarray(resized)
        w, h = steps.canvas
        padded = np.pad(pixels, ((y, h - y - resized.height), (x, w - x - resized.width), (0, 0)), mode="edge")
        return Image.fromarray(padded)
    canvas = Image.new("RGB", steps.canvas, fit.pad_colour)
    canvas.paste(resized, (x, y))
    return canvas


def render(data: bytes, region: Box | None = None, fit: Fit | None = None,
           focus: tuple[float, float] | None = None) -> Image.Image:
    """The picture in ``data`` cut to ``region`` (the whole picture when None) and brought to ``fit``,
    as RGB. ``focus`` is in picture pixels. A large JPEG is decoded at a reduced scale (``draft``)
    when the output is much smaller, so a 4000 px original is never decoded whole for a 512 px crop."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        left, top, right, bottom = region or (0, 0, width, height)
        if fit is None:
            return flatten_on_white(image.crop((left, top, right, bottom))).convert("RGB")
        inner_focus = None if focus is None else (focus[0] - left, focus[1] - top)
        steps = plan(right - left, bottom - top, fit, inner_focus)
        factor = 1.0
        if image.format == "JPEG" and steps.scale * DRAFT_GAP < 1:
            wanted = (math.ceil(width * steps.scale * DRAFT_GAP), math.ceil(height * steps.scale * DRAFT_GAP))
            image.draft(image.mode, wanted)  # picks the smallest DCT scale at least this large
            factor = image.width / width
        picture = flatten_on_white(image).convert("RGB")
        if factor != 1.0:  # the region in drafted pixels (whole ones: a crop, not a resample)
            box = (math.floor(left * factor), math.floor(top * factor),
                   min(picture.width, math.ceil(right * factor)), min(picture.height, math.ceil(bottom * factor)))
            picture = picture.crop(box)
            return _apply(picture, steps, fit, (box[0] / factor - left, box[1] / factor - top, factor))
        return _apply(picture.crop((left, top, right, bottom)), steps, fit, (0.0, 0.0, 1.0))


def encode(image: Image.Image, fmt: str, jpeg_quality: int) -> bytes:
    """The picture's bytes: PNG stays lossless, anything else JPEG at ``jpeg_quality``. Same pixels,
    same bytes: no timestamp, no optimiser pass that could vary."""
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, "PNG")
    else:
        image.save(out, "JPEG", quality=jpeg_quality)
    return out.getvalue()
