"""The PNG→JPEG stage on real image bytes built here, with exact pixel checks."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from stages.convert import BadImage, to_jpeg


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_transparent_png_is_composited_on_white_not_on_hidden_rgb():
    # Fully transparent red: ImagesPipeline would show the red; we must show white.
    png = encode(Image.new("RGBA", (40, 30), (255, 0, 0, 0)), "PNG")
    result = to_jpeg(png, quality=95)
    assert result.reencoded and result.source_format == "png"
    assert decoded(result.data).format == "JPEG"
    r, g, b = decoded(result.data).getpixel((20, 15))
    assert min(r, g, b) >= 250


def test_half_transparent_pixel_blends_with_white():
    png = encode(Image.new("RGBA", (16, 16), (0, 127, 255, 50)), "PNG")
    r, g, b = decoded(to_jpeg(png, quality=100).data).getpixel((8, 8))
    # 50/255 of (0,127,255) over white = (205, 230, 255)
    assert abs(r - 205) <= 3 and abs(g - 230) <= 3 and b >= 250


def test_palette_png_with_transparency():
    image = Image.new("P", (10, 10), 0)
    image.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    png = encode(image, "PNG", transparency=0)
    assert min(decoded(to_jpeg(png).data).getpixel((5, 5))) >= 250


def test_plain_jpeg_is_kept_byte_for_byte():
    jpeg = encode(Image.new("RGB", (50, 40), (10, 200, 30)), "JPEG", quality=97)
    result = to_jpeg(jpeg, quality=50)
    assert result.data == jpeg and not result.reencoded
    assert (result.width, result.height) == (50, 40)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    jpeg = encode(image, "JPEG", exif=exif, quality=95)
    result = to_jpeg(jpeg)
    assert result.reencoded
    out = decoded(result.data)
    assert out.size == (20, 60)
    assert out.getexif().get(0x0112, 1) == 1
    r, g, b = out.getpixel((10, 3))  # the red strip is now on top
    assert r > 200 and b < 60


def test_quality_setting_is_used():
    noisy = Image.effect_noise((128, 128), 60).convert("RGB")
    png = encode(noisy, "PNG")
    assert len(to_jpeg(png, quality=30).data) < len(to_jpeg(png, quality=95).data)


def test_truncated_png_is_refused_with_reason():
    png = encode(Image.effect_noise((200, 200), 50).convert("RGB"), "PNG")
    with pytest.raises(BadImage, match="truncated or corrupt"):
        to_jpeg(png[: len(png) * 6 // 10])


def test_html_where_an_image_was_expected():
    with pytest.raises(BadImage, match="HTML"):
        to_jpeg(b"<!DOCTYPE html><html><body>Cloudflare</body></html>")


def test_empty_file():
    with pytest.raises(BadImage, match="empty file"):
        to_jpeg(b"")


def test_garbage_bytes():
    with pytest.raises(BadImage, match="not a recognised image"):
        to_jpeg(b"\x00\x01garbage" * 10)


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge 1-bit image over a tiny, all-zero stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    raw = zlib.compress(row * height, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_decompression_bomb_over_our_limit():
    data = bomb_png(9000, 9000)  # 81 Mpx: under Pillow's own error threshold, over ours
    assert len(data) < 200_000
    with pytest.raises(BadImage, match="decompression bomb refused: 9000x9000"):
        to_jpeg(data, max_pixels=64_000_000)


def test_decompression_bomb_over_pillows_limit():
    with pytest.raises(BadImage, match="decompression bomb"):
        to_jpeg(bomb_png(20000, 20000))
