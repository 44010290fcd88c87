"""Small image helpers shared by the models and the pipeline stages."""

from __future__ import annotations

from PIL import Image


def flatten_on_white(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("RGB")  # CMYK, P without transparency, I;16, ...
