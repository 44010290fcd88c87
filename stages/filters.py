"""Pixel statistics that curation rules filter on, computed once per picture and stored in the catalogue.

Dataset builders drop greyscale, single-tint and sketch-like pictures from colour training sets.
Both measures need only the overall look of a picture, so they are taken on a copy shrunk to
``STATS_SIDE`` pixels on its long side (a JPEG is decoded at a reduced scale for it): about the
cost of a thumbnail, whatever the picture's size (bench/filters.py compares the full-size way).

* ``colorfulness``: how far the picture's colours stray from one hue. Each pixel's chroma is a
  vector in an opponent-colour plane (red-green, yellow-blue; 0 for grey); the picture's main hue
  is the direction of their mean. A pixel's off-hue chroma is the part of its chroma that points
  more than ``HUE_TOLERANCE`` degrees away from that hue (all of it at 105 degrees and more), so
  grey, sepia and any one-colour picture in shades of it score near 0, and two opposite hues (red
  and cyan) score high. The value is the ``COLOR_PERCENTILE``-th percentile over the pixels, so a
  colour character on a large white background still counts as colour. Scale: 0 to about 250.
* ``line_art``: the share of the non-paper pixels that lie on thin strokes. Paper is the picture's
  common light tone (white, or a scan's tinted paper); strokes are what does not survive a 3x3
  erosion of the non-paper mask. Line art and pencil sketches score high, pictures with filled
  areas low; a picture with no light tone to be paper scores 0, a blank page 1.
* ``phash``: stages/dedup.py's perceptual hash of the same small copy, for duplicate grouping.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.imaging import flatten_on_white
from stages.dedup import phash_image

STATS_SIDE = 256  # px, the long side of the copy the statistics are taken on
COLOR_PERCENTILE = 95  # a picture with at least 5% of its pixels off the main hue is colour
HUE_TOLERANCE = 15.0  # degrees off the main hue still counted as it: a tint drifts from its shadows to its lights
PAPER_PERCENTILE = 90  # the paper's lightness: this percentile of the picture's lightness
PAPER_MIN_LIGHTNESS = 128  # a darker "paper" is no paper: the picture is not line art on paper
PAPER_TOLERANCE = 40.0  # RGB distance from the paper's colour still counted as paper
BLANK_SHARE = 0.002  # fewer non-paper pixels than this: a blank page

# The monochrome rule's defaults (stages/decide.py), measured on the 66 character cards and icons
# in ../shared/fixtures/anime as JPEGs: in colour they score 3.6 and more (median 21; pale, warm
# palettes lowest); in greyscale 0, tinted sepia or blue (by ImageOps.colorize) at most 1.1. Their
# line_art is at most 0.39, their edge drawings (FIND_EDGES, inverted) 0.67 to 1.
MONOCHROME_MAX_COLORFULNESS = 3.0
MONOCHROME_MIN_LINE_ART = 0.6


@dataclass(frozen=True)
class PictureStats:
    colorfulness: float
    line_art: float
    phash: int

    def as_record(self) -> dict[str, object]:
        """The fields a page record and the ``images`` row hold (phash as 16 hex digits)."""
        return {"colorfulness": round(self.colorfulness, 3), "line_art": round(self.line_art, 4),
                "phash": f"{self.phash:016x}"}


def small_copy(image: Image.Image, side: int = STATS_SIDE) -> Image.Image:
    """The picture as RGB on white, shrunk to ``side`` on its long side (never enlarged)."""
    scale = min(1.0, side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if image.format == "JPEG" and getattr(image, "tile", None):  # not decoded yet: decode at a reduced scale
        image.draft("RGB", size)
    rgb = flatten_on_white(image)
    if rgb.mode != "RGB":
        rgb = rgb.convert("RGB")
    if rgb.size == size:
        return rgb
    return rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)  # box-reduce first: fast


def colorfulness(rgb: np.ndarray) -> float:
    """The ``COLOR_PERCENTILE``-th percentile of the pixels' chroma off the picture's main hue."""
    pixels = rgb.reshape(-1, 3).astype(np.float32)
    red_green = pixels[:, 0] - pixels[:, 1]
    yellow_blue = (pixels[:, 0] + pixels[:, 1]) / 2 - pixels[:, 2]
    strength = np.hypot(red_green, yellow_blue)
    mean_rg, mean_yb = float(red_green.mean()), float(yellow_blue.mean())
    norm = float(np.hypot(mean_rg, mean_yb))
    if norm < 1e-6:  # no main hue (grey, or hues in balance): every pixel's chroma is off it
        return float(np.percentile(strength, COLOR_PERCENTILE))
    along = (red_green * mean_rg + yellow_blue * mean_yb) / norm  # strength x cos(angle to the main hue)
    across = np.abs(red_green * mean_yb - yellow_blue * mean_rg) / norm  # strength x sin(angle)
    tolerance = np.radians(HUE_TOLERANCE)
    # strength x sin(angle - tolerance), 0 within the tolerance and all of it past a right angle more
    off_hue = across * np.cos(tolerance) - along * np.sin(tolerance)
    off_hue = np.where(along >= strength * np.cos(tolerance), 0.0, off_hue)
    off_hue = np.where(along < -strength * np.sin(tolerance), strength, off_hue)
    return float(np.percentile(off_hue, COLOR_PERCENTILE))


def line_art(rgb: np.ndarray) -> float:
    """The share of the non-paper pixels that a 3x3 erosion removes (thin strokes), 0..1."""
    pixels = rgb.astype(np.float32)
    lightness = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    paper_level = float(np.percentile(lightness, PAPER_PERCENTILE))
    if paper_level < PAPER_MIN_LIGHTNESS:
        return 0.0
    paper_colour = np.median(pixels[lightness >= paper_level], axis=0)
    ink = np.linalg.norm(pixels - paper_colour, axis=-1) > PAPER_TOLERANCE
    inked = int(ink.sum())
    if inked < BLANK_SHARE * ink.size:
        return 1.0
    padded = np.pad(ink, 1, constant_values=False)
    height, width = ink.shape
    solid = np.ones_like(ink)
    for dy in range(3):
        for dx in range(3):
            solid &= padded[dy:dy + height, dx:dx + width]
    return 1.0 - float(solid.sum()) / inked


def picture_stats(image: Image.Image) -> PictureStats:
    """The statistics of a picture (its first frame when animated)."""
    small = small_copy(image)
    rgb = np.asarray(small)
    return PictureStats(colorfulness(rgb), line_art(rgb), phash_image(small))


def picture_stats_bytes(data: bytes) -> PictureStats:
    with Image.open(io.BytesIO(data)) as image:
        return picture_stats(image)
