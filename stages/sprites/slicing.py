"""Cut a sprite sheet into item icons, joined with the wiki's item table.

Icons are pixel art with transparency, so every slice is a lossless RGBA PNG at native size, plus
a nearest-neighbour upscale (``SPRITES_UPSCALE``, 2× by default) that keeps the pixels square. Only
distinct, visible icons get files: a fully transparent cell (``blank``) or a cell whose pixels equal
an earlier sprite's (``duplicate_of``) is recorded in the catalogue and the card but never written,
so a folder of files can be read as one class per file without silently learning a blank or a
twin. The earlier sprite is the first by (kind, in-game id); unlabelled ones come after.

``slice_sheet`` is pure (bytes in, records and in-memory images out); ``build_sprites`` also writes
the files, each with ``core.storage.atomic_write``. A Scrapy pipeline calls the latter.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from PIL import Image, UnidentifiedImageError

from core.errors import EXIT_FAILED, ProjectError
from core.storage import atomic_write
from stages.sprites.css import (
    DEFAULT_BOX,
    Element,
    SpriteRef,
    SpriteResolution,
    Stylesheet,
    resolve_sprites,
    same_resource,
)
from stages.sprites.table import KINDS, ItemRow, css_id_pattern, index_rows

SPRITES_DIR = "sprites"
UNLABELLED_DIR = "unlabelled"
DEFAULT_UPSCALE = 2  # crawler/settings.py SPRITES_UPSCALE
SHEET_MAX_PIXELS = 64_000_000  # a sheet larger than this is refused as a decompression bomb
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class SpriteSheetError(ProjectError, ValueError):
    """The sheet's bytes are not an image that can be sliced (broken, not an image, too large)."""

    exit_code = EXIT_FAILED


@dataclass
class Sprite:
    """One cell of a sheet, what the table says about it, and where its files go."""

    key: str  # collectible:001, trinket:001; css:{css_id} when no table row names it
    kind: str  # the sheet's kind
    game_id: int | None
    css_id: str
    name_en: str | None
    name_zh: str | None
    quality: int | None
    charge: str | None
    description: str | None
    sheet_url: str
    sheet_sha1: str | None
    x: int
    y: int
    w: int
    h: int
    sha256: str  # of the RGBA pixels, with the size: equal pixels, equal hash, whatever the encoder
    blank: bool = False
    duplicate_of: str | None = None
    path: str | None = None  # relative to the output root; None when blank or a duplicate
    upscale_path: str | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def labelled(self) -> bool:
        return self.game_id is not None

    def row(self) -> dict[str, Any]:
        """The ``sprites`` row (``Catalog.record_sprite_sheet``)."""
        return {
            "key": self.key, "kind": self.kind, "game_id": self.game_id, "css_id": self.css_id,
            "labelled": int(self.labelled), "name_en": self.name_en, "name_zh": self.name_zh,
            "quality": self.quality, "charge": self.charge, "description": self.description,
            "sheet_url": self.sheet_url, "sheet_sha1": self.sheet_sha1,
            "x": self.x, "y": self.y, "w": self.w, "h": self.h, "sha256": self.sha256,
            "blank": int(self.blank), "duplicate_of": self.duplicate_of,
            "path": self.path, "upscale_path": self.upscale_path,
        }


@dataclass
class SheetSlices:
    """Everything one sheet gave: its sprites in key order, and why anything else was left out."""

    kind: str
    sheet_url: str
    sheet_sha1: str | None
    sheet_size: tuple[int, int]
    sprites: list[Sprite]
    problems: dict[str, str]  # css id or key -> why it has no sprite
    upscale: int = DEFAULT_UPSCALE  # the factor the upscale paths were named for

    def counts(self) -> dict[str, int]:
        return {
            "labelled": sum(s.labelled for s in self.sprites),
            "unlabelled": sum(not s.labelled for s in self.sprites),
            "blank": sum(s.blank for s in self.sprites),
            "duplicates": sum(s.duplicate_of is not None for s in self.sprites),
            "files": sum(s.path is not None for s in self.sprites),
            "problems": len(self.problems),
        }


def sprite_key(kind: str, game_id: int | None, css_id: str) -> str:
    """Labelled sprites are keyed by kind and in-game id, so collectible 1 and trinket 1 never collide."""
    return f"{kind}:{game_id:03d}" if game_id is not None else f"css:{css_id}"


def safe_name(css_id: str) -> str:
    """A file name for a CSS id that cannot leave its folder (CSS ids may hold ``/`` or ``..`` escaped).

    Ids made only of letters, digits, ``_`` and ``-`` are kept; any other is rewritten and suffixed
    with a hash of the original, so two ids never share a file.
    """
    cleaned = _UNSAFE.sub("_", css_id)[:80]
    if cleaned == css_id and cleaned:
        return cleaned
    return f"{cleaned}-{hashlib.sha1(css_id.encode()).hexdigest()[:10]}"


