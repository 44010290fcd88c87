"""The wiki's item lists as records: what each sprite is (names, quality, charge, description).

The list pages (``/wiki/道具`` for collectibles, ``/wiki/饰品`` for trinkets) hold one table row per
item, cells in this order: English name, Chinese name, in-game id, type, quality (0–4), charge
(``/`` when none), description. The icon is a ``<span id="collectibles_001">`` somewhere in the row,
drawn by CSS (see ``css.py``). Items are keyed by (kind, in-game id): a CSS id alone is not a key,
and the original scraper's merged dictionary shows why (its trinkets collide with collectibles).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from parsel import Selector

KINDS = ("collectible", "trinket")
# The CSS id each kind's icon spans carry: collectibles_001, trinket_001.
CSS_ID_PREFIX = {"collectible": "collectibles_", "trinket": "trinket_"}
# The table's type column, and the page each kind is listed on.
KIND_BY_TYPE = {"道具": "collectible", "饰品": "trinket"}
LIST_PAGES = {
    "collectible": "https://isaac.huijiwiki.com/wiki/道具",
    "trinket": "https://isaac.huijiwiki.com/wiki/饰品",
}
_COLUMNS = 7  # English name, Chinese name, id, type, quality, charge, description


@dataclass(frozen=True)
class ItemRow:
    """One item of a list page."""

    kind: str  # collectible or trinket
    game_id: int
    name_en: str
    name_zh: str
    quality: int | None  # 0-4; None when the cell holds no number
    charge: str | None  # as written ("4", "3秒", "0,一次性使用"); None when the cell is "/" or empty
    description: str
    css_id: str | None  # the icon span's id; None when the row has no icon
    css_classes: tuple[str, ...] = ()
    icon_style: str = ""  # the icon span's inline style, if any

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind, self.game_id)


def css_id_pattern(kind: str) -> str:
    """The ids of a kind's icon rules in the stylesheet: ``collectibles_`` or ``trinket_`` and digits."""
    return re.escape(CSS_ID_PREFIX[kind]) + r"\d+"


def _text(cell: Selector) -> str:
    """A cell's text with its whitespace collapsed; link text joined without spaces (Chinese has none)."""
    return " ".join("".join(cell.xpath(".//text()").getall()).split())


def _first_int(text: str) -> int | None:
    found = re.search(r"\d+", text)
    return int(found.group()) if found else None


def parse_list_page(html: str, kind: str | None = None) -> tuple[list[ItemRow], list[str]]:
    """The item rows of a list page, and why each other row with cells was skipped.

    ``html`` is the whole page or the API's ``parse.text`` fragment. ``kind`` is the page's kind,
    used when a row's type cell does not say it.
    """
    page = Selector(text=html)
    root = page.css("#mw-content-text") or page
    rows: list[ItemRow] = []
    skipped: list[str] = []
    for number, tr in enumerate(root.xpath(".//table//tr"), 1):
        cells = tr.xpath("./td")
        if not cells:
            continue  # a header row
        icon = _icon(tr, kind)
        texts = [_text(cell) for cell in cells]
        # The icon may have a cell of its own (no text): it is not one of the seven columns.
        texts = [text for cell, text in zip(cells, texts) if text or not cell.xpath(".//span[@id]")]
        if len(texts) < _COLUMNS:
            skipped.append(f"row {number}: {len(texts)} cells, {_COLUMNS} expected")
            continue
        name_en, name_zh, game_id_text, type_text, quality_text, charge, description = texts[:_COLUMNS]
        row_kind = KIND_BY_TYPE.get(type_text, kind)
        game_id = _first_int(game_id_text)
        if row_kind not in KINDS:
            skipped.append(f"row {number}: type {type_text!r} is neither a collectible nor a trinket")
            continue
        if game_id is None:
            skipped.append(f"row {number}: in-game id {game_id_text!r} is not a number")
            continue
        rows.append(ItemRow(
            kind=row_kind,
            game_id=game_id,
            name_en=name_en,
            name_zh=name_zh,
            quality=_first_int(quality_text),
            charge=None if charge in ("", "/") else charge,
            description=description,
            css_id=icon.attrib.get("id") if icon is not None else None,
            css_classes=tuple((icon.attrib.get("class") or "").split()) if icon is not None else (),
            icon_style=(icon.attrib.get("style") or "") if icon is not None else "",
        ))
    return rows, skipped


def _icon(tr: Selector, kind: str | None) -> Selector | None:
    """The row's icon span: the one whose id has the kind's prefix, else the first span with an id."""
    spans = tr.xpath(".//span[@id]")
    prefixes = [CSS_ID_PREFIX[kind]] if kind in CSS_ID_PREFIX else list(CSS_ID_PREFIX.values())
    for span in spans:
        if any(span.attrib["id"].startswith(prefix) for prefix in prefixes):
            return span
    return spans[0] if spans else None


def rows_from_id_mapping(mapping: Mapping[str, Mapping[str, Any]]) -> list[ItemRow]:
    """The rows the original scraper extracted (``id_mapping_dict.json``), as :class:`ItemRow` s.

    Its known defects are undone here: trinkets were re-keyed ``collectibles_733…921``, so each
    row's CSS id is rebuilt from its kind and in-game id; entries with only ``x`` and ``y`` are CSS
    ids without a table row, so they are no rows at all (the stylesheet still lists them).
    """
    rows = []
    for entry in mapping.values():
        kind = KIND_BY_TYPE.get(entry.get("type", ""))
        game_id = _first_int(str(entry.get("level", "")))
        if kind is None or game_id is None:
            continue
        charge = str(entry.get("?", "")).strip()
        rows.append(ItemRow(
            kind=kind,
            game_id=game_id,
            name_en=str(entry.get("en", "")).strip(),
            name_zh=str(entry.get("zh", "")).strip(),
            quality=_first_int(str(entry.get("level2", ""))),
            charge=None if charge in ("", "/") else charge,
            description=str(entry.get("desc", "")).strip(),
            css_id=f"{CSS_ID_PREFIX[kind]}{game_id:03d}",
        ))
    return rows


def index_rows(rows: Iterable[ItemRow]) -> tuple[dict[tuple[str, int], ItemRow], list[ItemRow]]:
    """Rows by (kind, in-game id), and the later rows that repeat a key (the first one is kept)."""
    by_key: dict[tuple[str, int], ItemRow] = {}
    repeated: list[ItemRow] = []
    for row in rows:
        if row.key in by_key:
            repeated.append(row)
        else:
            by_key[row.key] = row
    return by_key, repeated
