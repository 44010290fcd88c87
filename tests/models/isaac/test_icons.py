"""The recognizer's classes: the labelled sprites keyed by (kind, in-game id), from either source."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from catalog.store import Catalog
from jobs.isaac_icons import FIXTURE_CSS_URL, FIXTURE_FILES, FIXTURE_SHEET_URLS, icons_from_catalog, load_icons
from models.isaac.icons import FIXTURES_DIR
from stages.sprites import Stylesheet, build_sprites, rows_from_id_mapping


def test_907_classes_keyed_by_kind_and_game_id(isaac_icons):
    keys = [item.key for item in isaac_icons.classes]
    assert len(isaac_icons) == 907 and len(set(keys)) == 907
    assert sum(item.kind == "collectible" for item in isaac_icons.classes) == 719
    assert sum(item.kind == "trinket" for item in isaac_icons.classes) == 188
    assert all(item.key == f"{item.kind}:{item.game_id:03d}" for item in isaac_icons.classes)
    # Trinket 1 is its own class, not "collectibles_733" as the original scraper had it.
    onion, swallowed_penny = (isaac_icons.classes[isaac_icons.index_of(k)] for k in ("collectible:001", "trinket:001"))
    assert (onion.name_en, onion.name_zh) == ("The Sad Onion", "悲伤洋葱")
    assert swallowed_penny.kind == "trinket" and swallowed_penny.name_en and swallowed_penny.name_zh
    assert isaac_icons.pixels.shape == (907, 32, 32, 4) and isaac_icons.pixels.dtype == np.uint8


def test_no_two_classes_share_pixels(isaac_icons):
    digests = {hashlib.sha256(icon.tobytes()).hexdigest() for icon in isaac_icons.pixels}
    assert len(digests) == len(isaac_icons)
    assert all(icon[..., 3].max() > 0 for icon in isaac_icons.pixels)  # no blank cell is a class


def test_the_catalogue_gives_the_same_classes_as_the_fixtures(tmp_path, isaac_icons):
    """What the crawl records (sprites table + PNGs under OUTPUT_DIR) is read back to the same icons."""
    rows = rows_from_id_mapping(json.loads((FIXTURES_DIR / "id_mapping_dict.json").read_text(encoding="utf-8")))
    catalog = Catalog(tmp_path / "catalog.db")
    originals: dict[str, str] = {}
    for kind, (css, sheet_name) in FIXTURE_FILES.items():
        sheet = (FIXTURES_DIR / sheet_name).read_bytes()
        sliced = build_sprites(Stylesheet((FIXTURES_DIR / css).read_text(encoding="utf-8"), FIXTURE_CSS_URL), rows,
                               sheet, FIXTURE_SHEET_URLS[kind], hashlib.sha1(sheet).hexdigest(), tmp_path, kind=kind,
                               known_originals=originals)
        originals.update({s.sha256: s.key for s in sliced.sprites if s.path})
        catalog.record_sprite_sheet(FIXTURE_SHEET_URLS[kind], [s.row() for s in sliced.sprites], "2026-01-01T00:00:00")
    catalog.close()
    from_catalog = icons_from_catalog(tmp_path / "catalog.db")
    assert from_catalog.digest() == isaac_icons.digest()
    assert from_catalog.classes == isaac_icons.classes
    assert load_icons(tmp_path / "catalog.db").source.startswith("catalog:")


def test_an_empty_catalogue_falls_back_to_the_fixtures(tmp_path, isaac_icons):
    Catalog(tmp_path / "catalog.db").close()
    icons = load_icons(tmp_path / "catalog.db")
    assert icons.source.startswith("fixtures:") and icons.digest() == isaac_icons.digest()
