"""The sprite dataset's card: what it holds, where it came from, and under which licence.

``sprites/card.json`` is rebuilt from the ``sprites`` rows after each sheet, so it always describes
the files on disk. It has no timestamp: the same sprites give the same bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.storage import atomic_write
from stages.sprites.slicing import DEFAULT_UPSCALE, SPRITES_DIR, UNLABELLED_DIR
from stages.sprites.table import KINDS, LIST_PAGES

CARD_NAME = "card.json"
WIKI = "https://isaac.huijiwiki.com"
# The wiki's footer: text under CC BY-NC-SA 3.0; the icons themselves are the game's art.
LICENCE = "CC BY-NC-SA 3.0, isaac.huijiwiki.com contributors; the game's art © Edmund McMillen / Nicalis"
LICENCE_URL = "https://creativecommons.org/licenses/by-nc-sa/3.0/"


def build_card(
    sprites: Iterable[Mapping[str, Any]],
    *,
    upscale: int = DEFAULT_UPSCALE,
    pages: Mapping[str, str] = LIST_PAGES,
    problems: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The card for these ``sprites`` rows (``Catalog.sprites()`` or ``Sprite.row()`` s)."""
    rows = sorted(sprites, key=lambda r: (r["kind"], not r["labelled"], r["game_id"] or 0, r["css_id"]))
    counts: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    sheets: dict[str, dict[str, Any]] = {}
    for row in rows:
        tally = counts.setdefault(row["kind"], Counter())
        tally["labelled" if row["labelled"] else "unlabelled"] += 1
        tally["blank"] += bool(row["blank"])
        tally["duplicates"] += row["duplicate_of"] is not None
        tally["files"] += row["path"] is not None
        sheet = sheets.setdefault(row["sheet_url"], {"url": row["sheet_url"], "sha1": row["sheet_sha1"],
                                                     "kind": row["kind"], "sprites": 0})
        sheet["sprites"] += 1
    fields = ("labelled", "unlabelled", "blank", "duplicates", "files")
    return {
        "name": "isaac-item-sprites",
        "description": (
            "Item icons of The Binding of Isaac (collectibles and trinkets), cut from the Chinese Isaac "
            "wiki's CSS sprite sheets and labelled from its item tables. One file per distinct visible "
            "icon; blank cells and exact duplicates are listed here, not written."
        ),
        "licence": LICENCE,
        "licence_url": LICENCE_URL,
        "source": {"wiki": WIKI, "pages": [pages[kind] for kind in KINDS if kind in pages]},
        "files": {
            "labelled": f"{SPRITES_DIR}/{{kind}}/{{game_id:03d}}.png",
            "unlabelled": f"{SPRITES_DIR}/{UNLABELLED_DIR}/{{css_id}}.png",
            "upscaled": f"x{upscale}/ beside each, nearest-neighbour" if upscale > 1 else None,
            "format": "PNG, RGBA, lossless, native size",
        },
        "counts": {kind: {name: tally[name] for name in fields} for kind, tally in counts.items()},
        "sheets": sorted(sheets.values(), key=lambda s: s["url"]),
        "unlabelled": [row["css_id"] for row in rows if not row["labelled"]],
        "blank": [row["key"] for row in rows if row["blank"]],
        "duplicates": {row["key"]: row["duplicate_of"] for row in rows if row["duplicate_of"] is not None},
        "problems": dict(sorted((problems or {}).items())),
    }


def write_card(output_root: str | Path, card: Mapping[str, Any]) -> Path:
    """Write ``sprites/card.json`` atomically; return its path."""
    path = Path(output_root) / SPRITES_DIR / CARD_NAME
    atomic_write(path, (json.dumps(card, ensure_ascii=False, indent=2) + "\n").encode())
    return path
