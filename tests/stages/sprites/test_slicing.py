"""Slicing the captured sheets, and the behaviour around it: blanks, twins, files, catalogue, card."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

import stages.sprites.slicing as slicing
from catalog.store import Catalog
from core.storage import PART_SUFFIX
from stages.sprites.card import LICENCE, build_card, write_card
from stages.sprites.slicing import (
    SpriteSheetError,
    build_sprites,
    safe_name,
    slice_sheet,
    sprite_key,
    sprite_paths,
    write_sprites,
)
from stages.sprites.table import LIST_PAGES, ItemRow
from tests.stages.sprites.conftest import SHEET_URLS, isaac_file

KINDS = ("collectible", "trinket")


@pytest.fixture(scope="module")
def isaac_build(tmp_path_factory, isaac_rows, isaac_stylesheets, isaac_sheets):
    """Both captured sheets sliced into one output folder, as the pipeline will do it."""
    root = tmp_path_factory.mktemp("sprites-out")
    results, originals = {}, {}
    for kind in KINDS:
        sha1 = hashlib.sha1(isaac_sheets[kind]).hexdigest()
        result = build_sprites(isaac_stylesheets[kind], isaac_rows, isaac_sheets[kind], SHEET_URLS[kind], sha1, root,
                               kind=kind, known_originals=originals)
        originals.update({s.sha256: s.key for s in result.sprites if s.path})
        results[kind] = result
    return root, results


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- the captured fixtures ---------------------------------------------------------------------------
def test_exact_counts_on_the_captured_sheets(isaac_build):
    _, results = isaac_build
    # 721 collectible ids in items.css: 719 labelled by the table, 2 without a row (059, 656);
    # both of those show the same pixels as a labelled item (034, 577), so only 719 get files.
    # 189 trinket ids: 188 labelled, trinket_047 without a row, a distinct icon of its own.
    # No cell is fully transparent: the id rules point only at drawn cells (cell 0,0 is unused).
    assert results["collectible"].counts() == {
        "labelled": 719, "unlabelled": 2, "blank": 0, "duplicates": 2, "files": 719, "problems": 0}
    assert results["trinket"].counts() == {
        "labelled": 188, "unlabelled": 1, "blank": 0, "duplicates": 0, "files": 189, "problems": 0}
    collectibles = {s.key: s for s in results["collectible"].sprites}
    assert collectibles["css:collectibles_059"].duplicate_of == "collectible:034"
    assert collectibles["css:collectibles_656"].duplicate_of == "collectible:577"
    trinkets = {s.key: s for s in results["trinket"].sprites}
    assert trinkets["css:trinket_047"].duplicate_of is None and not trinkets["css:trinket_047"].labelled
    assert trinkets["css:trinket_047"].path == "sprites/unlabelled/trinket_047.png"
    missing = {43, 59, 61, 235, 587, 613, 620, 630, 648, 656, 662, 666, 718}
    assert {s.game_id for s in collectibles.values() if s.labelled} == set(range(1, 733)) - missing


def test_every_slice_equals_the_sheet_cell_at_the_css_offset(isaac_build, id_mapping):
    """Checked against the original scraper's x, y (an independent reading of the same CSS)."""
    root, results = isaac_build
    offsets = {}
    for key, entry in id_mapping.items():
        number = int(key.split("_")[1])
        kind = "trinket" if entry.get("type") == "饰品" or number > 732 else "collectible"
        css_id = f"trinket_{number - 732:03d}" if kind == "trinket" else key
        offsets[(kind, css_id)] = (entry["x"], entry["y"])
    for kind in KINDS:
        sheet = Image.open(isaac_file(Path(SHEET_URLS[kind]).name)).convert("RGBA")
        assert len(results[kind].sprites) == sum(k == kind for k, _ in offsets)
        for sprite in results[kind].sprites:
            x, y = offsets[(kind, sprite.css_id)]
            assert (sprite.x, sprite.y, sprite.w, sprite.h) == (x, y, 32, 32), sprite.key
            cell = sheet.crop((x, y, x + 32, y + 32))
            assert sprite.image.tobytes() == cell.tobytes(), sprite.key
            if sprite.path is None:
                continue
            stored = Image.open(root / sprite.path)
            assert (stored.format, stored.mode, stored.size) == ("PNG", "RGBA", (32, 32))
            assert stored.tobytes() == cell.tobytes(), sprite.key
            big = Image.open(root / sprite.upscale_path)
            assert big.size == (64, 64)
            assert big.tobytes() == cell.resize((64, 64), Image.Resampling.NEAREST).tobytes()


