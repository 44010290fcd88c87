"""Made-up pictures for the model benchmarks: crawl-like sizes and aspects, a few coloured shapes."""

from __future__ import annotations

import random


def sample_pictures(count: int, seed: int = 7) -> list:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        w, h = rng.choice([(600, 800), (800, 600), (512, 512), (480, 900)])
        image = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(w), rng.randrange(h)
            draw.ellipse((x, y, x + rng.randrange(40, 200), y + rng.randrange(40, 200)),
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        out.append(image)
    return out
