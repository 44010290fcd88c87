"""Item icons from a wiki's CSS sprite sheets, as a labelled dataset (a library; no Scrapy here).

``css`` finds each icon's rectangle in its sheet (from the stylesheet, or from a browser's computed
styles), ``table`` reads the item table that labels it, ``slicing`` cuts, de-duplicates and writes
the icons, ``card`` describes the result. A pipeline (``pipelines/sprite_sheets.py``) feeds
``build_sprites`` the stylesheet, the table rows and the sheet's bytes, then records the sprites
with ``Catalog.record_sprite_sheet`` and rewrites the card.
"""

from stages.sprites.card import build_card, write_card
from stages.sprites.css import (
    ComputedIcon,
    Element,
    SpriteCssError,
    SpriteRef,
    Stylesheet,
    resolve_computed,
    resolve_sprites,
    sprite_from_computed,
)
from stages.sprites.slicing import SheetSlices, Sprite, SpriteSheetError, build_sprites, slice_sheet
from stages.sprites.table import ItemRow, parse_list_page, rows_from_id_mapping

__all__ = [
    "ComputedIcon",
    "Element",
    "ItemRow",
    "SheetSlices",
    "Sprite",
    "SpriteCssError",
    "SpriteRef",
    "SpriteSheetError",
    "Stylesheet",
    "build_card",
    "build_sprites",
    "parse_list_page",
    "resolve_computed",
    "resolve_sprites",
    "rows_from_id_mapping",
    "slice_sheet",
    "sprite_from_computed",
    "write_card",
]