def test_keyed_by_kind_and_game_id(isaac_build):
    root, results = isaac_build
    onion = next(s for s in results["collectible"].sprites if s.key == "collectible:001")
    penny = next(s for s in results["trinket"].sprites if s.key == "trinket:001")
    assert (onion.name_en, penny.name_en) == ("The Sad Onion", "Swallowed Penny")
    assert (onion.path, penny.path) == ("sprites/collectible/001.png", "sprites/trinket/001.png")
    assert (root / onion.path).read_bytes() != (root / penny.path).read_bytes()
    keys = [s.key for kind in KINDS for s in results[kind].sprites]
    assert len(keys) == len(set(keys)) == 721 + 189


def test_keyframes_in_items_css_make_no_sprites(isaac_build):
    _, results = isaac_build
    # collectibles_633's animation frames move over -64px -1152px ... -352px -1184px; only items
    # 731 and 732 sit on those rows (at -0px and -32px), so the frames gave no sprite.
    dogma = next(s for s in results["collectible"].sprites if s.css_id == "collectibles_633")
    assert (dogma.x, dogma.y) == (192, 992)
    low = {(s.css_id, s.x, s.y) for s in results["collectible"].sprites if s.y >= 1152}
    assert low == {("collectibles_731", 0, 1152), ("collectibles_732", 32, 1152)}


def test_writes_are_atomic_and_a_reslice_is_idempotent(isaac_build, isaac_rows, isaac_stylesheets, isaac_sheets,
                                                         monkeypatch):
    root, results = isaac_build
    assert not list(root.rglob(f"*{PART_SUFFIX}"))
    before = files_under(root)
    assert len(before) == 2 * (719 + 189)
    written = []
    monkeypatch.setattr(slicing, "atomic_write", lambda path, data: written.append(path))
    again = slice_sheet(isaac_stylesheets["trinket"], isaac_rows, isaac_sheets["trinket"], SHEET_URLS["trinket"],
                        results["trinket"].sheet_sha1, kind="trinket")
    assert write_sprites(again, root) == 0 and written == []  # same bytes: nothing rewritten
    assert [s.row() for s in again.sprites] == [s.row() for s in results["trinket"].sprites]
    assert files_under(root) == before


# --- synthetic sheets: blanks, twins, odd input ------------------------------------------------------
def make_sheet(cells: dict[tuple[int, int], tuple[int, int, int, int]], size=(128, 64), mode="RGBA") -> bytes:
    """A sheet of 32 px cells, each filled with one colour; unlisted cells stay transparent."""
    sheet = Image.new("RGBA", size, (0, 0, 0, 0))
    for (col, row), colour in cells.items():
        sheet.paste(colour, (col * 32, row * 32, col * 32 + 32, row * 32 + 32))
        sheet.putpixel((col * 32, row * 32), (col, row, 7, 255))  # make each cell unique unless told otherwise
    if mode == "P":
        sheet = sheet.convert("P")
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    return buffer.getvalue()


def row(game_id: int, kind: str = "collectible", css_id: str | None = None) -> ItemRow:
    return ItemRow(kind, game_id, f"Item {game_id}", f"道具{game_id}", 1, None, "…",
                   css_id or f"collectibles_{game_id:03d}")


CSS = "".join(f"#collectibles_{n:03d}{{background-position:-{(n % 4) * 32}px -{(n // 4) * 32}px}}" for n in range(8))


def test_blank_and_duplicate_cells_are_recorded_not_written(tmp_path):
    red = (255, 0, 0, 255)
    cells = {(1, 0): red, (2, 0): red, (3, 0): (0, 0, 255, 128), (1, 1): red}
    sheet = Image.open(io.BytesIO(make_sheet(cells))).convert("RGBA")
    sheet.paste(sheet.crop((32, 0, 64, 32)), (64, 0))  # cell 2 = cell 1, pixel for pixel
    sheet.paste(sheet.crop((32, 0, 64, 32)), (32, 32))  # so is cell 5
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    rows = [row(1), row(2), row(3), row(4), row(7)]  # 0, 5, 6 have no row
    result = build_sprites(CSS, rows, buffer.getvalue(), "https://w.example/S.png", "abc", tmp_path,
                           kind="collectible")
    by_key = {s.key: s for s in result.sprites}
    assert by_key["collectible:002"].duplicate_of == "collectible:001"
    assert by_key["css:collectibles_005"].duplicate_of == "collectible:001"  # labelled ones come first
    assert by_key["collectible:004"].blank and by_key["collectible:004"].path is None
    assert by_key["css:collectibles_000"].blank
    assert by_key["collectible:003"].path == "sprites/collectible/003.png"
    stored = Image.open(tmp_path / "sprites/collectible/003.png")
    assert stored.getpixel((5, 5)) == (0, 0, 255, 128)  # alpha kept
    assert sorted(p.name for p in (tmp_path / "sprites/collectible").glob("*.png")) == ["001.png", "003.png"]
    # blank: 4 and 7 (labelled), 0 and 6 (unlabelled); twins of 1: 2 and 5; files: 1 and 3
    assert result.counts() == {"labelled": 5, "unlabelled": 3, "blank": 4, "duplicates": 2, "files": 2,
                               "problems": 0}


