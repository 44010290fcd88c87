"""Every CSS form the wiki doc lists, each checked against the rectangle it must give (sheet pixels)."""

from __future__ import annotations

import pytest

from stages.sprites.css import Element, SpriteCssError, SpriteRef, Stylesheet, resolve_sprites, same_resource

BASE = "https://wiki.example/load.php?modules=site"
SHEET = "https://wiki.example/images/Sheet.png"


def resolve(css: str, element: str | Element = "a", *, size: tuple[int, int] | None = (640, 320),
            sheet: str = SHEET, **options) -> SpriteRef:
    sizes = {sheet: size} if size else None
    return Stylesheet(css, BASE).resolve(element, default_sheet_url=SHEET, sheet_sizes=sizes, **options)


def rect(css: str, element: str | Element = "a", **options) -> tuple[int, int, int, int]:
    ref = resolve(css, element, **options)
    return ref.x, ref.y, ref.w, ref.h


# --- background-position -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("position", "expected"),
    [
        ("-32px -64px", (32, 64)),
        ("-32px 0", (32, 0)),
        ("0 -32px", (0, 32)),
        ("-0px -0px", (0, 0)),
        ("0 0", (0, 0)),
        ("left top", (0, 0)),
        ("top left", (0, 0)),  # keywords in either order
        ("right bottom", (608, 288)),  # the last cell of a 640x320 sheet
        ("bottom right", (608, 288)),
        ("center", (304, 144)),  # 50% 50%: (640-32)/2, (320-32)/2
        ("left", (0, 144)),  # one keyword: the other axis is centred
        ("top", (304, 0)),
        ("0px", (0, 144)),  # one length: x, and y centred
        ("-32px center", (32, 144)),
        ("right -64px", (608, 64)),  # right keyword, then the y length
        # Edge offsets (3 and 4 values): 32px in from the right edge moves the image left, so the
        # box looks 32px past the sheet's right edge (the slicer then reports it outside the sheet).
        ("right 32px bottom 0", (640, 288)),
        ("right -32px bottom -32px", (576, 256)),  # the cell one up and one left of the last
        ("left -32px top -64px", (32, 64)),
        ("bottom 0 right -32px", (576, 288)),
        ("center top -32px", (304, 32)),  # 3 values
        ("left -96px bottom", (96, 288)),
        # Percentages: offset = p × (box − sheet).
        ("50% 25%", (304, 72)),
        ("100% 100%", (608, 288)),
        ("0% 0%", (0, 0)),
        ("5.2631578947% 0", (32, 0)),  # column 1 of 20 in a percentage sprite grid: 1/19
        ("10.5263157895% 33.3333333333%", (64, 96)),
    ],
)
def test_background_position_forms(position, expected):
    assert rect(f"#a{{background-position:{position}}}") == (*expected, 32, 32)


def test_position_longhands_and_important():
    assert rect("#a{background-position-x:-32px;background-position-y:-64px}") == (32, 64, 32, 32)
    assert rect("#a{background-position:0 0;background-position-x:right}") == (608, 0, 32, 32)
    css = "#a{background-position:-32px 0 !important}#a{background-position:-64px 0}"
    assert rect(css) == (32, 0, 32, 32)  # !important beats a later rule
    assert rect(".s{background-position:-96px 0!important}#a{background-position:-64px 0}", Element("a", ("s",))) \
        == (96, 0, 32, 32)  # ... and a more specific one


def test_cascade_specificity_and_order():
    assert rect("#a{background-position:-32px 0}#a{background-position:-64px 0}") == (64, 0, 32, 32)
    css = ".s#a{background-position:-96px 0}#a{background-position:-64px 0}"
    assert rect(css, Element("a", ("s",))) == (96, 0, 32, 32)  # class + id beats a later id alone
    assert rect(css, Element("a")) == (64, 0, 32, 32)  # without the class, the compound does not apply


