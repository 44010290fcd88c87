"""Which pictures an export takes, and what each is: the catalogue rows ``--where`` selects, filtered
by its rules, one per face with ``--crop``, each file checked (there, inside the crawl's folder,
readable, large enough), exact and near duplicates left out, and every picture given its class and
split. What is left out is listed with the reason, for the manifest.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image

from catalog.reading import (
    ROUND,
    SelectionError,
    catalog_updated,
    face_rows,
    open_read_only,
    picture_query,
    select_pictures,
    tag_translations,
)
from catalog.store import Catalog
from catalog.tags import TagIndex
from core.progress import progress_bar
from jobs.export_options import NO_TAG_CLASS, SINGLE_CLASS, UNLABELLED, ExportError, ExportOptions, NothingToExport, tag_list
from models.crops import Box, TooSmall, crop_box, face_box_problem, plan
from stages.decide import decide
from stages.dedup import Candidate, Duplicate, find_duplicates, phash_image, sha256_bytes

logger = logging.getLogger("jobs.export")

@dataclass
class Item:
    """One picture (or face crop) on its way into the export."""

    row: dict[str, Any]  # the selected columns of its images/artworks rows
    state: dict[str, Any]  # Catalog.curation_state: classifier, model tags, faces, Pixiv tags
    path: str  # the file as the catalogue stores it (relative to OUTPUT_DIR, or absolute)
    key: str  # its safe file stem in DEST, unique
    file: Path | None = None  # that file, resolved and checked to be inside the files folder
    face: dict[str, Any] | None = None  # the crop's box, in --faces mode
    label: str = ""
    split: str = ""
    sha256: str = ""
    phash: int = 0
    width: int = 0
    height: int = 0
    suffix: str = ".jpg"  # .jpg or .png: as stored; any other format is re-encoded to JPEG
    convert: bool = False
    region: Box | None = None  # --crop head/upper_body: the part of the picture exported
    focus: tuple[float, float] | None = None  # --fit crop: the point its square is centred on (the face)
    upscale: float = 1.0  # --size: how many times it is enlarged (1: not at all)

    @property
    def artwork_id(self) -> str:
        return str(self.row["artwork_id"])

    @property
    def order(self) -> tuple[str, int, int]:
        return (self.row["artwork_id"], self.row["page"], self.face["index"] if self.face else -1)


def safe_name(text: str, limit: int = 100) -> str:
    """A file or folder name that every file system and loader takes: letters (any script), digits,
    ``._-()``; anything else becomes ``_``."""
    name = re.sub(r"[^\w.\-()]+", "_", text).strip("._ ")[:limit]
    return name or "_"


def class_folders(labels: Iterable[str]) -> dict[str, str]:
    """Label -> folder name; labels that sanitise alike (or differ only by case) get -2, -3, ..."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for label in sorted(set(labels)):
        base = safe_name(label)
        name, n = base, 2
        while name.casefold() in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name.casefold())
        folders[label] = name
    return folders


