"""Small image helpers shared by the models and the pipeline stages."""

from __future__ import annotations

import numpy as np
from PIL import Image

# 16-bit grayscale (a 16-bit PNG opens as I;16, or I in older Pillow): ``convert`` clips these at 255
WIDE_GRAYSCALE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale as 8-bit L, the full range onto the full range (0..65535 -> 0..255).

    Pillow's own conversion clips every value above 255 to white, so a 16-bit picture reached
    the models almost all white. Any other picture is handed back as it is.
    """
    if image.mode not in WIDE_GRAYSCALE_MODES:
        return image
    values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)  # mode I: 32-bit, read as 16-bit data
    return Image.fromarray((values >> 8).astype(np.uint8))  # uint8, 2-D: mode L


def flatten_on_white(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white."""
    image = to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("RGB")  # CMYK, P without transparency, ...
