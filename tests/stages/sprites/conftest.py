"""The captured Isaac wiki files, read from ../shared/fixtures/isaac at run time (never copied here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.sprites.css import Stylesheet
from stages.sprites.table import ItemRow, rows_from_id_mapping

ISAAC = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "isaac"
SHEET_URLS = {  # MediaWiki's hashed upload paths (md5 of the file name)
    "collectible": "https://huiji-public.huijistatic.com/isaac/uploads/0/04/Collectibles_sprite.png",
    "trinket": "https://huiji-public.huijistatic.com/isaac/uploads/8/89/Trinket_sprite.png",
}
FILES = {"collectible": ("items.css", "Collectibles_sprite.png"), "trinket": ("trinket.css", "Trinket_sprite.png")}
LOAD_PHP = "https://isaac.huijiwiki.com/load.php?modules=site.styles&only=styles"


def isaac_file(name: str) -> Path:
    path = ISAAC / name
    if not path.is_file():
        pytest.skip(f"{path} is missing: the captured Isaac wiki fixtures live in ../shared/fixtures/isaac")
    return path


@pytest.fixture(scope="session")
def id_mapping() -> dict:
    return json.loads(isaac_file("id_mapping_dict.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def isaac_rows(id_mapping) -> list[ItemRow]:
    return rows_from_id_mapping(id_mapping)


@pytest.fixture(scope="session")
def isaac_stylesheets() -> dict[str, Stylesheet]:
    """Both captured site stylesheets, parsed once (about 0.6 s each)."""
    return {
        kind: Stylesheet(isaac_file(css).read_text(encoding="utf-8"), LOAD_PHP) for kind, (css, _) in FILES.items()
    }


@pytest.fixture(scope="session")
def isaac_sheets() -> dict[str, bytes]:
    return {kind: isaac_file(sheet).read_bytes() for kind, (_, sheet) in FILES.items()}