def sprite_paths(kind: str, game_id: int | None, css_id: str, upscale: int) -> tuple[str, str | None]:
    """Where a sprite's native PNG and its upscale go, relative to the output root."""
    if kind not in KINDS:
        raise ValueError(f"unknown sprite kind {kind!r}")
    if game_id is not None:
        folder, name = f"{SPRITES_DIR}/{kind}", f"{int(game_id):03d}.png"
    else:
        folder, name = f"{SPRITES_DIR}/{UNLABELLED_DIR}", f"{safe_name(css_id)}.png"
    return f"{folder}/{name}", (f"{folder}/x{upscale}/{name}" if upscale > 1 else None)


def load_sheet(data: bytes, max_pixels: int = SHEET_MAX_PIXELS) -> Image.Image:
    """The sheet as RGBA (a palette sheet's transparency kept)."""
    try:
        sheet = Image.open(io.BytesIO(data))
        if sheet.width * sheet.height > max_pixels:
            raise SpriteSheetError(f"sheet of {sheet.width}x{sheet.height} pixels is over the {max_pixels} limit")
        sheet.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise SpriteSheetError(f"not a readable image: {error}") from None
    return sheet if sheet.mode == "RGBA" else sheet.convert("RGBA")


def pixel_digest(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.width}x{image.height}:".encode() + image.tobytes()).hexdigest()


def is_blank(image: Image.Image) -> bool:
    """Fully transparent: an empty cell of the sheet."""
    return image.getchannel("A").getextrema()[1] == 0


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG with no metadata, so the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def upscaled(image: Image.Image, factor: int) -> Image.Image:
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def slice_sheet(
    css: str | Stylesheet | None,
    rows: Iterable[ItemRow],
    sheet_bytes: bytes,
    sheet_url: str,
    sheet_sha1: str | None,
    *,
    kind: str,
    base_url: str = "",
    upscale: int = DEFAULT_UPSCALE,
    known_originals: Mapping[str, str] | None = None,
    default_box: tuple[int, int] = DEFAULT_BOX,
    max_pixels: int = SHEET_MAX_PIXELS,
    resolved: SpriteResolution | None = None,
) -> SheetSlices:
    """Resolve, cut and de-duplicate one sheet's sprites; nothing is written.

    :param css: the stylesheet served with the list page (text, or a parsed :class:`Stylesheet`);
        not read when ``resolved`` is given
    :param resolved: rectangles by CSS id that something else already found, such as a browser's
        computed styles (``css.resolve_computed``); ids of this kind in it that no row names are
        kept unlabelled, as the stylesheet's are
    :param rows: the list page's rows; those of other kinds are ignored
    :param sheet_url: the sheet's URL, used for every icon whose rules name no sheet
    :param kind: ``collectible`` or ``trinket``: which rows and which CSS ids belong to this sheet
    :param known_originals: sha256 -> key of sprites from sheets sliced before (a cross-sheet twin
        is then a duplicate too)
    :raises SpriteSheetError: when the sheet cannot be decoded
    """
    if kind not in KINDS:
        raise ValueError(f"unknown sprite kind {kind!r}")
    sheet = load_sheet(sheet_bytes, max_pixels)
    if css is None and resolved is None:
        raise ValueError("slice_sheet needs the stylesheet or the resolved rectangles")
    problems: dict[str, str] = {}
    by_key, repeated = index_rows(row for row in rows if row.kind == kind)
    for row in repeated:
        problems[sprite_key(*row.key, "")] = f"a second table row for {row.kind} {row.game_id}; the first is kept"
    labelled: dict[str, ItemRow] = {}
    for key, row in sorted(by_key.items()):
        if not row.css_id:
            problems[sprite_key(*key, "")] = "the table row has no icon span"
        elif row.css_id in labelled:
            problems[sprite_key(*key, "")] = f"its icon #{row.css_id} already labels {labelled[row.css_id].key}"
        else:
            labelled[row.css_id] = row
    if resolved is None:
        stylesheet = css if isinstance(css, Stylesheet) else Stylesheet(css, base_url)  # type: ignore[arg-type]
        elements = [Element(css_id, row.css_classes, row.icon_style) for css_id, row in labelled.items()]
        # An id the stylesheet styles but no row names is kept, unlabelled. Its span is not in the
        # table, so it is taken to carry the classes every icon span of the table shares.
        shared = set.intersection(*(set(row.css_classes) for row in labelled.values())) if labelled else set()
        shared_classes = tuple(sorted(shared))
        elements += [
            Element(css_id, shared_classes)
            for css_id in sorted(stylesheet.ids(css_id_pattern(kind)))
            if css_id not in labelled
        ]
        resolution = resolve_sprites(
            stylesheet, base_url, elements, default_sheet_url=sheet_url, sheet_sizes={sheet_url: sheet.size},
            default_box=default_box,
        )
    else:
        resolution = _own_resolution(resolved, labelled, kind)
    problems.update(resolution.problems)
    sprites: list[Sprite] = []
    for ref in resolution.refs.values():
        why_not = _outside(ref, sheet_url, sheet.size)
        if why_not:
            problems[ref.css_id] = why_not
            continue
        labelled_row = labelled.get(ref.css_id)
        cell = sheet.crop((ref.x, ref.y, ref.x + ref.w, ref.y + ref.h))
        game_id = labelled_row.game_id if labelled_row else None
        sprites.append(Sprite(
            key=sprite_key(kind, game_id, ref.css_id), kind=kind, game_id=game_id, css_id=ref.css_id,
            name_en=labelled_row.name_en if labelled_row else None, name_zh=labelled_row.name_zh if labelled_row else None,
            quality=labelled_row.quality if labelled_row else None, charge=labelled_row.charge if labelled_row else None,
            description=labelled_row.description if labelled_row else None,
            sheet_url=sheet_url, sheet_sha1=sheet_sha1, x=ref.x, y=ref.y, w=ref.w, h=ref.h,
            sha256=pixel_digest(cell), blank=is_blank(cell), image=cell,
        ))
    sprites.sort(key=lambda s: (not s.labelled, s.game_id or 0, s.css_id))
    originals = dict(known_originals or {})
    for sprite in sprites:
        if sprite.blank:
            continue
        first = originals.setdefault(sprite.sha256, sprite.key)
        if first != sprite.key:
            sprite.duplicate_of = first
        else:
            sprite.path, sprite.upscale_path = sprite_paths(kind, sprite.game_id, sprite.css_id, upscale)
    return SheetSlices(kind, sheet_url, sheet_sha1, sheet.size, sprites, problems, upscale)


