"""The recognizer's classes: the labelled Isaac item icons, from the catalogue or the captured sheets.

A class is one labelled sprite keyed by (kind, in-game id), never by CSS id: the original
scraper re-keyed trinkets as ``collectibles_733…``, so collectible 1 and trinket 1 must stay two
classes. Unlabelled sprites (a CSS id with no table row) have no name to give and are left out,
and so are blanks and exact duplicates (the slicer writes no file for them), so no two classes
share pixels.

The icons come from the project's catalogue (``OUTPUT_DIR/catalog.db``, the ``sprites`` table
that ``stages.sprites`` fills) or, when it holds none, straight from slicing the captured wiki
files (``../shared/fixtures/isaac``) with ``stages.sprites.build_sprites`` into a temporary
folder: the same slicer, so both routes give the same classes.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
FIXTURES_DIR = REPO.parent / "shared" / "fixtures" / "isaac"
ICON_SIZE = 32  # the wiki's sheet cells
# Each kind's list page stylesheet and sheet in the captured files, and the sheet URLs they were
# served from (MediaWiki's hashed upload paths), which the sprite rows record.
FIXTURE_FILES = {"collectible": ("items.css", "Collectibles_sprite.png"), "trinket": ("trinket.css", "Trinket_sprite.png")}
FIXTURE_SHEET_URLS = {
    "collectible": "https://huiji-public.huijistatic.com/isaac/uploads/0/04/Collectibles_sprite.png",
    "trinket": "https://huiji-public.huijistatic.com/isaac/uploads/8/89/Trinket_sprite.png",
}
FIXTURE_CSS_URL = "https://isaac.huijiwiki.com/load.php?modules=site.styles&only=styles"


class IconSourceError(RuntimeError):
    """No labelled icons could be had from the catalogue or the captured files; the message says why."""


@dataclass(frozen=True)
class ItemClass:
    """What a class stands for: the card keeps these, so ``identify`` needs no catalogue."""

    key: str  # collectible:001, trinket:001
    kind: str
    game_id: int
    name_en: str
    name_zh: str
    description: str
    quality: int | None = None
    charge: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemClass:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass(frozen=True)
class IconSet:
    """The classes in a fixed order (kind, in-game id) and their icons, RGBA uint8 (n, 32, 32, 4)."""

    classes: tuple[ItemClass, ...]
    pixels: np.ndarray
    source: str  # where they came from, for the card

    def __len__(self) -> int:
        return len(self.classes)

    def digest(self) -> str:
        """sha256 over keys and pixels: two runs trained on the same icons say so in their cards."""
        hasher = hashlib.sha256()
        for item, icon in zip(self.classes, self.pixels):
            hasher.update(item.key.encode() + b"\0" + icon.tobytes())
        return hasher.hexdigest()

    def subset(self, indices: Iterable[int]) -> IconSet:
        chosen = list(indices)
        return IconSet(tuple(self.classes[i] for i in chosen), self.pixels[chosen], self.source)

    def first(self, count: int) -> IconSet:
        return self.subset(range(min(count, len(self))))

    def spread(self, count: int) -> IconSet:
        """``count`` classes evenly spread over the whole set (both kinds), for quick runs and tests."""
        if count >= len(self):
            return self
        return self.subset(np.linspace(0, len(self) - 1, count).round().astype(int).tolist())

    def index_of(self, key: str) -> int:
        for index, item in enumerate(self.classes):
            if item.key == key:
                return index
        raise KeyError(key)


def _rgba_icon(image: Image.Image) -> np.ndarray:
    """An icon as (32, 32, 4) uint8; a cell of another size is fitted with nearest-neighbour."""
    image = image.convert("RGBA")
    if image.size != (ICON_SIZE, ICON_SIZE):
        image = image.resize((ICON_SIZE, ICON_SIZE), Image.Resampling.NEAREST)
    return np.asarray(image, dtype=np.uint8).copy()


def _item_class(row: dict[str, Any]) -> ItemClass:
    return ItemClass(
        key=row["key"], kind=row["kind"], game_id=int(row["game_id"]), name_en=row["name_en"] or "",
        name_zh=row["name_zh"] or "", description=row["description"] or "", quality=row.get("quality"),
        charge=row.get("charge"),
    )


def is_class_row(row: dict[str, Any]) -> bool:
    """Labelled, drawn and not a twin: a sprite that can be a class."""
    return bool(row["labelled"]) and not row["blank"] and row["duplicate_of"] is None and bool(row["path"])


def _icon_set(rows: Sequence[tuple[dict[str, Any], Image.Image]], source: str) -> IconSet:
    ordered = sorted(rows, key=lambda pair: (pair[0]["kind"], int(pair[0]["game_id"])))
    if not ordered:
        raise IconSourceError(f"{source}: no labelled sprites")
    return IconSet(
        classes=tuple(_item_class(row) for row, _ in ordered),
        pixels=np.stack([_rgba_icon(image) for _, image in ordered]),
        source=source,
    )


def icons_from_catalog(catalog_db: str | Path, output_dir: str | Path | None = None) -> IconSet:
    """The labelled sprites that the catalogue lists and whose PNGs are under ``output_dir``.

    ``output_dir`` defaults to the catalogue's folder (paths in the table are relative to OUTPUT_DIR).
    """
    catalog_db = Path(catalog_db)
    root = Path(output_dir) if output_dir else catalog_db.parent
    if not catalog_db.is_file():
        raise IconSourceError(f"no catalogue at {catalog_db}")
    from catalog.store import Catalog

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
    return _icon_set(pairs, f"catalog:{catalog_db}")


def icons_from_fixtures(fixtures_dir: str | Path = FIXTURES_DIR, output_root: str | Path | None = None) -> IconSet:
    """Slice the captured wiki files with ``stages.sprites`` and take the labelled sprites.

    The PNGs go to ``output_root`` (kept) or to a temporary folder (removed); the classes are the
    same either way.
    """
    from stages.sprites import Stylesheet, build_sprites, rows_from_id_mapping

    fixtures_dir = Path(fixtures_dir)
    needed = [fixtures_dir / "id_mapping_dict.json", *(fixtures_dir / name for pair in FIXTURE_FILES.values() for name in pair)]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise IconSourceError(f"captured Isaac wiki files missing: {', '.join(missing)}")
    rows = rows_from_id_mapping(json.loads((fixtures_dir / "id_mapping_dict.json").read_text(encoding="utf-8")))
    with tempfile.TemporaryDirectory(prefix="isaac-sprites-") as scratch:
        root = Path(output_root) if output_root else Path(scratch)
        pairs, originals = [], {}
        for kind, (css_name, sheet_name) in FIXTURE_FILES.items():
            sheet = (fixtures_dir / sheet_name).read_bytes()
            stylesheet = Stylesheet((fixtures_dir / css_name).read_text(encoding="utf-8"), FIXTURE_CSS_URL)
            sliced = build_sprites(
                stylesheet, rows, sheet, FIXTURE_SHEET_URLS[kind], hashlib.sha1(sheet).hexdigest(), root,
                kind=kind, upscale=1, known_originals=originals,
            )
            originals.update({s.sha256: s.key for s in sliced.sprites if s.path})
            pairs += [(s.row(), s.image) for s in sliced.sprites if is_class_row(s.row())]
    return _icon_set(pairs, f"fixtures:{fixtures_dir}")


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


def load_background(path: str | Path) -> np.ndarray:
    """A background picture as RGB uint8 (transparency on black, as the game draws nothing there)."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    canvas.alpha_composite(rgba)
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8).copy()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