def split_of(artwork_id: str, seed: int, split: Sequence[tuple[str, float]]) -> str:
    """The split of an artwork: a point in [0, 1) from sha256(seed, id), placed on the shares.

    A hash rather than a seeded shuffle, so an artwork's split depends on nothing but itself:
    new artworks in the catalogue never move the old ones between train and val.
    """
    digest = hashlib.sha256(f"{seed}\x00{artwork_id}".encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, share in split:
        edge += share
        if point < edge and share > 0:
            return name
    return [name for name, share in split if share > 0][-1]


def label_of(item: Item, class_from: str, wanted_tags: Sequence[str], translations: dict[str, str],
             tags: TagIndex | None = None) -> str:
    """The picture's class; with ``tags:`` the first wanted tag it has, aliases and implications counted."""
    if class_from == "classifier":
        return str(item.row["classifier_label"] or UNLABELLED)
    if class_from == "decision":
        return str(item.row["status"])
    if class_from == "none":
        return SINGLE_CLASS
    index = tags or TagIndex()  # an empty index: every tag is its own canonical tag
    names = [t["tag"] for t in item.state["record"]["model_tags"]]
    for tag in item.state["artwork"]["tags"]:
        names.append(tag["name"])
        if tag["name"] in translations:
            names.append(translations[tag["name"]])
    has = set().union(*(index.keys(name) for name in names)) if names else set()
    return next((t for t in wanted_tags if index.key(t) in has), NO_TAG_CLASS)


def inspect_file(item: Item, file: Path) -> str | None:
    """Fill in the item's hashes, size and output kind from its file; the reason it cannot be used, or None."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        return f"cannot read {item.path}: {exc.strerror or exc}"
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
            item.width, item.height = image.size
            item.phash = phash_image(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"not a readable picture: {item.path}: {exc}"
    item.sha256 = sha256_bytes(data)
    item.suffix = ".png" if kind == "PNG" else ".jpg"
    item.convert = kind not in ("JPEG", "PNG")
    return None


def shape_output(item: Item, file: Path, options: ExportOptions) -> str | None:
    """With --crop head/upper_body or --size: the part of the picture exported, its hashes and its final
    size; the reason it cannot be exported (too small for --size without enlarging it), or None.

    A crop's near-duplicate hash is of the crop, and its exact hash of (picture, box): two faces of
    one picture are two samples, one face of a re-posted picture is a duplicate.
    """
    faces = [item.face] if item.face else item.state["record"]["faces"] or []
    if options.crop in ("head", "upper_body"):
        assert item.face is not None  # a crop item is one face of its picture
        item.region = crop_box(options.crop, item.face, item.width, item.height)
        try:
            with Image.open(file) as image:
                item.phash = phash_image(image.crop(item.region))
        except (OSError, ValueError) as exc:
            return f"not a readable picture: {item.path}: {exc}"
        item.sha256 = sha256_bytes(f"{item.sha256}:{item.region}".encode())
    fit = options.fitting
    if fit is None:
        if item.region:
            item.width, item.height = item.region[2] - item.region[0], item.region[3] - item.region[1]
        return None
    left, top, right, bottom = item.region or (0, 0, item.width, item.height)
    if faces and options.crop != "face":  # the centre of the faces, for --fit crop's square
        item.focus = ((min(f["x"] for f in faces) + max(f["x"] + f["w"] for f in faces)) / 2,
                      (min(f["y"] for f in faces) + max(f["y"] + f["h"] for f in faces)) / 2)
    focus = None if item.focus is None else (item.focus[0] - left, item.focus[1] - top)
    try:
        steps = plan(right - left, bottom - top, fit, focus)
    except TooSmall as exc:
        return f"too small for --size {fit.size} --fit {fit.mode}: {exc}"
    item.width, item.height = steps.canvas
    item.upscale = max(1.0, steps.scale)
    return None


@dataclass
class Selected:
    """What an export read from the catalogue: its items, and what the manifest records of the read."""

    query: str  # the SQL that selected the rows
    rows: int  # how many rows it selected, before the rules and the faces
    updated: str | None  # the catalogue's newest change: the manifest's date
    translations: dict[str, str]  # Pixiv tag -> its English translation
    tags: TagIndex | None  # aliases and implications, as the crawl's rules see them
    items: list[Item]
    skipped: list[dict[str, str]]  # {"key", "reason"} of each picture left out so far
    model_characters: list[str] = field(default_factory=list)  # tags a tagger called Character, anywhere


def read_selection(db: Path, options: ExportOptions) -> Selected:
    """The selected pictures as items, read on a read-only connection (after ``Catalog`` has brought an
    older catalogue's columns up to date)."""
    catalog = Catalog(db)
    conn = open_read_only(db)
    try:
        query = picture_query(options.statuses, options.selection.sql, options.exclude_ai)
        try:
            rows = select_pictures(conn, query, options.where_timeout)
        except SelectionError as exc:
            raise ExportError(str(exc)) from None
        translations = tag_translations(conn)
        updated = catalog_updated(conn)
        faces = face_rows(conn) if options.faces else {}
        tags = TagIndex.load(conn) or None
        model_characters = [tag for (tag,) in conn.execute(
            "SELECT DISTINCT tag FROM image_tags WHERE lower(category) = 'character' ORDER BY tag")]
        skipped: list[dict[str, str]] = []
        items = _items(rows, catalog, options, faces, tags, skipped)
    finally:
        conn.close()
        catalog.close()
    if not items:
        raise NothingToExport("the selection matched no pictures" + ("" if options.crop == "none" else " with faces"))
    return Selected(query, len(rows), updated, translations, tags, items, skipped, model_characters)


def usable_items(items: list[Item], root: Path, options: ExportOptions, skipped: list[dict[str, str]]) -> list[Item]:
    """The items whose file is there, inside ``root``, readable and big enough for the crop and size
    asked; the others go into ``skipped`` with the reason. Refuses to go on with none left."""
    usable: list[Item] = []
    progress = progress_bar("export: reading", len(items), options.progress)
    for item in items:
        item.file = _file(root, item.path)
        if item.file:
            why = inspect_file(item, item.file) or shape_output(item, item.file, options)
        else:
            why = f"outside the crawl's folder {root}: {item.path!r}" if item.path else "no file in the catalogue"
        if why:
            logger.warning("export: skipped %s: %s", item.key, why)
            skipped.append({"key": item.key, "reason": why})
        else:
            usable.append(item)
        progress.update(1)
    progress.close()
    if not usable:  # an empty export must not replace a good DEST
        reasons = "; ".join(f"{s['key']}: {s['reason']}" for s in skipped[:3])
        raise NothingToExport(f"every selected picture was skipped ({len(skipped)}), nothing exported: {reasons}"
                          + (" ..." if len(skipped) > 3 else ""))
    return usable


def without_duplicates(usable: list[Item], phash_distance: int) -> tuple[list[Item], list[Duplicate]]:
    """The items to export, in catalogue order, and the duplicates left out (in the same order): the
    largest copy of a duplicated picture is the one exported."""
    by_key = {item.key: item for item in usable}
    ranked = sorted(usable, key=lambda item: (-item.width * item.height, item.order))
    kept, duplicates = find_duplicates((Candidate(item.key, item.sha256, item.phash) for item in ranked), phash_distance)
    chosen = sorted((by_key[c.key] for c in kept), key=lambda item: item.order)
    return chosen, sorted(duplicates, key=lambda d: by_key[d.key].order)


def label_and_split(chosen: list[Item], options: ExportOptions, translations: dict[str, str],
                     tags: TagIndex | None) -> tuple[str, dict[str, str], dict[str, int]]:
    """Give every item its class and split. Returns where the classes came from (``auto`` resolved),
    the class folders (label -> folder) and the number each class gets from loaders that sort the
    folder names (ImageFolder, Keras)."""
    class_from = options.class_from
    if class_from == "auto":
        class_from = "classifier" if any(item.row["classifier_label"] for item in chosen) else "none"
    wanted_tags = tag_list(class_from) if class_from.startswith("tags:") else []
    for item in chosen:
        item.label = label_of(item, "tags" if wanted_tags else class_from, wanted_tags, translations, tags)
        item.split = split_of(item.artwork_id, options.seed, options.split)
    folders = class_folders(item.label for item in chosen)
    class_index = {label: n for n, label in enumerate(sorted(folders, key=folders.__getitem__))}
    return class_from, folders, class_index


def _items(rows: list[dict[str, Any]], catalog: Catalog, options: ExportOptions,
           faces: dict[tuple[str, int], list[dict[str, Any]]], tags: TagIndex | None = None,
           skipped: list[dict[str, str]] | None = None) -> list[Item]:
    """The selected rows as items: filtered by the rules, expanded to one item per face with --crop
    (the stored crop file for face; the picture itself, cut at export time, for head and upper_body).
    A picture without a face is listed in ``skipped``, with the reason."""
    items: list[Item] = []
    for row in rows:
        state = catalog.curation_state(row["artwork_id"], row["page"])
        if options.selection.rules is not None:
            action, _why = decide(state["record"], state["artwork"], options.selection.rules, options.selection.default,
                                  tags)
            if action != "keep":
                continue
        stem = safe_name(f"{row['artwork_id']}_p{row['page']}")
        if options.crop == "none":
            items.append(Item(row=row, state=state, path=row["path"], key=stem))
            continue
        if options.crop == "face":
            boxes = faces.get((row["artwork_id"], row["page"]), [])
        else:  # every stored box, with or without a crop file: the picture is cut here
            boxes = [{"index": b["index"], "path": b["path"], "x": b["x"], "y": b["y"], "w": b["w"], "h": b["h"],
                      "score": None if b["score"] is None else round(b["score"], ROUND)}
                     for b in state["record"]["faces"] or []]
        if not boxes:
            never = state["record"]["faces"] is None
            why = "the face stage never ran on it (scrapy curate --stages faces)" if never else "no face found on it"
            logger.info("export: skipped %s: %s", stem, why)
            if skipped is not None:
                skipped.append({"key": stem, "reason": why})
        for face in boxes:
            key = f"{stem}_f{face['index']}"
            problem = face_box_problem(face, row["width"], row["height"])
            if problem:
                logger.warning("export: skipped %s: %s", key, problem)
                if skipped is not None:
                    skipped.append({"key": key, "reason": problem})
                continue
            path = face["path"] if options.crop == "face" else row["path"]
            items.append(Item(row=row, state=state, path=path, key=key, face=face))
    keys = Counter(item.key for item in items)
    clashes = [key for key, n in keys.items() if n > 1]
    if clashes:
        raise ExportError(f"artwork ids that differ only in unsafe characters give the same file name: {clashes[:5]}")
    return items


def _file(root: Path, stored: str | None) -> Path | None:
    """The picture's file, symlinks resolved; None when that is outside ``root`` (a catalogue row
    or a link that points at ``../..`` or ``/etc``), or when the row has no path."""
    if not stored:
        return None
    base = root.resolve()
    file = (base / stored).resolve()  # an absolute stored path replaces base
    return file if file.is_relative_to(base) else None
