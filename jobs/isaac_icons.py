"""Where the Isaac recognizer's icons come from: the catalogue after a wiki crawl, or the captured files.

The catalogue route reads the ``sprites`` table that the ``isaac_wiki`` spider fills and the PNGs
under ``OUTPUT_DIR``. Without one, the captured wiki files (``../shared/fixtures/isaac``) are sliced
afresh with ``stages.sprites.build_sprites`` into a temporary folder: the same slicer, so both routes
give the same classes. A job, not a model: it joins the catalogue, the slicer and the model's
``IconSet``, which stand in three layers.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from catalog.store import Catalog
from models.isaac.icons import FIXTURES_DIR, IconSet, IconSourceError, icon_set, is_class_row
from stages.sprites import Stylesheet, build_sprites, rows_from_id_mapping

# Each kind's list page stylesheet and sheet in the captured files, and the sheet URLs they were
# served from (MediaWiki's hashed upload paths), which the sprite rows record.
FIXTURE_FILES = {"collectible": ("items.css", "Collectibles_sprite.png"), "trinket": ("trinket.css", "Trinket_sprite.png")}
FIXTURE_SHEET_URLS = {
    "collectible": "https://huiji-public.huijistatic.com/isaac/uploads/0/04/Collectibles_sprite.png",
    "trinket": "https://huiji-public.huijistatic.com/isaac/uploads/8/89/Trinket_sprite.png",
}
FIXTURE_CSS_URL = "https://isaac.huijiwiki.com/load.php?modules=site.styles&only=styles"


def icons_from_catalog(catalog_db: str | Path, output_dir: str | Path | None = None) -> IconSet:
    """The labelled sprites that the catalogue lists and whose PNGs are under ``output_dir``.

    ``output_dir`` defaults to the catalogue's folder (paths in the table are relative to OUTPUT_DIR).
    """
    catalog_db = Path(catalog_db)
    root = Path(output_dir) if output_dir else catalog_db.parent
    if not catalog_db.is_file():
        raise IconSourceError(f"no catalogue at {catalog_db}")
    catalog = Catalog(catalog_db)
    try:
        rows = [row for row in catalog.sprites() if is_class_row(row)]
    except sqlite3.Error as error:
        raise IconSourceError(f"{catalog_db}: no sprites table ({error})") from None
    finally:
        catalog.close()
    pairs = []
    for row in rows:
        path = root / row["path"]
        if not path.is_file():
            raise IconSourceError(f"{catalog_db}: sprite {row['key']} is listed but {path} is missing")
        with Image.open(path) as image:
            pairs.append((row, image.copy()))
    return icon_set(pairs, f"catalog:{catalog_db}")


def icons_from_fixtures(fixtures_dir: str | Path = FIXTURES_DIR, output_root: str | Path | None = None) -> IconSet:
    """Slice the captured wiki files with ``stages.sprites`` and take the labelled sprites.

    The PNGs go to ``output_root`` (kept) or to a temporary folder (removed); the classes are the
    same either way.
    """
    fixtures_dir = Path(fixtures_dir)
    needed = [fixtures_dir / "id_mapping_dict.json", *(fixtures_dir / name for pair in FIXTURE_FILES.values() for name in pair)]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise IconSourceError(f"captured Isaac wiki files missing: {', '.join(missing)}")
    rows = rows_from_id_mapping(json.loads((fixtures_dir / "id_mapping_dict.json").read_text(encoding="utf-8")))
    with tempfile.TemporaryDirectory(prefix="isaac-sprites-") as scratch:
        root = Path(output_root) if output_root else Path(scratch)
        pairs: list[tuple[dict[str, Any], Image.Image]] = []
        originals: dict[str, str] = {}
        for kind, (css_name, sheet_name) in FIXTURE_FILES.items():
            sheet = (fixtures_dir / sheet_name).read_bytes()
            stylesheet = Stylesheet((fixtures_dir / css_name).read_text(encoding="utf-8"), FIXTURE_CSS_URL)
            sliced = build_sprites(
                stylesheet, rows, sheet, FIXTURE_SHEET_URLS[kind], hashlib.sha1(sheet).hexdigest(), root,
                kind=kind, upscale=1, known_originals=originals,
            )
            originals.update({s.sha256: s.key for s in sliced.sprites if s.path})
            pairs += [(s.row(), s.image) for s in sliced.sprites if is_class_row(s.row()) and s.image is not None]
    return icon_set(pairs, f"fixtures:{fixtures_dir}")


def load_icons(
    catalog_db: str | Path | None = None, fixtures_dir: str | Path | None = FIXTURES_DIR,
    output_dir: str | Path | None = None,
) -> IconSet:
    """The catalogue's icons when it has labelled sprites, else the captured files sliced afresh."""
    reasons = []
    if catalog_db is not None:
        try:
            return icons_from_catalog(catalog_db, output_dir)
        except IconSourceError as error:
            reasons.append(str(error))
    if fixtures_dir is not None:
        try:
            return icons_from_fixtures(fixtures_dir)
        except IconSourceError as error:
            reasons.append(str(error))
    raise IconSourceError("; ".join(reasons) or "no icon source given")
