"""Pixel statistics for the monochrome and duplicate rules, on real picture bytes built here."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from catalog.store import Catalog
from stages.convert import convert_page, to_jpeg
from stages.dedup import hamming
from stages.filters import (
    MONOCHROME_MAX_COLORFULNESS,
    MONOCHROME_MIN_LINE_ART,
    STATS_SIDE,
    picture_stats,
    picture_stats_bytes,
    small_copy,
)

CARDS = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "anime" / "cards"


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def colour_picture(size=(480, 640)) -> Image.Image:
    """A flat-shaded character-like picture: sky, a skin-coloured face, red clothes, dark hair."""
    image = Image.new("RGB", size, (150, 200, 240))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.3, h * 0.1, w * 0.7, h * 0.4), fill=(250, 220, 195))
    draw.rectangle((w * 0.25, h * 0.4, w * 0.75, h), fill=(200, 30, 40))
    draw.pieslice((w * 0.28, h * 0.05, w * 0.72, h * 0.3), 180, 360, fill=(60, 40, 30))
    draw.ellipse((w * 0.4, h * 0.2, w * 0.45, h * 0.24), fill=(30, 120, 60))  # green eyes
    draw.ellipse((w * 0.55, h * 0.2, w * 0.6, h * 0.24), fill=(30, 120, 60))
    return image


def scanned_sketch(size=(600, 800), seed=5) -> Image.Image:
    """Pencil strokes on slightly yellow paper with scanner noise: no fills, a few grey tones."""
    rng = np.random.default_rng(seed)
    paper = np.full((size[1], size[0], 3), (246, 242, 228), dtype=np.float32)
    paper += rng.normal(0, 3, paper.shape)
    image = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        points = [(int(x + dx), int(y + dy)) for dx, dy in rng.normal(0, 60, (4, 2)).cumsum(axis=0)]
        draw.line(points, fill=tuple(int(v) for v in rng.integers(70, 120, 1).repeat(3)), width=2)
    draw.ellipse((200, 150, 400, 380), outline=(90, 90, 95), width=3)  # a head
    return image


def stats_of(image: Image.Image):
    return picture_stats_bytes(jpeg_bytes(image))


def test_a_colour_picture_is_colourful_and_not_line_art():
    stats = stats_of(colour_picture())
    assert stats.colorfulness > 10 * MONOCHROME_MAX_COLORFULNESS
    assert stats.line_art < 0.2


def test_greyscale_and_one_tint_pictures_are_not_colourful():
    grey = ImageOps.grayscale(colour_picture())
    assert stats_of(grey).colorfulness < 0.5
    sepia = ImageOps.colorize(grey, (40, 20, 0), (255, 240, 200))
    blue = ImageOps.colorize(grey, (0, 0, 60), (230, 240, 255), mid=(90, 110, 170))  # its hue drifts with tone
    assert stats_of(sepia).colorfulness < MONOCHROME_MAX_COLORFULNESS
    assert stats_of(blue).colorfulness < MONOCHROME_MAX_COLORFULNESS


def test_two_opposite_hues_are_colour_not_one_tint():
    """Red and cyan lie on one line through grey; only the ray of the main hue is 'one tint'."""
    image = Image.new("RGB", (200, 200), (220, 40, 40))
    image.paste((40, 200, 220), (0, 0, 100, 200))
    assert stats_of(image).colorfulness > 100


def test_a_small_colour_character_on_white_still_counts_as_colour():
    image = Image.new("RGB", (800, 800), "white")
    image.paste(colour_picture((240, 320)), (280, 240))  # 12% of the picture
    stats = stats_of(image)
    assert stats.colorfulness > 10 * MONOCHROME_MAX_COLORFULNESS and stats.line_art < MONOCHROME_MIN_LINE_ART


def test_a_scanned_sketch_is_line_art():
    stats = stats_of(scanned_sketch())
    assert stats.line_art >= 0.8
    # the coloured pencil version is not monochrome by its colours, but still line art
    coloured = scanned_sketch()
    ImageDraw.Draw(coloured).line([(50, 700), (550, 600)], fill=(200, 30, 30), width=2)
    ImageDraw.Draw(coloured).line([(50, 100), (550, 50)], fill=(30, 60, 200), width=2)
    assert stats_of(coloured).line_art >= MONOCHROME_MIN_LINE_ART


def test_edge_drawings_of_the_same_pictures_are_line_art_and_filled_ones_are_not():
    picture = colour_picture()
    edges = ImageOps.invert(ImageOps.grayscale(picture).filter(ImageFilter.FIND_EDGES))
    assert stats_of(edges).line_art >= 0.9
    assert stats_of(ImageOps.grayscale(picture)).line_art < 0.3  # greyscale, but filled: not a sketch
    assert picture_stats(Image.new("RGB", (300, 300), "white")).line_art == 1.0  # a blank page
    assert picture_stats(Image.new("RGB", (300, 300), (20, 20, 30))).line_art == 0.0  # no paper at all


@pytest.mark.skipif(not CARDS.is_dir(), reason="../shared/fixtures/anime is not beside the project")
def test_real_anime_cards_are_colour_and_their_greyscale_is_not():
    cards = sorted(CARDS.iterdir())[:8]
    for card in cards:
        with Image.open(card) as image:
            rgb = image.convert("RGBA")
        colour, grey = stats_of(rgb), stats_of(ImageOps.grayscale(rgb))
        assert colour.colorfulness > MONOCHROME_MAX_COLORFULNESS, card.name
        assert colour.line_art < MONOCHROME_MIN_LINE_ART, card.name
        assert grey.colorfulness <= MONOCHROME_MAX_COLORFULNESS, card.name


def test_the_statistics_are_taken_on_a_small_copy_and_agree_with_the_full_picture():
    big = colour_picture((1800, 2400))
    data = jpeg_bytes(big)
    with Image.open(io.BytesIO(data)) as image:
        assert max(small_copy(image).size) == STATS_SIDE  # decoded at a reduced scale, then shrunk
    from_bytes = picture_stats_bytes(data)
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # as the JPEG stage has it: decoded at full size
        from_loaded = picture_stats(image)
    assert abs(from_bytes.colorfulness - from_loaded.colorfulness) < 5
    assert hamming(from_bytes.phash, from_loaded.phash) <= 4
    half = big.resize((900, 1200))
    assert hamming(picture_stats_bytes(jpeg_bytes(half, 70)).phash, from_bytes.phash) <= 4
    assert hamming(stats_of(scanned_sketch()).phash, from_bytes.phash) > 12


def test_the_jpeg_stage_stores_the_statistics_with_the_picture(tmp_path):
    png = io.BytesIO()
    ImageOps.grayscale(colour_picture()).save(png, "PNG")
    result = to_jpeg(png.getvalue())
    assert result.reencoded and result.stats is not None and result.stats.colorfulness < 0.5
    kept = to_jpeg(jpeg_bytes(colour_picture()))
    assert not kept.reencoded and kept.stats.colorfulness > 30

    record = {"page": 0, "original_path": None}
    update = convert_page(str(tmp_path), "77", record, 92, 64_000_000, False, data=jpeg_bytes(colour_picture()))
    assert update["colorfulness"] > 30 and update["line_art"] < 0.2 and len(update["phash"]) == 16
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.record_artwork({"id": "77", "status": "ok", "page_count": 1}, [{**record, **update}], "now")
    with sqlite3.connect(tmp_path / "catalog.db") as conn:
        row = conn.execute("SELECT colorfulness, line_art, phash FROM images").fetchone()
    assert row == (update["colorfulness"], update["line_art"], update["phash"])
    assert catalog.picture_stats("77", 0) == dict(zip(("colorfulness", "line_art", "phash"), row))
    state = catalog.curation_state("77", 0)["record"]
    assert (state["colorfulness"], state["width"], state["height"], state["page"]) == (row[0], 480, 640, 0)
