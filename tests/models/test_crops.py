"""models/crops.py: crop boxes from known face boxes, and the alignment to a training size, over
real encoded pictures (PNG where pixels are compared exactly, JPEG where the draft path is used)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.crops import (
    HEAD_ABOVE,
    HEAD_BELOW,
    Fit,
    TooSmall,
    align,
    crop_box,
    encode,
    head_box,
    parse_colour,
    plan,
    render,
    upper_body_box,
)

FACE = {"x": 100, "y": 100, "w": 40, "h": 40}
RED, BLUE, GREEN, WHITE = (220, 20, 20), (20, 20, 220), (20, 200, 20), (255, 255, 255)


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def coordinates(width: int, height: int) -> np.ndarray:
    """A picture whose every pixel says where it is: (x % 256, y % 256, (x // 256) * 16 + y // 256)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs % 256, ys % 256, (xs // 256) * 16 + ys // 256], axis=-1).astype(np.uint8)


def decoded(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_head_and_upper_body_boxes_of_a_known_face():
    assert head_box(FACE, 400, 400) == (84, 68, 156, 152)
    left, top, right, bottom = head_box(FACE, 400, 400)
    assert FACE["y"] - top > bottom - (FACE["y"] + FACE["h"])  # more room for the hair than for the neck
    assert (FACE["y"] - top, bottom - FACE["y"] - FACE["h"]) == (HEAD_ABOVE * 40, HEAD_BELOW * 40)
    assert upper_body_box(FACE, 400, 400) == (60, 80, 180, 240)  # 3 face widths, 3.5 face heights below its top
    assert crop_box("face", FACE, 400, 400) == (100, 100, 140, 140)
    assert crop_box("upper_body", FACE, 400, 400) == upper_body_box(FACE, 400, 400)
    with pytest.raises(ValueError):
        crop_box("feet", FACE, 400, 400)


def test_boxes_are_clipped_at_the_picture_edges():
    corner = {"x": 0, "y": 0, "w": 32, "h": 32}
    assert head_box(corner, 100, 80) == (0, 0, 45, 42)
    assert upper_body_box(corner, 100, 80) == (0, 0, 64, 80)  # 112 px down, cut at the bottom
    far = {"x": 90, "y": 60, "w": 20, "h": 30}  # runs past the right and bottom edges
    left, top, right, bottom = head_box(far, 100, 80)
    assert (right, bottom) == (100, 80) and left < 90 and top < 60


def test_square_boxes_shift_inside_and_shrink_to_the_picture():
    assert head_box(FACE, 400, 400, square=True) == (78, 68, 162, 152)  # 84 px: the head's height
    assert head_box({"x": 0, "y": 0, "w": 32, "h": 32}, 100, 80, square=True) == (0, 0, 67, 67)  # shifted
    assert upper_body_box({"x": 0, "y": 0, "w": 32, "h": 32}, 100, 80, square=True) == (0, 0, 80, 80)  # shrunk
    for face in ({"x": 5, "y": 70, "w": 10, "h": 9}, {"x": 85, "y": 2, "w": 14, "h": 15}):
        left, top, right, bottom = upper_body_box(face, 100, 80, square=True)
        assert right - left == bottom - top and 0 <= left and 0 <= top and right <= 100 and bottom <= 80


def test_render_cuts_exactly_the_box_out_of_real_bytes():
    pixels = coordinates(600, 400)
    region = head_box(FACE, 600, 400)
    cut = render(png(pixels), region)
    left, top, right, bottom = region
    assert np.array_equal(decoded(cut), pixels[top:bottom, left:right])


def test_pad_letterboxes_with_the_colour_or_the_edge_pixels():
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:50], pixels[50:] = BLUE, GREEN  # top half blue, bottom half green
    data = png(pixels)
    white = decoded(render(data, fit=Fit(100, "pad")))
    assert white.shape == (100, 100, 3)
    assert (white[:25] == WHITE).all() and (white[75:] == WHITE).all()  # 200x100 -> 100x50, centred
    assert (white[25:45] == BLUE).all() and (white[55:75] == GREEN).all()
    grey = decoded(render(data, fit=Fit(100, "pad", parse_colour("#808080"))))
    assert (grey[:25] == (128, 128, 128)).all()
    edge = decoded(render(data, fit=Fit(100, "pad", parse_colour("edge"))))
    assert (edge[:25] == BLUE).all() and (edge[75:] == GREEN).all()  # the border rows repeated
    assert parse_colour("edge") == "edge" and parse_colour("white") == WHITE
    with pytest.raises(ValueError):
        parse_colour("not-a-colour")


@pytest.mark.parametrize("size", [(1000, 700), (700, 1000), (1920, 1080), (513, 2000)])
def test_resize_gives_sides_on_the_multiple_with_the_short_side_at_most_n(size):
    image = Image.effect_mandelbrot(size, (-2, -1.2, 1, 1.2), 60).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    result = render(out.getvalue(), fit=Fit(512, "resize"))
    width, height = result.size
    assert width % 64 == 0 and height % 64 == 0 and min(width, height) == 512
    assert abs(width / height - size[0] / size[1]) < 64 / 512  # aspect kept, but for the trimmed edge
    exact = plan(*size, Fit(512, "resize", multiple=1)).size  # no multiple: the aspect as it is
    assert min(exact) == 512 and max(exact) == max(size) * 512 // min(size)


def test_no_upscale_resize_keeps_a_small_picture_smaller_and_its_pixels_untouched():
    pixels = coordinates(300, 200)
    result = decoded(render(png(pixels), fit=Fit(512, "resize")))
    assert result.shape == (192, 256, 3)  # 300x200 cut down to multiples of 64, not enlarged
    assert np.array_equal(result, pixels[4:196, 22:278])  # the centre, pixel for pixel
    with pytest.raises(TooSmall, match="under one multiple"):
        plan(60, 200, Fit(512, "resize"))


def test_pad_and_crop_refuse_a_picture_they_would_have_to_enlarge():
    for mode in ("pad", "crop"):
        with pytest.raises(TooSmall, match="max-upscale"):
            plan(300, 200, Fit(512, mode))
        steps = plan(300, 200, Fit(512, mode, max_upscale=3.0))
        assert steps.canvas == (512, 512)
    assert plan(300, 200, Fit(512, "resize", max_upscale=3.0)).size == (768, 512)


def test_crop_fit_centres_its_square_on_the_face():
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, :100], pixels[:, 100:200], pixels[:, 200:] = RED, GREEN, BLUE
    data = png(pixels)
    assert plan(300, 100, Fit(50, "crop"), focus=(250, 50)).source == (200, 0, 300, 100)
    assert plan(300, 100, Fit(50, "crop"), focus=(10, 50)).source == (0, 0, 100, 100)  # shifted inside
    # (LANCZOS reads a few pixels past the square, as resizing the whole picture would: edges aside)
    assert (decoded(render(data, fit=Fit(50, "crop"), focus=(250, 40)))[:, 3:] == BLUE).all()
    assert (decoded(render(data, fit=Fit(50, "crop")))[:, 3:-3] == GREEN).all()  # no face: the centre
    # The focus is in picture pixels, also when a region is cut first.
    assert (decoded(render(data, (100, 0, 300, 100), Fit(50, "crop"), focus=(260, 50)))[:, 3:] == BLUE).all()


def test_draft_decoding_matches_a_full_decode():
    """A large JPEG shrunk to a small crop is decoded at a reduced DCT scale; the result is the
    naive full decode + LANCZOS but for rounding."""
    image = Image.effect_mandelbrot((3000, 2000), (-2, -1, 1, 1), 100).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    data = out.getvalue()
    region = (201, 101, 2801, 1901)
    for mode in ("resize", "pad", "crop"):
        fit = Fit(256, mode)
        ours = decoded(render(data, region, fit, focus=(1000, 500)))
        naive = decoded(align(Image.open(io.BytesIO(data)).crop(region), fit, focus=(799, 399)))
        assert ours.shape == naive.shape
        assert np.abs(ours.astype(int) - naive.astype(int)).mean() < 1.0


def test_encoding_is_deterministic():
    data = png(coordinates(640, 480))
    fit = Fit(200, "pad", parse_colour("edge"))
    first = encode(render(data, (10, 10, 500, 400), fit), "JPEG", 92)
    assert first == encode(render(data, (10, 10, 500, 400), fit), "JPEG", 92)
    assert Image.open(io.BytesIO(first)).format == "JPEG"
    assert encode(render(data, fit=fit), "PNG", 92)[:8] == b"\x89PNG\r\n\x1a\n"
