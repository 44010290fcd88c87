"""Drawn anime-style heads for the identity tests: real PNG bytes, one look per character.

A character is its hair and eye colours (what the built-in embedder reads); each drawing varies
the pose as pictures of one character do: position, scale, mirror, background, a second shade in
the hair, brightness. Transparent corners, like the fixtures' icons.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

SKIN = (250, 222, 200)
CHARACTERS = {
    "red": {"hair": (200, 30, 40), "eyes": (40, 170, 80)},  # red hair, green eyes
    "blue": {"hair": (40, 70, 200), "eyes": (230, 190, 40)},  # blue hair, golden eyes
    "silver": {"hair": (225, 228, 235), "eyes": (150, 60, 190)},  # silver hair, violet eyes
}


def draw_head(character: str, variant: int, size: int = 160) -> Image.Image:
    """An RGBA head of ``character``; ``variant`` seeds the pose, so the same pair gives the same picture."""
    look = CHARACTERS[character]
    rng = random.Random(f"{character}-{variant}")
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    scale = rng.uniform(0.85, 1.0)
    cx, cy = size / 2 + rng.uniform(-6, 6), size / 2 + rng.uniform(-4, 8)
    r = size * 0.42 * scale
    shade = tuple(max(0, int(c * rng.uniform(0.75, 0.9))) for c in look["hair"])
    draw.ellipse((cx - r, cy - r, cx + r, cy + r * 0.9), fill=look["hair"])  # hair mass
    draw.rectangle((cx - r, cy, cx - r * 0.55, cy + r), fill=shade)  # side locks
    draw.rectangle((cx + r * 0.55, cy, cx + r, cy + r), fill=shade)
    face = r * 0.62
    draw.ellipse((cx - face, cy - face * 0.55, cx + face, cy + face * 1.25), fill=SKIN)
    draw.chord((cx - r * 0.9, cy - r * 1.05, cx + r * 0.9, cy + r * 0.1), 180, 360, fill=look["hair"])  # fringe
    eye_w, eye_h = face * 0.32, face * 0.42
    for side in (-1, 1):
        ex = cx + side * face * 0.42
        draw.ellipse((ex - eye_w / 2, cy + face * 0.1, ex + eye_w / 2, cy + face * 0.1 + eye_h), fill=look["eyes"])
        draw.ellipse((ex - eye_w / 5, cy + face * 0.2, ex + eye_w / 5, cy + face * 0.2 + eye_h / 3), fill=(20, 20, 30))
    draw.line((cx - face * 0.15, cy + face * 0.85, cx + face * 0.15, cy + face * 0.85), fill=(180, 90, 90), width=2)
    if variant % 2:
        image = ImageOps.mirror(image)
    rgb = ImageEnhance.Brightness(image.convert("RGB")).enhance(rng.uniform(0.92, 1.08))
    rgb.putalpha(image.getchannel("A"))
    return rgb


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
