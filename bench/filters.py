"""Benchmark: the pixel statistics (stages/filters.py) on a small copy against the naive full-size way.

Both compute the same three numbers (colorfulness, line_art, phash) for Pixiv-sized JPEGs. Ours
decodes the JPEG at a reduced scale (``draft``) and measures a 256 px copy; the naive way decodes
the whole picture and measures every pixel. A third row is what the crawl pays: the JPEG stage has
the picture decoded already and only shrinks and measures it, shown beside the JPEG stage's own
time for the same picture. The "agree" column is how close the naive numbers come to ours.

    .venv/bin/python bench/filters.py [--pictures 8] [--width 2000] [--height 2800]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.convert import to_jpeg  # noqa: E402
from stages.dedup import hamming, phash_image  # noqa: E402
from stages.filters import colorfulness, line_art, picture_stats, picture_stats_bytes  # noqa: E402


def make_jpeg(width: int, height: int, seed: int) -> bytes:
    """A flat-shaded picture with outlines, as anime art is: random coloured shapes on a light ground."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), (240, 236, 228))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 20, width // 4)), int(rng.integers(height // 20, height // 4))
        draw.ellipse((x, y, x + w, y + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                     outline=(30, 25, 25), width=max(2, width // 400))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def naive_stats(data: bytes):
    with Image.open(io.BytesIO(data)) as image:
        full = image.convert("RGB")
    rgb = np.asarray(full)
    return colorfulness(rgb), line_art(rgb), phash_image(full)


def timed(function, items) -> tuple[float, list]:
    """The median ms per item (other work on a shared machine only ever adds time), after one
    untimed call (imports, first allocations)."""
    function(items[0])
    times, results = [], []
    for item in items:
        started = time.perf_counter()
        results.append(function(item))
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=8)
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--height", type=int, default=2800)
    args = parser.parse_args()
    pictures = [make_jpeg(args.width, args.height, seed) for seed in range(args.pictures)]

    ours_ms, ours = timed(picture_stats_bytes, pictures)
    naive_ms, naive = timed(naive_stats, pictures)

    def decoded(data: bytes) -> Image.Image:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image

    images = [decoded(data) for data in pictures]  # the JPEG stage's decoded pictures
    hook_ms, _ = timed(picture_stats, images)
    jpeg_ms, _ = timed(to_jpeg, pictures)  # the JPEG stage, the stats included

    colour_gap = max(abs(a.colorfulness - b[0]) for a, b in zip(ours, naive))
    line_gap = max(abs(a.line_art - b[1]) for a, b in zip(ours, naive))
    bits = max(hamming(a.phash, b[2]) for a, b in zip(ours, naive))
    print(f"\nPixel statistics, {args.pictures} JPEGs of {args.width}x{args.height} px (median ms per picture)\n")
    header = f"{'way':<44} {'ms':>8} {'x':>6}"
    print(header)
    print("-" * len(header))
    print(f"{'naive: full decode, every pixel':<44} {naive_ms:>8.1f} {1.0:>6.1f}")
    print(f"{'ours: draft decode, 256 px copy (curate)':<44} {ours_ms:>8.1f} {naive_ms / ours_ms:>6.1f}")
    print(f"{'ours, already decoded (the crawl hook)':<44} {hook_ms:>8.1f} {naive_ms / hook_ms:>6.1f}")
    print(f"{'  the JPEG stage, stats included':<44} {jpeg_ms:>8.1f}")
    print(f"\nagree: colorfulness within {colour_gap:.1f}, line_art within {line_gap:.2f}, phash within {bits} bits "
          "(the naive way sees strokes at full size, thinner than our 3x3 erosion at 256 px)")


if __name__ == "__main__":
    main()