# --- the sheet URL ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("url(Sheet.png)", "https://wiki.example/Sheet.png"),
        ('url("Sheet.png")', "https://wiki.example/Sheet.png"),
        ("url('Sheet.png')", "https://wiki.example/Sheet.png"),
        ("url( 'Sheet.png' )", "https://wiki.example/Sheet.png"),
        ("url(//cdn.example/isaac/uploads/0/04/Sheet.png)", "https://cdn.example/isaac/uploads/0/04/Sheet.png"),
        ("url(../img/Sheet.png)", "https://wiki.example/img/Sheet.png"),
        ("url(https://other.example/S.png)", "https://other.example/S.png"),
        ('image-set("Sheet.png" 1x, "Sheet@2x.png" 2x)', "https://wiki.example/Sheet.png"),
        ("-webkit-image-set(url(Sheet.png) 1x, url(Sheet@2x.png) 2x)", "https://wiki.example/Sheet.png"),
        ("linear-gradient(red, blue), url(Sheet.png)", "https://wiki.example/Sheet.png"),
    ],
)
def test_background_image_url_forms(value, url):
    ref = resolve(f"#a{{background-image:{value};background-position:-32px -64px}}")
    assert (ref.sheet_url, ref.x, ref.y) == (url, 32, 64)


def test_relative_url_is_joined_to_the_stylesheet_url():
    sheet = Stylesheet("#a{background:url(img/S.png) -32px 0}", "https://wiki.example/w/load.php?x=1")
    assert sheet.resolve("a").sheet_url == "https://wiki.example/w/img/S.png"


@pytest.mark.parametrize(
    ("shorthand", "expected"),
    [
        ("url(Sheet.png) no-repeat -32px -64px", (32, 64)),
        ("transparent url('Sheet.png') -32px -64px no-repeat scroll", (32, 64)),
        ("url(Sheet.png) right bottom / 640px 320px no-repeat", (608, 288)),
        ("#fff url(Sheet.png) no-repeat", (0, 0)),  # no position: the shorthand resets it to 0 0
        ("url(Sheet.png) 50% 25%", (304, 72)),
    ],
)
def test_background_shorthand(shorthand, expected):
    sheet = "https://wiki.example/Sheet.png"
    ref = resolve(f"#a{{background:{shorthand}}}", sheet=sheet)
    assert (ref.sheet_url, ref.x, ref.y, ref.w, ref.h) == (sheet, *expected, 32, 32)


def test_shorthand_resets_an_earlier_position():
    assert rect("#a{background-position:-32px 0}#a{background:url(S.png)}", size=None) == (0, 0, 32, 32)
    # ... but not a more specific one
    css = ".s#a{background-position:-32px 0}#a{background:url(S.png)}"
    assert rect(css, Element("a", ("s",)), size=None) == (32, 0, 32, 32)


def test_sheet_bound_by_a_shared_class_rule():
    css = """
        .item-icon { background-image: url(//cdn.example/Sheet.png); display: inline-block }
        .wikitable .item-icon { width: 32px; height: 32px }
        #c_001 { background-position: -32px -0px }
    """
    ref = resolve(css, Element("c_001", ("item-icon", "other")))
    assert ref == SpriteRef("c_001", "https://cdn.example/Sheet.png", 32, 0, 32, 32)
    # Not told the classes: the caller's sheet URL (the file page's) stands in.
    assert resolve(css, Element("c_001")).sheet_url == SHEET
    assert resolve_sprites(css, BASE, [("c_001", "item-icon other")]).refs["c_001"].sheet_url \
        == "https://cdn.example/Sheet.png"


# --- size: background-size, a 2x sheet, the box ------------------------------------------------------
def test_2x_sheet_shown_at_half_size():
    # A 1280x640 sheet of 64 px cells drawn at 640x320: positions are in 32 px units.
    css = "#a{background:url(S2.png) -32px -64px / 640px 320px no-repeat}"
    assert rect(css, size=(1280, 640), sheet="https://wiki.example/S2.png") == (64, 128, 64, 64)
    css = "#a{background-image:url(S2.png);background-size:640px;background-position:-32px -64px}"
    assert rect(css, size=(1280, 640), sheet="https://wiki.example/S2.png") == (64, 128, 64, 64)
    css = "#a{background-image:url(S2.png);background-size:auto 320px;background-position:right bottom}"
    assert rect(css, size=(1280, 640), sheet="https://wiki.example/S2.png") == (1216, 576, 64, 64)
    # image-set's 2x candidate: the same sheet, its natural size halved.
    css = '#a{background-image:image-set("S2.png" 2x);background-position:-32px -64px}'
    assert rect(css, size=None) == (64, 128, 64, 64)


