"""Benchmark: export-time crops and alignment (models/crops.py) against the naive way, images/s.

Ours: ``render`` (a large JPEG decoded at a reduced DCT scale with Pillow's ``draft`` when the
output is much smaller, then ``reduce`` + LANCZOS) and ``encode``. Naive: a full decode, ``crop``,
then one LANCZOS ``resize`` of the whole region, and the same encode. Both make the same output
size; ``diff`` is the mean absolute pixel difference between the two (0-255).

The pictures are the shared fixtures' character cards stretched to a 3:4 Pixiv-original size
(long side ``--long-side``) and saved as JPEG in a temporary folder (nothing is copied into the project);
the face box is the one ``bench/faces.py`` checked by eye, scaled with the card.

    .venv/bin/python bench/export_crops.py [--fixtures DIR] [--pictures 12] [--long-side 3000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from models.crops import Fit, crop_box, encode, plan, render  # noqa: E402

FIXTURES = REPO.parent / "shared" / "fixtures" / "anime" / "cards"
# (x, y, w, h) on the 320 px wide cards, from bench/faces.py's hand-checked HEADS.
FACES = {"albedo": (126, 284, 127, 127), "amber": (98, 265, 153, 153), "ayaka": (86, 272, 148, 148),
         "barbara": (89, 268, 144, 144), "chiori": (100, 295, 135, 135), "diluc": (93, 291, 136, 136)}
CASES = (  # (crop, fit): what the export does per picture
    ("none", Fit(512, "resize")),
    ("upper_body", Fit(512, "crop")),
    ("head", Fit(256, "pad")),
)


def pictures(folder: Path, count: int, long_side: int) -> list[tuple[bytes, dict[str, float]]]:
    """The cards enlarged to ``long_side`` as JPEG bytes, with their face boxes scaled alike."""
    out = []
    names = [n for n in FACES if any(folder.glob(f"{n}.*"))]
    for index in range(count):
        name = names[index % len(names)]
        with Image.open(next(folder.glob(f"{name}.*"))) as card:
            size = (long_side * 3 // 4, long_side)  # a 3:4 page, as most Pixiv originals
            sx, sy = size[0] / card.width, size[1] / card.height
            big = card.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        big.save(buffer, "JPEG", quality=95)
        x, y, w, h = FACES[name]
        out.append((buffer.getvalue(), {"x": x * sx, "y": y * sy, "w": w * sx, "h": h * sy}))
    return out


def naive(data: bytes, region: tuple[int, int, int, int] | None, fit: Fit, focus: tuple[float, float]) -> Image.Image:
    """Full decode, crop, one LANCZOS resize of the planned part, paste on the canvas."""
    with Image.open(io.BytesIO(data)) as image:
        picture = image.convert("RGB")
    if region:
        picture = picture.crop(region)
        focus = (focus[0] - region[0], focus[1] - region[1])
    steps = plan(picture.width, picture.height, fit, focus)
    resized = picture.resize(steps.size, Image.Resampling.LANCZOS, box=steps.source)
    if steps.canvas == steps.size:
        return resized
    canvas = Image.new("RGB", steps.canvas, fit.pad_colour)
    canvas.paste(resized, steps.offset)
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--pictures", type=int, default=12)
    parser.add_argument("--long-side", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2, help="timed passes; the best is reported")
    args = parser.parse_args()
    if not args.fixtures.is_dir():
        sys.exit(f"no fixtures at {args.fixtures}")
    samples = pictures(args.fixtures, args.pictures, args.long_side)
    sizes = {Image.open(io.BytesIO(d)).size for d, _ in samples}
    print(f"{len(samples)} JPEGs of {', '.join(f'{w}x{h}' for w, h in sorted(sizes))}, best of {args.repeat}\n")
    print("| crop | fit | way | images/s | × naive | diff |")
    print("|---|---|---|---|---|---|")
    for kind, fit in CASES:
        jobs = []
        for data, face in samples:
            width, height = Image.open(io.BytesIO(data)).size
            region = None if kind == "none" else crop_box(kind, face, width, height)
            jobs.append((data, region, (face["x"] + face["w"] / 2, face["y"] + face["h"] / 2)))
        rates, outputs = {}, {}
        for way, make in (("ours", lambda d, r, f: render(d, r, fit, f)), ("naive", lambda d, r, f: naive(d, r, fit, f))):
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                made = [make(*job) for job in jobs]
                for image in made:
                    encode(image, "JPEG", 92)
                best = min(best, time.perf_counter() - started)
            rates[way], outputs[way] = len(jobs) / best, made
        diff = np.mean([np.abs(np.asarray(a, float) - np.asarray(b, float)).mean()
                        for a, b in zip(outputs["ours"], outputs["naive"])])
        print(f"| {kind} | {fit.mode} {fit.size} | ours | {rates['ours']:.1f} | "
              f"{rates['ours'] / rates['naive']:.1f}× | {diff:.2f} |")
        print(f"| {kind} | {fit.mode} {fit.size} | naive | {rates['naive']:.1f} | | |")

if __name__ == "__main__":
    main()
