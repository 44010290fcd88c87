"""Ugoira zip + delays → animated WebP, with the delays kept."""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image

from stages.convert import BadImage
from stages.ugoira import ugoira_to_webp


def ugoira_zip(colours: list[tuple[int, int, int]], size=(48, 32)) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i, colour in enumerate(colours):
            frame = io.BytesIO()
            Image.new("RGB", size, colour).save(frame, "JPEG", quality=95)
            zf.writestr(f"{i:06d}.jpg", frame.getvalue())
    return buf.getvalue()


def test_frames_and_delays_survive():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    delays = [80, 80, 120, 500]
    frames = [{"file": f"{i:06d}.jpg", "delay": d} for i, d in enumerate(delays)]
    result = ugoira_to_webp(ugoira_zip(colours), frames)
    assert result.delays == delays
    webp = Image.open(io.BytesIO(result.data))
    assert webp.format == "WEBP" and webp.n_frames == 4 and webp.size == (48, 32)
    seen = []
    for i in range(webp.n_frames):
        webp.seek(i)
        webp.load()  # Pillow fills info['duration'] when the frame is decoded
        seen.append(webp.info["duration"])
        r, g, b = webp.convert("RGB").getpixel((24, 16))
        assert max(abs(r - colours[i][0]), abs(g - colours[i][1]), abs(b - colours[i][2])) < 40
    assert seen == delays


def test_not_a_zip():
    with pytest.raises(BadImage, match="not a zip"):
        ugoira_to_webp(b"<html>", [{"file": "000000.jpg", "delay": 80}])


def test_missing_frame():
    with pytest.raises(BadImage, match="no frame '000009.jpg'"):
        ugoira_to_webp(ugoira_zip([(0, 0, 0)]), [{"file": "000009.jpg", "delay": 80}])