def test_background_size_percent_cover_contain():
    # 200% of a 32 px box: a 64 px cell sheet of 2 columns shown 64 px wide -> scale 2.
    sheet = "https://wiki.example/S.png"
    assert rect("#a{background:url(S.png) -32px 0 / 200%}", size=(128, 64), sheet=sheet) == (64, 0, 64, 64)
    assert rect("#a{background:url(S.png) 0 0 / contain}", size=(64, 64), sheet=sheet) == (0, 0, 64, 64)
    assert rect("#a{background:url(S.png) 0 0 / cover}", size=(128, 64), sheet=sheet) == (0, 0, 64, 64)


def test_box_width_and_height_other_than_32():
    assert rect("#a{width:48px;height:24px;background-position:-48px -24px}") == (48, 24, 48, 24)
    assert rect("#a{background-position:-64px 0}", default_box=(64, 64)) == (64, 0, 64, 64)
    # percentages use the box too: 50% of (48 - 640)
    assert rect("#a{width:48px;background-position:50% 0}") == (296, 0, 48, 32)
    assert rect("#a{width:auto;background-position:-32px 0}") == (32, 0, 32, 32)


# --- rules: @media, @keyframes, grouping, comments, inline style -----------------------------------
def test_media_blocks_are_walked_print_is_not():
    css = """
        @media screen and (min-width: 100px) { #a { background-position: -32px 0 } }
        @media print { #a { background-position: -64px 0 } }
        @supports (display: grid) { @media all { #b { background-position: -96px 0 } } }
    """
    assert rect(css, "a") == (32, 0, 32, 32)
    assert rect(css, "b") == (96, 0, 32, 32)


def test_keyframes_frames_are_not_sprites():
    css = """
        #a { background-position: -32px 0; animation: spin 1s steps(2) infinite }
        @keyframes spin { 0% { background-position: -64px 0 } 100% { background-position: -96px 0 } }
        @-webkit-keyframes spin { from { background-position: -64px 0 } }
    """
    sheet = Stylesheet(css, BASE)
    assert rect(css) == (32, 0, 32, 32)
    assert sheet.ids() == ["a"]
    assert sheet.rule_count == 1


def test_grouped_selectors_and_compound_class_id():
    css = """
        #a, #b, .item-sprite#c_001 { background-image: url(S.png) }
        #a { background-position: -32px 0 } #b { background-position: -64px 0 }
        .item-sprite#c_001 { background-position: -96px -32px }
    """
    assert resolve(css, "a").sheet_url == resolve(css, "b").sheet_url == "https://wiki.example/S.png"
    assert rect(css, "b", size=None) == (64, 0, 32, 32)
    assert rect(css, Element("c_001", ("item-sprite",)), size=None) == (96, 32, 32, 32)
    with pytest.raises(SpriteCssError, match="no style rule"):
        resolve(css, "c_001")  # the compound needs the class too


def test_comments_minified_and_multiline():
    minified = "/*x*/#a{background-position:/* y */-32px/* z */ -64px}#b{background-position:-1px -2px}"
    multiline = """
        /* icon 1 */
        #a
        {
            background-position :
                -32px
                -64px ;
        }
    """
    assert rect(minified) == rect(multiline) == (32, 64, 32, 32)