def _own_resolution(resolved: SpriteResolution, labelled: Mapping[str, ItemRow], kind: str) -> SpriteResolution:
    """The part of rectangles found elsewhere that belongs to this sheet's rows and kind, in the
    order the stylesheet path uses (rows first, then the other ids sorted)."""
    pattern = re.compile(css_id_pattern(kind))
    known = {**resolved.problems, **resolved.refs}
    wanted = list(labelled) + sorted(i for i in known if pattern.fullmatch(i) and i not in labelled)
    refs = {i: resolved.refs[i] for i in wanted if i in resolved.refs}
    problems = {i: resolved.problems.get(i, "no such icon was found on the page") for i in wanted if i not in refs}
    return SpriteResolution(refs, problems)


def _outside(ref: SpriteRef, sheet_url: str, size: tuple[int, int]) -> str | None:
    """Why a rectangle cannot be cut from this sheet, or None when it can."""
    if not same_resource(ref.sheet_url, sheet_url):
        return f"drawn from another sheet, {ref.sheet_url}"
    if ref.w <= 0 or ref.h <= 0:
        return f"empty rectangle {ref.w}x{ref.h}"
    if ref.x < 0 or ref.y < 0 or ref.x + ref.w > size[0] or ref.y + ref.h > size[1]:
        return f"rectangle {ref.w}x{ref.h}+{ref.x}+{ref.y} lies outside the {size[0]}x{size[1]} sheet"
    return None


def write_sprites(slices: SheetSlices, output_root: str | Path) -> int:
    """Write each sprite's PNG and upscale; return how many files changed.

    A file whose bytes are already right is left alone, so a re-slice of an unchanged sheet writes
    nothing. A sprite that became blank or a duplicate loses the files it had.
    """
    root = Path(output_root)
    changed = 0
    for sprite in slices.sprites:
        if sprite.path is None:
            for stale in sprite_paths(sprite.kind, sprite.game_id, sprite.css_id, slices.upscale):
                if stale:
                    (root / stale).unlink(missing_ok=True)
            continue
        assert sprite.image is not None
        outputs = [(sprite.path, sprite.image)]
        if sprite.upscale_path:
            outputs.append((sprite.upscale_path, upscaled(sprite.image, slices.upscale)))
        for relative, image in outputs:
            data = png_bytes(image)
            target = root / relative
            if target.is_file() and target.read_bytes() == data:
                continue
            atomic_write(target, data)
            changed += 1
    return changed


def build_sprites(
    css: str | Stylesheet | None,
    rows: Iterable[ItemRow],
    sheet_bytes: bytes,
    sheet_url: str,
    sheet_sha1: str | None,
    output_root: str | Path,
    *,
    kind: str,
    base_url: str = "",
    upscale: int = DEFAULT_UPSCALE,
    known_originals: Mapping[str, str] | None = None,
    default_box: tuple[int, int] = DEFAULT_BOX,
    max_pixels: int = SHEET_MAX_PIXELS,
    resolved: SpriteResolution | None = None,
) -> SheetSlices:
    """:func:`slice_sheet`, then :func:`write_sprites` under ``output_root``: what a pipeline calls.

    The caller records ``[s.row() for s in result.sprites]`` with ``Catalog.record_sprite_sheet``
    and refreshes the card (``card.write_card``).
    """
    slices = slice_sheet(
        css, rows, sheet_bytes, sheet_url, sheet_sha1, kind=kind, base_url=base_url, upscale=upscale,
        known_originals=known_originals, default_box=default_box, max_pixels=max_pixels, resolved=resolved,
    )
    write_sprites(slices, output_root)
    return slices
