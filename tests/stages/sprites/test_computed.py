"""A browser's computed styles become the same rectangles as the stylesheet path (render=browser)."""

from __future__ import annotations

import hashlib

import pytest

from stages.sprites.css import (
    ComputedIcon,
    SpriteCssError,
    SpriteResolution,
    first_image_url,
    resolve_computed,
    sprite_from_computed,
)
from stages.sprites.slicing import slice_sheet
from tests.stages.sprites.conftest import SHEET_URLS

SHEET = "https://huiji-public.huijistatic.com/isaac/uploads/0/04/Collectibles_sprite.png"
SIZES = {SHEET: (640, 1280)}
IMAGE = f'url("{SHEET}")'


def rect(position: str, size: str = "auto", sizes=SIZES, **box) -> tuple[int, int, int, int]:
    ref = sprite_from_computed(ComputedIcon("collectibles_001", IMAGE, position, size, **box), sheet_sizes=sizes)
    assert ref.sheet_url == SHEET
    return ref.x, ref.y, ref.w, ref.h


@pytest.mark.parametrize(("position", "expected"), [
    ("-32px 0px", (32, 0)),                                          # px, as Chromium computes lengths
    ("0px -1152px", (0, 1152)),
    ("5.26316% 0%", (32, 0)),                                        # left -32px written as a percentage
    ("100% 100%", (608, 1248)),                                      # right bottom
    ("calc(100% + 576px) calc(100% + 1216px)", (32, 32)),            # right -576px bottom -1216px
    ("calc(100% - 32px) calc(32px + 100%)", (640, 1216)),            # either order, either sign
    ("right 0px bottom -32px", (608, 1216)),                         # a browser that keeps the keywords
])
def test_computed_positions(position, expected):
    assert rect(position) == (*expected, 32, 32)


def test_computed_background_size_and_box():
    two_x = {SHEET: (1280, 2560)}
    assert rect("-32px -64px", "640px 1280px", two_x) == (64, 128, 64, 64)   # a 2× sheet shown at half size
    assert rect("-32px -64px", "640px auto", two_x) == (64, 128, 64, 64)
    assert rect("5.26316% 0%", "640px 1280px", two_x) == (64, 0, 64, 64)
    assert rect("-64px 0px", width=64, height=64) == (64, 0, 64, 64)          # a bigger box, 1× sheet


def test_layers_urls_and_what_cannot_be_used():
    ref = sprite_from_computed(
        ComputedIcon("a", 'linear-gradient(red, blue), url("//h/S.png")', "0px 0px, -32px -32px"),
        page_url="https://wiki.example/wiki/x")
    assert (ref.sheet_url, ref.x, ref.y) == ("https://h/S.png", 32, 32)  # the image's own layer
    assert first_image_url('url("S.png")', "https://h/load.php") == "https://h/S.png"
    assert first_image_url("none") is None
    problems = resolve_computed([
        ComputedIcon("no-image", "none", "0px 0px"),
        ComputedIcon("hidden", IMAGE, "-32px 0px", width=0, height=0),
        ComputedIcon("product", IMAGE, "calc(2 * 10%) 0px"),
        ComputedIcon("needs-size", IMAGE, "50% 0px"),
        ComputedIcon("ok", IMAGE, "-32px 0px"),
    ]).problems
    assert set(problems) == {"no-image", "hidden", "product", "needs-size"}
    assert "no background image" in problems["no-image"] and "no box" in problems["hidden"]
    assert "sheet's size" in problems["needs-size"]
    with pytest.raises(SpriteCssError):
        sprite_from_computed(ComputedIcon("em", IMAGE, "-2em 0px"))


def test_slicing_from_resolved_rectangles_equals_slicing_from_the_css(isaac_rows, isaac_stylesheets, isaac_sheets):
    """What the pipeline does with a browser's answer: the rows label it, ids without a row stay unlabelled."""
    kind, sheet = "trinket", isaac_sheets["trinket"]
    sha1 = hashlib.sha1(sheet).hexdigest()
    from_css = slice_sheet(isaac_stylesheets[kind], isaac_rows, sheet, SHEET_URLS[kind], sha1, kind=kind)
    computed = [
        ComputedIcon(s.css_id, f'url("{SHEET_URLS[kind]}")', f"{-s.x}px {-s.y}px") for s in from_css.sprites
    ] + [ComputedIcon("collectibles_001", f'url("{SHEET}")', "-32px 0px")]  # another kind's: ignored
    resolved = resolve_computed(computed, sheet_sizes={SHEET_URLS[kind]: (640, 320)})
    from_browser = slice_sheet(None, isaac_rows, sheet, SHEET_URLS[kind], sha1, kind=kind, resolved=resolved)
    assert [s.row() for s in from_browser.sprites] == [s.row() for s in from_css.sprites]
    assert from_browser.counts()["unlabelled"] == 1
    missing = SpriteResolution({k: v for k, v in resolved.refs.items() if k != "trinket_002"}, {})
    partial = slice_sheet(None, isaac_rows, sheet, SHEET_URLS[kind], sha1, kind=kind, resolved=missing)
    assert partial.problems == {"trinket_002": "no such icon was found on the page"}
    with pytest.raises(ValueError):
        slice_sheet(None, isaac_rows, sheet, SHEET_URLS[kind], sha1, kind=kind)