def test_every_file_goes_through_atomic_write(tmp_path, monkeypatch):
    calls = []
    real = slicing.atomic_write
    monkeypatch.setattr(slicing, "atomic_write", lambda path, data: (calls.append(Path(path)), real(path, data)))
    build_sprites(CSS, [row(1), row(2)], make_sheet({(1, 0): (9, 9, 9, 255), (2, 0): (8, 8, 8, 255)}), "u", None,
                  tmp_path, kind="collectible")
    assert sorted(calls) == sorted(p for p in tmp_path.rglob("*.png")) and len(calls) == 4
    assert not list(tmp_path.rglob(f"*{PART_SUFFIX}"))


def test_a_sprite_that_becomes_a_duplicate_loses_its_files(tmp_path):
    cells = {(1, 0): (255, 0, 0, 255), (2, 0): (0, 255, 0, 255)}
    build_sprites(CSS, [row(1), row(2)], make_sheet(cells), "u", None, tmp_path, kind="collectible")
    assert (tmp_path / "sprites/collectible/x2/002.png").is_file()
    sheet = Image.open(io.BytesIO(make_sheet(cells))).convert("RGBA")
    sheet.paste(sheet.crop((32, 0, 64, 32)), (64, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    result = build_sprites(CSS, [row(1), row(2)], buffer.getvalue(), "u", None, tmp_path, kind="collectible")
    assert result.sprites[1].duplicate_of == "collectible:001"
    assert not (tmp_path / "sprites/collectible/002.png").exists()
    assert not (tmp_path / "sprites/collectible/x2/002.png").exists()


def test_palette_sheet_upscale_setting_and_cross_sheet_twins(tmp_path):
    cells = {(1, 0): (255, 0, 0, 255)}
    first = slice_sheet(CSS, [row(1)], make_sheet(cells, mode="P"), "u", None, kind="collectible", upscale=3)
    sprite = first.sprites[0]
    assert sprite.image.mode == "RGBA" and sprite.upscale_path == "sprites/collectible/x3/001.png"
    write_sprites(first, tmp_path)
    assert Image.open(tmp_path / sprite.upscale_path).size == (96, 96)
    none = slice_sheet(CSS, [row(1)], make_sheet(cells), "u", None, kind="collectible", upscale=1)
    assert none.sprites[0].upscale_path is None
    twin_css = "#trinket_001{background-position:-32px 0}"
    trinkets = slice_sheet(twin_css, [row(1, "trinket", "trinket_001")], make_sheet(cells), "t", None, kind="trinket",
                           known_originals={sprite.sha256: sprite.key})
    assert trinkets.sprites[0].key == "trinket:001" and trinkets.sprites[0].duplicate_of == "collectible:001"


def test_problems_are_reported_not_sliced():
    css = CSS + "#collectibles_020{background-position:-128px 0}#collectibles_021{background:url(Other.png) 0 0}"
    no_icon = ItemRow("collectible", 31, "x", "x", 1, None, "x", css_id=None)
    rows = [row(1), row(20), row(21), row(30), no_icon, row(32, css_id="collectibles_001")]
    result = slice_sheet(css, rows + [row(1)], make_sheet({(1, 0): (1, 2, 3, 255)}), "https://w.example/S.png",
                         None, kind="collectible", base_url="https://w.example/load.php")
    assert [s.key for s in result.sprites if s.labelled] == ["collectible:001"]
    assert set(result.problems) == {"collectible:001", "collectibles_020", "collectibles_021", "collectibles_030",
                                    "collectible:031", "collectible:032"}
    assert "second table row" in result.problems["collectible:001"]
    assert "already labels" in result.problems["collectible:032"]
    assert "outside" in result.problems["collectibles_020"]
    assert "another sheet" in result.problems["collectibles_021"]
    assert "no style rule" in result.problems["collectibles_030"]
    with pytest.raises(SpriteSheetError):
        slice_sheet(CSS, [], b"<html>not a sheet</html>", "u", None, kind="collectible")
    with pytest.raises(SpriteSheetError, match="limit"):
        slice_sheet(CSS, [], make_sheet({}), "u", None, kind="collectible", max_pixels=100)


def test_hostile_ids_never_leave_the_folder(tmp_path):
    for css_id in ("../../etc/passwd", "..", "a/b", "", "x" * 300, "名字", "a\\b", "trinket_001"):
        name = safe_name(css_id)
        assert name and "/" not in name and "\\" not in name and not name.startswith(".")
        path, big = sprite_paths("trinket", None, css_id, 2)
        for relative in (path, big):
            target = (tmp_path / relative).resolve()
            assert target.is_relative_to((tmp_path / "sprites/unlabelled").resolve())
    assert safe_name("trinket_001") == "trinket_001"
    assert safe_name("a/b") != safe_name("a_b")  # rewritten names never collide with clean ones
    with pytest.raises(ValueError):
        sprite_paths("../x", 1, "a", 2)
    assert sprite_key("collectible", 1, "x") != sprite_key("trinket", 1, "x")


# --- catalogue and card --------------------------------------------------------------------------------
def test_sprites_table_round_trip(tmp_path, isaac_build):
    _, results = isaac_build
    catalog = Catalog(tmp_path / "catalog.db")
    for kind in KINDS:
        catalog.record_sprite_sheet(SHEET_URLS[kind], [s.row() for s in results[kind].sprites], "t1")
    stored = catalog.sprites()
    assert len(stored) == 721 + 189
    expected = [s.row() for kind in KINDS for s in results[kind].sprites]
    assert [{k: v for k, v in r.items() if k != "sliced_at"} for r in stored] == expected
    assert len(catalog.sprites("trinket")) == 189
    assert catalog.sprite_sheets() == {SHEET_URLS[k]: results[k].sheet_sha1 for k in KINDS}
    originals = catalog.sprite_originals(except_sheet=SHEET_URLS["trinket"])
    assert len(originals) == 719 and originals[stored[0]["sha256"]] == "collectible:001"

    # The same slice again changes nothing, not even sliced_at; a moved sprite gets a new time.
    rows = [s.row() for s in results["trinket"].sprites]
    catalog.record_sprite_sheet(SHEET_URLS["trinket"], rows, "t2")
    assert {r["sliced_at"] for r in catalog.sprites("trinket")} == {"t1"}
    rows[0] = {**rows[0], "x": rows[0]["x"] + 32, "sha256": "changed"}
    catalog.record_sprite_sheet(SHEET_URLS["trinket"], rows[:-1], "t3")  # and one id gone from the sheet
    after = {r["key"]: r for r in catalog.sprites("trinket")}
    assert after[rows[0]["key"]]["sliced_at"] == "t3" and after[rows[1]["key"]]["sliced_at"] == "t1"
    assert rows[-1]["key"] not in after and len(after) == 188
    assert len(catalog.sprites("collectible")) == 721  # another sheet's rows are untouched
    with pytest.raises(sqlite3.IntegrityError):  # an unlabelled row claiming an in-game id breaks the key rule
        catalog.record_sprite_sheet("x", [{**rows[0], "key": "css:x", "labelled": 0}], "t4")


def test_dataset_card(tmp_path, isaac_build):
    root, results = isaac_build
    rows = [s.row() for kind in KINDS for s in results[kind].sprites]
    card = build_card(rows, upscale=2)
    assert card["licence"] == LICENCE and "CC BY-NC-SA 3.0" in card["licence"]
    assert "Edmund McMillen / Nicalis" in card["licence"]
    assert card["source"]["pages"] == [LIST_PAGES["collectible"], LIST_PAGES["trinket"]]
    assert card["counts"] == {
        "collectible": {"labelled": 719, "unlabelled": 2, "blank": 0, "duplicates": 2, "files": 719},
        "trinket": {"labelled": 188, "unlabelled": 1, "blank": 0, "duplicates": 0, "files": 189},
    }
    assert [(s["url"], s["sha1"]) for s in card["sheets"]] == [(SHEET_URLS[k], results[k].sheet_sha1) for k in KINDS]
    assert card["duplicates"] == {"css:collectibles_059": "collectible:034", "css:collectibles_656": "collectible:577"}
    assert card["unlabelled"] == ["collectibles_059", "collectibles_656", "trinket_047"]
    path = write_card(tmp_path, card)
    first = path.read_bytes()
    assert json.loads(first) == card
    write_card(tmp_path, build_card(list(reversed(rows)), upscale=2))
    assert path.read_bytes() == first  # same sprites, same bytes
    assert not list(tmp_path.rglob(f"*{PART_SUFFIX}"))
