"""The recognizer's classes: the labelled Isaac item icons as one fixed, ordered set.

A class is one labelled sprite keyed by (kind, in-game id), never by CSS id: the original
scraper re-keyed trinkets as ``collectibles_733…``, so collectible 1 and trinket 1 must stay two
classes. Unlabelled sprites (a CSS id with no table row) have no name to give and are left out,
and so are blanks and exact duplicates (the slicer writes no file for them), so no two classes
share pixels.

Where the icons come from (the catalogue's ``sprites`` table, or the captured wiki files sliced
afresh) is ``jobs/isaac_icons.py``: it needs the catalogue and the slicer, which stand above the
models. This module only turns labelled sprite rows and their pictures into an ``IconSet``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from core.errors import ProjectError

REPO = Path(__file__).resolve().parents[2]
FIXTURES_DIR = REPO.parent / "shared" / "fixtures" / "isaac"
ICON_SIZE = 32  # the wiki's sheet cells


class IconSourceError(ProjectError, RuntimeError):
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


def icon_set(rows: Sequence[tuple[dict[str, Any], Image.Image]], source: str) -> IconSet:
    ordered = sorted(rows, key=lambda pair: (pair[0]["kind"], int(pair[0]["game_id"])))
    if not ordered:
        raise IconSourceError(f"{source}: no labelled sprites")
    return IconSet(
        classes=tuple(_item_class(row) for row, _ in ordered),
        pixels=np.stack([_rgba_icon(image) for _, image in ordered]),
        source=source,
    )


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
