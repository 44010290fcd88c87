"""Generated segmentation data: coloured shapes on textured backgrounds, annotated as labelme would.

Each picture is drawn with the same Pillow primitives that turn labelme shapes into masks, so the
labelme JSON written beside it describes it exactly: a circle as centre + rim point, a box as two
corners, a triangle as a 3-point polygon. Every third file embeds the picture as ``imageData``;
the others point at a PNG or JPEG beside them through ``imagePath`` with ``imageData: null``.
"""

from __future__ import annotations

import base64
import colorsys
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("box", "circle", "triangle")  # sorted: the order `scrapy masks` numbers them in
HUES = {"box": 0.33, "circle": 0.0, "triangle": 0.62}  # green, red, blue, each +- 0.06


def colour(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def textured_background(rng: np.random.Generator, size: int) -> Image.Image:
    """Stripes, a checkerboard or blotchy noise in two random, mostly dull colours."""
    first = colour(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.4, 1))
    second = colour(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.3, 0.9))
    kind = rng.integers(3)
    ys, xs = np.mgrid[0:size, 0:size]
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 12)
        pattern = (np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period) > 0)
    elif kind == 1:
        cell = int(rng.integers(3, 10))
        pattern = ((xs // cell + ys // cell) % 2) == 0
    else:
        coarse = rng.random((size // 8 + 1, size // 8 + 1))
        pattern = np.kron(coarse, np.ones((8, 8)))[:size, :size] + rng.normal(0, 0.15, (size, size)) > 0.5
    pixels = np.where(pattern[..., None], np.array(first), np.array(second)).astype(np.float32)
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def shapes_picture(rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, list[dict]]:
    """A picture with 1-3 shapes and their labelme shape dicts, in drawing order."""
    image = textured_background(rng, size)
    draw = ImageDraw.Draw(image)
    shapes = []
    for _ in range(int(rng.integers(1, 4))):
        label = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        fill = colour(HUES[label] + rng.uniform(-0.06, 0.06), rng.uniform(0.6, 1), rng.uniform(0.55, 1))
        extent = rng.uniform(size * 0.22, size * 0.45)
        cx, cy = rng.uniform(extent / 2, size - extent / 2, 2)
        if label == "box":
            w, h = extent, extent * rng.uniform(0.6, 1.0)
            points = [[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]]
            draw.rectangle([tuple(p) for p in points], fill=fill, outline=fill)
            kind = "rectangle"
        elif label == "circle":
            radius = extent / 2
            points = [[cx, cy], [cx + radius, cy]]
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill, outline=fill)
            kind = "circle"
        else:
            turn = rng.uniform(0, 2 * np.pi)
            corners = [turn + k * 2 * np.pi / 3 for k in range(3)]
            points = [[cx + extent / 2 * np.cos(a), cy + extent / 2 * np.sin(a)] for a in corners]
            draw.polygon([tuple(p) for p in points], fill=fill, outline=fill)
            kind = "polygon"
        shapes.append({"label": label, "points": [[float(x), float(y)] for x, y in points], "group_id": None,
                       "description": "", "shape_type": kind, "flags": {}})
    return image, shapes


def labelme_document(shapes: list[dict], image_path: str, size: tuple[int, int], image_data: str | None) -> dict:
    """A labelme 5 file's structure."""
    return {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": image_data,
            "imageHeight": size[1], "imageWidth": size[0]}


def write_labelme_folder(folder: Path, count: int, seed: int = 0, size: int = 64) -> Path:
    """``count`` labelme files (and their pictures) in ``folder``, two sub-folders deep for some."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, shapes = shapes_picture(rng, size)
        where = folder / ("part_b" if index % 2 else "part_a")
        where.mkdir(exist_ok=True)
        name = f"shapes_{index:04d}"
        buffer = io.BytesIO()
        if index % 3 == 0:  # embedded, labelme's default
            image.save(buffer, format="PNG")
            document = labelme_document(shapes, f"{name}.png", image.size, base64.b64encode(buffer.getvalue()).decode())
        else:
            suffix = ".png" if index % 3 == 1 else ".jpg"
            image.save(where / f"{name}{suffix}", quality=95)
            document = labelme_document(shapes, f"{name}{suffix}", image.size, None)
        (where / f"{name}.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    return folder