def test_inline_style_wins_over_rules():
    css = "#a{background-position:-32px 0}"
    element = Element("a", style="background-position: -64px -32px; color: red")
    assert rect(css, element) == (64, 32, 32, 32)
    element = Element("a", style="background: url(/images/I.png) no-repeat -96px 0; width: 16px")
    ref = resolve(css, element, page_url="https://wiki.example/wiki/Page", size=None)
    assert ref == SpriteRef("a", "https://wiki.example/images/I.png", 96, 0, 16, 32)
    # an !important rule still beats a normal inline declaration
    assert rect("#a{background-position:-32px 0!important}", Element("a", style="background-position:0 0")) \
        == (32, 0, 32, 32)


def test_selectors_that_are_not_the_element_at_rest_do_not_apply():
    css = """
        #a { background-position: -32px 0 }
        #a:hover, #a::before, #a[data-x] { background-position: -64px 0 }
        table span { width: 1px }
        .x > #a { height: 16px }
    """
    assert rect(css) == (32, 0, 32, 16)  # the descendant rule naming the id applies; the bare span one does not


# --- what cannot be resolved says why ----------------------------------------------------------------
def test_unresolvable_elements_say_why():
    with pytest.raises(SpriteCssError, match="no style rule"):
        resolve("#b{background-position:0 0}", "a")
    with pytest.raises(SpriteCssError, match="only px"):
        resolve("#a{background-position:-2em 0}")
    with pytest.raises(SpriteCssError, match="depends on the page"):
        resolve("#a{width:100%;background-position:0 0}")
    with pytest.raises(SpriteCssError, match="calc"):
        resolve("#a{background-position:calc(10px - 42px) 0}")
    with pytest.raises(SpriteCssError, match="sheet's size"):
        resolve("#a{background-position:50% 0}", size=None)
    with pytest.raises(SpriteCssError, match="background-position"):
        resolve("#a{background-image:url(S.png)}")


def test_invalid_declarations_are_ignored_like_a_browser():
    css = "#a{background-position:-32px 0}#a{background-position:top 10px}#a{background-position:foo bar}"
    assert rect(css) == (32, 0, 32, 32)
    # a 2em width is valid CSS we cannot convert: it wins and makes the element unresolvable
    with pytest.raises(SpriteCssError, match="1.25em"):
        resolve(".i{width:1.25em}#a{background-position:0 0}", Element("a", ("i",)))


def test_resolve_sprites_collects_refs_and_problems():
    css = "#a{background-position:-32px 0}#b{background-position:-1em 0}"
    result = resolve_sprites(css, BASE, ["a", ("b", ["x"]), Element("c")], default_sheet_url=SHEET)
    assert result.refs == {"a": SpriteRef("a", SHEET, 32, 0, 32, 32)}
    assert set(result.problems) == {"b", "c"}


def test_same_resource_ignores_the_scheme():
    assert same_resource("//h.example/a.png", "https://h.example/a.png")
    assert not same_resource("https://h.example/a.png", "https://h.example/b.png")


# --- the captured site stylesheets --------------------------------------------------------------------
def test_captured_stylesheets(isaac_stylesheets):
    items = isaac_stylesheets["collectible"]
    # 722 id rules for 721 ids: collectibles_633 has a second rule naming its animation.
    assert len(items.ids(r"collectibles_\d+")) == 721
    assert sum(items.rules_for_id(i) for i in items.ids(r"collectibles_\d+")) == 722
    assert len(items.ids(r"trinket_\d+")) == 189
    # Its animation's keyframes hold background-positions (-64px -1152px ...): frames, not the icon.
    assert items.resolve("collectibles_633") == SpriteRef("collectibles_633", None, 192, 992, 32, 32)
    assert items.resolve("collectibles_001") == SpriteRef("collectibles_001", None, 32, 0, 32, 32)
    trinkets = isaac_stylesheets["trinket"]
    assert trinkets.resolve("trinket_189") == SpriteRef("trinket_189", None, 256, 288, 32, 32)
    # Spans that also carry MediaWiki's icon class pick up its 1.25em size: honestly unresolvable.
    with pytest.raises(SpriteCssError, match="em"):
        items.resolve(Element("collectibles_001", ("mw-ui-icon",)))
