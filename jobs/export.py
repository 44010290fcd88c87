"""Export the catalogue's pictures as a training data set: the library under ``scrapy export``.

A crawl's ``images/`` folder is not a data set: it holds dropped and duplicate pictures, no split,
no classes, no captions. This module turns a selection of the catalogue into one of four layouts
that training code reads as they are:

* ``imagefolder``: ``DEST/{split}/{class}/{key}.jpg``, for torchvision's ``ImageFolder`` and
  ``tf.keras.utils.image_dataset_from_directory`` (JPEG and PNG only: Keras reads no WebP).
* ``kohya``: kohya-ss sd-scripts' DreamBooth layout ``DEST/{split}/{repeats}_{trigger} {class}/{key}.jpg``
  with ``{key}.txt`` tag captions, ``DEST/dataset.toml`` (its ``--dataset_config``) over the train
  folders, and its fine-tune metadata ``DEST/meta_cap_{split}.json`` (both methods work from one export).
* ``hf``: a Hugging Face ``imagefolder``: ``DEST/{split}/{key}.jpg`` and one ``metadata.jsonl`` per
  split (``file_name``, label, caption, tags and their scores, classifier result).
* ``webdataset``: tar shards ``DEST/{split}-{n:06d}.tar`` of ``{key}.cls/.jpg/.json/.txt``.

Every export writes ``DEST/manifest.json``: what was selected and how, the counts per split and
class, every duplicate and skipped picture, and the model versions behind the labels and tags.

The same catalogue, options and seed give byte-identical output: rows in a fixed order, image
bytes copied as stored (only non-JPEG/PNG pictures, i.e. ugoira WebP, are re-encoded: their first
frame as JPEG, deterministic for one Pillow version; ``--crop`` head/upper_body and ``--size``
re-encode what they cut or resize, as models/crops.py does, alike), JSON with sorted keys, tar members with fixed
metadata, and no clock: the manifest's date is the catalogue's newest change, not "now". The split
is by artwork, from a hash of (seed, artwork id): pages of one artwork never straddle two splits,
and adding artworks to the catalogue never moves the ones already there.

The export is built in a hidden folder beside DEST and renamed into place at the end, so a killed
export leaves DEST as it was; an export that could use none of its pictures never replaces DEST.
DEST is never one of the crawl's own folders (``images/``, ``originals/``, ...) nor holds them: a
``--force`` there would delete the pictures the catalogue points at.

The catalogue is only read. A ``--where`` SQL expression is checked to be one expression (it cannot
close the parentheses it is wrapped in), runs on a read-only connection whose authorizer lets it
read only the picture and tag tables, and is stopped after ``EXPORT_WHERE_TIMEOUT`` seconds. A
picture whose path resolves outside the crawl's files folder is skipped, with the reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import tarfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from PIL import Image

from catalog.reading import (
    ROUND,
    STATUSES,
    WHERE_TIMEOUT,
    SelectionError,
    catalog_updated,
    check_one_expression,
    face_rows,
    open_read_only,
    picture_query,
    select_pictures,
    tag_translations,
)
from catalog.store import Catalog
from catalog.tags import TagIndex, normalise
from core.storage import CRAWL_FOLDERS, catalog_path, output_dir
from models.crops import CROP_KINDS, FITS, RATIOS, Box, Fit, TooSmall, crop_box, encode, parse_colour, plan, render
from models.imaging import flatten_on_white
from models.inference import Progress
from stages.decide import RuleError, check_rules, decide, read_rules_file
from stages.dedup import Candidate, Duplicate, find_duplicates, phash_image, sha256_bytes

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


FORMATS = ("imagefolder", "kohya", "hf", "webdataset")
SPLIT_NAMES = ("train", "val", "test")
CLASS_SOURCES = ("auto", "classifier", "decision", "none", "tags:")
UNLABELLED = "unlabelled"  # class of a picture the classifier never saw (--class-from classifier)
NO_TAG_CLASS = "other"  # class of a picture with none of the --class-from tags
SINGLE_CLASS = "all"  # the one class of --class-from none
MANIFEST_NAME = "manifest.json"
CROP_NOUNS = {"none": "pictures", "face": "face crops", "head": "head crops", "upper_body": "upper-body crops"}
KOHYA_CONFIG = "dataset.toml"  # sd-scripts' --dataset_config, written by the kohya format
UNDERSCORE_STYLES = ("keep", "space")  # --caption-underscores
KOHYA_REPEATS = 10  # EXPORT_KOHYA_REPEATS default: num_repeats of one class (of the largest, when balancing)
KOHYA_BALANCE_CAP = 4  # a balanced class is repeated at most this many times EXPORT_KOHYA_REPEATS
KAOMOJI_LENGTH = 3  # tags this short keep their underscores (^_^, >_<), as sd-scripts' WD14 tagger does
TEMP_SUFFIX = ".export.part"  # the hidden folder an export is built in, beside DEST
TAR_MTIME = 0  # every tar member's mtime: a re-export must be byte-identical

logger = logging.getLogger(__name__)


class ExportError(ValueError):
    """An export that cannot be made (bad option, unsafe DEST, empty selection); the message says why."""


# --- options --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What ``--where`` asked for: nothing, a SQL expression, or curation rules."""

    text: str | None = None
    sql: str | None = None
    rules: list[dict[str, Any]] | None = None
    default: str = "drop"  # rules: what happens to a picture no rule matches

    def as_dict(self) -> dict[str, Any]:
        kind = "sql" if self.sql else "rules" if self.rules else None
        out: dict[str, Any] = {"kind": kind, "where": self.text}
        if self.rules:
            out |= {"rules": self.rules, "default": self.default}
        return out


@dataclass(frozen=True)
class ExportOptions:
    dest: Path
    format: str = "imagefolder"
    selection: Selection = Selection()
    split: tuple[tuple[str, float], ...] = (("train", 0.9), ("val", 0.1))
    seed: int = 0
    faces: bool = False
    class_from: str = "auto"
    statuses: tuple[str, ...] = ("kept",)
    force: bool = False
    progress: bool = True
    phash_distance: int = 6
    shard_size: int = 1000
    trigger_word: str = ""
    jpeg_quality: int = 92
    classifier_model: str = ""
    where_timeout: float = WHERE_TIMEOUT  # seconds the picture query (with --where) may run
    # Captions (every format; kohya's defaults differ: underscores as spaces, characters first).
    caption_underscores: str = ""  # keep | space; empty: space for kohya, keep for the others
    undesired_tags: tuple[str, ...] = ()  # left out of captions, compared by catalog.tags.normalise
    rating_tags: bool = True  # False: rating tags (rating:safe, a "Rating" category) left out of captions
    # kohya: num_repeats per class folder (None: EXPORT_KOHYA_REPEATS, balanced over several classes),
    # and dataset.toml's resolution and batch size.
    repeats: int | None = None
    repeats_base: int = KOHYA_REPEATS
    kohya_resolution: int = 512
    kohya_batch_size: int = 1
    # Crops and one training size (models/crops.py). crop: none, face (the stored face crops, what
    # --faces does), head or upper_body (cut from the stored picture around each stored face box).
    crop: str = "none"
    size: int | None = None  # --size: None exports the pictures at their own size
    fit: str = "resize"  # pad | crop | resize
    pad_colour: str = "white"  # a colour name or #rrggbb, or edge
    multiple: int = 64  # resize: both sides cut down to a multiple of this
    max_upscale: float = 1.0  # no picture is enlarged more than this (1: never)

    @property
    def fitting(self) -> Fit | None:
        """The --size alignment, or None."""
        if self.size is None:
            return None
        return Fit(self.size, self.fit, parse_colour(self.pad_colour), self.multiple, self.max_upscale)

    @classmethod
    def from_settings(cls, settings: BaseSettings, dest: str | os.PathLike[str], **given: Any) -> ExportOptions:
        """Options from the EXPORT_* settings, then those ``given`` (the command line) on top."""
        options = cls(
            dest=Path(dest),
            phash_distance=settings.getint("EXPORT_PHASH_DISTANCE", 6),
            shard_size=settings.getint("EXPORT_SHARD_SIZE", 1000),
            trigger_word=(settings.get("EXPORT_TRIGGER_WORD") or "").strip(),
            jpeg_quality=settings.getint("JPEG_QUALITY", 92),
            classifier_model=settings.get("CLASSIFIER_MODEL") or "",
            where_timeout=settings.getfloat("EXPORT_WHERE_TIMEOUT", WHERE_TIMEOUT),
            undesired_tags=tuple(t.strip() for t in settings.getlist("EXPORT_UNDESIRED_TAGS") if t.strip()),
            repeats_base=settings.getint("EXPORT_KOHYA_REPEATS", KOHYA_REPEATS),
            kohya_resolution=settings.getint("EXPORT_KOHYA_RESOLUTION", 512),
            kohya_batch_size=settings.getint("EXPORT_KOHYA_BATCH_SIZE", 1),
        )
        alignment = [f"--{k.replace('_', '-')}" for k in ("fit", "pad_colour", "multiple", "max_upscale")
                     if given.get(k) is not None]
        if alignment and given.get("size") is None:
            raise ExportError(f"{', '.join(alignment)} needs --size N")
        options = replace(options, **{k: v for k, v in given.items() if v is not None})
        if given.get("statuses") is None and options.class_from == "decision":
            options = replace(options, statuses=STATUSES)  # kept vs dropped needs both
        return options.checked()

    def checked(self) -> ExportOptions:
        if self.format not in FORMATS:
            raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if not (self.class_from in CLASS_SOURCES[:-1] or (self.class_from.startswith("tags:") and tag_list(self.class_from))):
            raise ExportError(f"--class-from must be auto, classifier, decision, none or tags:TAG,TAG..., not {self.class_from!r}")
        unknown = set(self.statuses) - set(STATUSES)
        if unknown or not self.statuses:
            raise ExportError(f"--status must list kept and/or dropped, not {','.join(self.statuses)!r}")
        if self.shard_size < 1:
            raise ExportError(f"EXPORT_SHARD_SIZE must be at least 1, not {self.shard_size}")
        if not self.where_timeout > 0:
            raise ExportError(f"EXPORT_WHERE_TIMEOUT must be a positive number of seconds, not {self.where_timeout}")
        underscores = self.caption_underscores or ("space" if self.format == "kohya" else "keep")
        if underscores not in UNDERSCORE_STYLES:
            raise ExportError(f"--caption-underscores must be keep or space, not {underscores!r}")
        for name, value in (("--repeats", self.repeats), ("EXPORT_KOHYA_REPEATS", self.repeats_base),
                            ("EXPORT_KOHYA_BATCH_SIZE", self.kohya_batch_size)):
            if value is not None and value < 1:
                raise ExportError(f"{name} must be at least 1, not {value}")
        if self.kohya_resolution < 64:
            raise ExportError(f"EXPORT_KOHYA_RESOLUTION must be at least 64 (pixels), not {self.kohya_resolution}")
        if self.crop not in CROP_KINDS:
            raise ExportError(f"--crop must be one of {', '.join(CROP_KINDS)}, not {self.crop!r}")
        if self.faces and self.crop not in ("none", "face"):
            raise ExportError(f"--faces is --crop face: give one of --faces and --crop {self.crop}")
        crop = "face" if self.faces else self.crop
        if self.size is not None:
            if self.fit not in FITS:
                raise ExportError(f"--fit must be one of {', '.join(FITS)}, not {self.fit!r}")
            for name, value in (("--size", self.size), ("--multiple", self.multiple)):
                if value < 1:
                    raise ExportError(f"{name} must be at least 1 (pixels), not {value}")
            if not self.max_upscale >= 1:
                raise ExportError(f"--max-upscale must be 1 (never enlarge) or more, not {self.max_upscale}")
            try:
                parse_colour(self.pad_colour)
            except ValueError:
                raise ExportError(f"--pad-colour must be a colour (white, #808080) or edge, not {self.pad_colour!r}") from None
        return replace(self, statuses=tuple(sorted(set(self.statuses))), caption_underscores=underscores,
                       crop=crop, faces=crop == "face")


def parse_split(text: str) -> tuple[tuple[str, float], ...]:
    """``"0.9,0.1"`` -> ((train, 0.9), (val, 0.1)); three parts add test. Shares are normalised."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        shares = [float(p) for p in parts]
    except ValueError:
        raise ExportError(f"--split must be 2 or 3 comma-separated numbers (train,val[,test]), not {text!r}") from None
    if not 2 <= len(shares) <= 3 or any(s < 0 or s != s for s in shares) or sum(shares) <= 0:
        raise ExportError(f"--split must be 2 or 3 non-negative numbers with a positive sum, not {text!r}")
    total = sum(shares)
    return tuple((name, share / total) for name, share in zip(SPLIT_NAMES, shares))


def parse_statuses(text: str) -> tuple[str, ...]:
    return tuple(sorted({s.strip() for s in text.split(",") if s.strip()}))


def parse_tags(text: str | None) -> tuple[str, ...] | None:
    """``--undesired-tags a,b`` -> ("a", "b"); None (not given) stays None, so the setting applies."""
    if text is None:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def tag_list(class_from: str) -> list[str]:
    return [t.strip() for t in class_from.removeprefix("tags:").split(",") if t.strip()]


def parse_where(text: str | None) -> Selection:
    """``--where``: curation rules (JSON/YAML inline, or a .json/.yaml/.yml file) or a SQL expression.

    Text starting with ``{`` or ``[`` is rules, in the form of ``CURATE_RULES`` (stages/decide.py);
    a rule without ``action`` means keep. A picture is exported when the first rule that matches
    says keep; one that no rule matches is exported only when every rule is a drop rule (so
    ``{"if": "classifier", "min": 0.8}`` exports the matches and ``{"action": "drop", "if": "r18"}``
    exports everything else). Anything else is one SQL boolean expression over ``images i`` and
    ``artworks a``; ``;`` is refused (one expression, never a statement), and so is text that would
    close or leave open the parentheses the query wraps it in.
    """
    if text is None or not text.strip():
        return Selection()
    text = text.strip()
    if text[0] in "{[":
        import yaml  # JSON is YAML too; YAML lets a hand-written rule skip the quotes

        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ExportError(f"--where looks like a rule but is not valid JSON/YAML: {exc}") from None
        return _rule_selection(text, loaded)
    if Path(text).suffix.lower() in (".json", ".yaml", ".yml") and Path(text).is_file():
        try:
            return _rule_selection(text, read_rules_file(text))
        except RuleError as exc:
            raise ExportError(str(exc)) from None
    if ";" in text:
        raise ExportError("--where is one SQL expression over images i and artworks a; ';' is refused")
    try:
        check_one_expression(text)
    except SelectionError as exc:
        raise ExportError(str(exc)) from None
    return Selection(text=text, sql=text)


def _rule_selection(text: str, loaded: Any) -> Selection:
    rules = [loaded] if isinstance(loaded, dict) else loaded
    if not isinstance(rules, list):
        raise ExportError(f"--where rules must be a rule object or a list of them, not {type(loaded).__name__}")
    rules = [{"action": "keep", **rule} if isinstance(rule, dict) else rule for rule in rules]
    try:
        check_rules(rules)
    except RuleError as exc:
        raise ExportError(f"--where: {exc}") from None
    default = "keep" if all(rule["action"] == "drop" for rule in rules) else "drop"
    return Selection(text=text, rules=rules, default=default)


# --- reading the catalogue ------------------------------------------------------------------------


# --- the pictures of an export --------------------------------------------------------------------


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

    @property
    def artwork_id(self) -> str:
        return self.row["artwork_id"]

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
        return item.row["classifier_label"] or UNLABELLED
    if class_from == "decision":
        return item.row["status"]
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


@dataclass(frozen=True)
class CaptionStyle:
    """How captions are written; the default is the plain one (imagefolder, hf, webdataset as before)."""

    underscores: str = "keep"  # space: long_hair -> long hair (tags longer than KAOMOJI_LENGTH)
    undesired: frozenset[str] = frozenset()  # keys (normalise, and canonical through aliases) left out
    rating_tags: bool = True
    characters_first: bool = False  # kohya: character tags right after the trigger word
    characters: frozenset[str] = frozenset()  # keys of the tags known as characters (a model's Character tags)
    index: TagIndex = field(default_factory=TagIndex)  # aliases and implications, to match tags by key
    merge_aliases: bool = False  # kohya: two names of one tag (モナ, mona_(genshin_impact)) written once

    @classmethod
    def of(cls, options: ExportOptions, index: TagIndex | None = None,
           items: Iterable[Item] = ()) -> CaptionStyle:
        """The style of an export; kohya puts characters first: those the tagger calls Character in
        any exported picture, and the Pixiv tags that are one of them (through an alias)."""
        index = index or TagIndex()
        kohya = options.format == "kohya"
        characters = {index.key(t["tag"]) for item in items for t in item.state["record"]["model_tags"]
                      if is_character(t)} if kohya else set()
        undesired = {k for tag in options.undesired_tags for k in (normalise(tag), index.key(tag))}
        return cls(underscores=options.caption_underscores or ("space" if kohya else "keep"),
                   undesired=frozenset(undesired), rating_tags=options.rating_tags, characters_first=kohya,
                   characters=frozenset(characters), index=index, merge_aliases=kohya)


def is_character(tag: dict[str, Any]) -> bool:
    return str(tag.get("category") or "").casefold() == "character"


def is_rating(tag: str, category: str | None) -> bool:
    """DeepDanbooru's ``rating:safe`` (a System tag), or any tag of a tagger's Rating category (WD14)."""
    return str(category or "").casefold() == "rating" or normalise(tag).startswith("rating:")


def caption_tags(item: Item, trigger_word: str, translations: dict[str, str],
                 style: CaptionStyle = CaptionStyle()) -> list[str]:
    """Trigger word, then model tags by score, then Pixiv tags (English when known): once each.

    By default underscores stay (``long_hair``), as DeepDanbooru writes them; ``style`` turns them into
    spaces (``long hair``, as anime LoRA captions and sd-scripts' ``--remove_underscore`` write them),
    puts character tags before the others, and leaves out undesired and rating tags. A comma inside a
    tag would split it, so it becomes a space.
    """
    index = style.index
    candidates: list[tuple[str, tuple[str, ...], bool]] = []  # (as written, the names it goes by, a character?)
    for tag in item.state["record"]["model_tags"]:  # score descending, then name
        if style.rating_tags or not is_rating(tag["tag"], tag.get("category")):
            candidates.append((tag["tag"], (tag["tag"],), is_character(tag)))
    for tag in item.state["artwork"]["tags"]:  # Pixiv's order
        written = translations.get(tag["name"]) or tag["name"]
        names = (tag["name"], written)
        if style.rating_tags or not is_rating(written, None):
            known = bool(style.characters) and any(index.key(n) in style.characters for n in names)
            candidates.append((written, names, known))
    if style.characters_first:
        candidates.sort(key=lambda c: not c[2])  # stable: each group keeps its order

    tags: list[str] = []
    seen: set[str] = set()

    def add(tag: str, names: Sequence[str] = (), trigger: bool = False) -> None:
        if not trigger:
            if style.undesired and style.undesired & {k for n in names for k in (normalise(n), index.key(n))}:
                return
            if style.underscores == "space" and len(tag) > KAOMOJI_LENGTH:
                tag = tag.replace("_", " ")
        tag = " ".join(tag.replace(",", " ").split())
        if style.merge_aliases:  # any name of a tag already written: the same tag
            keys = {index.key(n) for n in (*names, tag)}
        else:  # as before: by case only (space: long hair and long_hair are one)
            keys = {normalise(tag) if style.underscores == "space" else tag.casefold()}
        if tag and not keys & seen:
            seen.update(keys)
            tags.append(tag)

    add(trigger_word, trigger=True)  # never undesired, and written as given
    for tag, names, _character in candidates:
        add(tag, names)
    return tags


def sample_metadata(item: Item, caption: str, translations: dict[str, str]) -> dict[str, Any]:
    """What hf's metadata.jsonl and webdataset's .json say about a sample (the same keys in every row)."""
    record, artwork = item.state["record"], item.state["artwork"]
    model_tags = record["model_tags"]
    classifier = record["classifier"]
    return {
        "artwork_id": item.row["artwork_id"],
        "page": item.row["page"],
        "face": None if item.face is None else {k: v for k, v in item.face.items() if k != "path"},
        "label": item.label,
        "caption": caption,
        "tags": [t["tag"] for t in model_tags],
        "tag_scores": [round(t["score"], ROUND) for t in model_tags],
        "tag_categories": [t["category"] for t in model_tags],
        "tagger": model_tags[0]["model"] if model_tags else None,
        "pixiv_tags": [t["name"] for t in artwork["tags"]],
        "pixiv_tags_en": [translations.get(t["name"]) for t in artwork["tags"]],
        "classifier": None if classifier is None else {
            "label": classifier["label"], "target": classifier["target"], "model": classifier["model"],
            "score": None if classifier["score"] is None else round(classifier["score"], ROUND),
        },
        "status": item.row["status"],
        "title": item.row["title"],
        "user_id": item.row["user_id"],
        "x_restrict": item.row["x_restrict"],
        "ai_type": item.row["ai_type"],
        "width": item.width,
        "height": item.height,
        "sha256": item.sha256,
    }


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


def output_bytes(item: Item, file: Path, jpeg_quality: int) -> bytes:
    """The picture's bytes as exported: as stored, or (WebP, GIF, ...) its first frame as a JPEG."""
    data = file.read_bytes()
    if not item.convert:
        return data
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        out = io.BytesIO()
        flatten_on_white(image).convert("RGB").save(out, "JPEG", quality=jpeg_quality)
        return out.getvalue()


def shape_output(item: Item, file: Path, options: ExportOptions) -> str | None:
    """With --crop head/upper_body or --size: the part of the picture exported, its hashes and its final
    size; the reason it cannot be exported (too small for --size without enlarging it), or None.

    A crop's near-duplicate hash is of the crop, and its exact hash of (picture, box): two faces of
    one picture are two samples, one face of a re-posted picture is a duplicate.
    """
    faces = [item.face] if item.face else item.state["record"]["faces"] or []
    if options.crop in ("head", "upper_body"):
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
    return None


def export_bytes(item: Item, file: Path, options: ExportOptions) -> bytes:
    """The exported bytes: as stored (output_bytes), or cut to the item's region and brought to --size,
    then encoded as the picture was (PNG stays PNG, the rest JPEG at JPEG_QUALITY)."""
    fit = options.fitting
    if item.region is None and fit is None:
        return output_bytes(item, file, options.jpeg_quality)
    image = render(file.read_bytes(), item.region, fit, item.focus)
    return encode(image, "PNG" if item.suffix == ".png" else "JPEG", options.jpeg_quality)


class ThrottledProgress:
    """The shared progress bar, redrawn at most ten times a second: once per picture floods a log."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.bar = Progress(label, total, enabled)
        self.pending = 0
        self.drawn_at = 0.0

    def update(self, count: int = 1) -> None:
        self.pending += count
        now = time.monotonic()
        if now - self.drawn_at >= 0.1 or self.bar.done + self.pending >= self.bar.total:
            self.bar.update(self.pending)
            self.pending, self.drawn_at = 0, now

    def close(self) -> None:
        if self.pending:
            self.bar.update(self.pending)
        self.bar.close()


def dump_json(value: Any, indent: int | None = 2) -> str:
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(value, sort_keys=True, ensure_ascii=False, indent=indent, separators=separators)


# --- writers --------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Writes the samples of one export into ``root`` (the hidden build folder)."""

    root: Path
    options: ExportOptions
    folders: dict[str, str]  # label -> class folder
    class_index: dict[str, int]  # label -> the class number ImageFolder-style loaders give it
    translations: dict[str, str]
    files: Callable[[Item], bytes]
    style: CaptionStyle = field(default_factory=CaptionStyle)
    kohya: dict[str, KohyaSubset] = field(default_factory=dict)  # label -> its sd-scripts subset
    kohya_written: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # split -> labels

    def put(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def caption(self, item: Item) -> str:
        return ", ".join(caption_tags(item, self.options.trigger_word, self.translations, self.style))

    def write(self, split: str, items: Sequence[Item], progress: ThrottledProgress) -> None:
        fmt = self.options.format
        if fmt == "imagefolder":
            for item in items:
                self.put(f"{split}/{self.folders[item.label]}/{item.key}{item.suffix}", self.files(item))
                progress.update(1)
        elif fmt == "kohya":
            self.write_kohya(split, items, progress)
        elif fmt == "hf":
            self.write_hf(split, items, progress)
        else:
            self.write_webdataset(split, items, progress)

    def write_kohya(self, split: str, items: Sequence[Item], progress: ThrottledProgress) -> None:
        """Pictures and .txt captions in sd-scripts' ``{repeats}_{trigger} {class}`` folders, and its
        fine-tune metadata, keyed by ``{folder}/{stem}``: with ``image_dir = DEST/{split}`` it finds
        each picture as ``image_dir/key.jpg``.

        sd-scripts trains on ``caption + ", " + tags`` (or ``tags`` alone without a caption), so the
        trigger word goes in ``caption`` and the rest in ``tags``: what it trains on is the .txt.
        """
        metadata: dict[str, dict[str, str]] = {}
        for item in items:
            tags = caption_tags(item, self.options.trigger_word, self.translations, self.style)
            stem = f"{self.kohya[item.label].folder}/{item.key}"
            self.put(f"{split}/{stem}{item.suffix}", self.files(item))
            self.put(f"{split}/{stem}.txt", ", ".join(tags).encode("utf-8"))
            self.kohya_written[split].add(item.label)
            trigger = self.options.trigger_word and tags and tags[0] == self.options.trigger_word
            metadata[stem] = (
                {"caption": tags[0], "tags": ", ".join(tags[1:])} if trigger else {"tags": ", ".join(tags)}
            )
            progress.update(1)
        self.put(f"meta_cap_{split}.json", (dump_json(metadata) + "\n").encode("utf-8"))

    def write_kohya_config(self, dest: Path) -> str | None:
        """``dataset.toml``: sd-scripts' ``--dataset_config`` for the train split, one DreamBooth subset
        per class folder. ``image_dir`` is absolute (sd-scripts reads a relative one from its working
        folder), so the file names DEST as given; the config's name, or None without train pictures."""
        split = SPLIT_NAMES[0]
        labels = sorted(self.kohya_written.get(split, ()))
        if not labels:
            logger.warning("export: no picture in the %s split, so no %s (sd-scripts trains on %s only)",
                           split, KOHYA_CONFIG, split)
            return None
        lines = [
            "# kohya-ss sd-scripts dataset config, written by `scrapy export --format kohya`:",
            "#   accelerate launch train_network.py --dataset_config dataset.toml ...",
            "# One DreamBooth (caption) subset per class folder of the train split. Move DEST: re-export it.",
            "[general]",
            "shuffle_caption = true",
            f"caption_extension = {toml_string('.txt')}",
            f"keep_tokens = {1 if self.options.trigger_word else 0}  # the trigger word stays first",
            "enable_bucket = true",
            "",
            "[[datasets]]",
            f"resolution = {self.options.kohya_resolution}",
            f"batch_size = {self.options.kohya_batch_size}",
        ]
        for label in labels:
            subset = self.kohya[label]
            lines += [
                "",
                "  [[datasets.subsets]]",
                f"  image_dir = {toml_string(str(dest / split / subset.folder))}",
                f"  num_repeats = {subset.num_repeats}",
                f"  class_tokens = {toml_string(subset.class_tokens)}",
            ]
        self.put(KOHYA_CONFIG, ("\n".join(lines) + "\n").encode("utf-8"))
        return KOHYA_CONFIG

    def write_hf(self, split: str, items: Sequence[Item], progress: ThrottledProgress) -> None:
        lines = []
        for item in items:
            file_name = f"{item.key}{item.suffix}"
            self.put(f"{split}/{file_name}", self.files(item))
            lines.append(dump_json({"file_name": file_name, **sample_metadata(item, self.caption(item), self.translations)}, None))
            progress.update(1)
        self.put(f"{split}/metadata.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))

    def write_webdataset(self, split: str, items: Sequence[Item], progress: ThrottledProgress) -> None:
        size = self.options.shard_size
        for shard, start in enumerate(range(0, len(items), size)):
            path = self.root / f"{split}-{shard:06d}.tar"
            with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
                for item in items[start:start + size]:
                    caption = self.caption(item)
                    members = {
                        f"{item.key}.cls": f"{self.class_index[item.label]}\n".encode(),
                        f"{item.key}{item.suffix}": self.files(item),
                        f"{item.key}.json": dump_json(sample_metadata(item, caption, self.translations), None).encode("utf-8"),
                        f"{item.key}.txt": caption.encode("utf-8"),
                    }
                    for name in sorted(members):
                        add_tar_member(tar, name, members[name])
                    progress.update(1)


@dataclass(frozen=True)
class KohyaSubset:
    """One class of a kohya export: its folder ``{num_repeats}_{class_tokens}`` (sanitised) in each split."""

    folder: str
    num_repeats: int
    class_tokens: str  # "trigger class": what sd-scripts trains a picture on when its .txt is missing


def kohya_subsets(counts: Counter[str], folders: dict[str, str], options: ExportOptions) -> dict[str, KohyaSubset]:
    """Each class's subset. ``--repeats N`` gives every class N; else one class gets EXPORT_KOHYA_REPEATS,
    and several are balanced: the largest gets EXPORT_KOHYA_REPEATS and each other one
    ``round(that * largest / its count)``, so every class is seen about as often per epoch, up to
    ``KOHYA_BALANCE_CAP`` times EXPORT_KOHYA_REPEATS (one stray picture is not repeated hundreds of times)."""
    largest = max(counts.values())
    subsets = {}
    for label, count in sorted(counts.items()):
        if options.repeats:
            repeats = options.repeats
        elif len(counts) == 1:
            repeats = options.repeats_base
        else:
            balanced = max(1, round(options.repeats_base * largest / count))
            repeats = min(balanced, KOHYA_BALANCE_CAP * options.repeats_base)
        trigger = options.trigger_word
        named = label != SINGLE_CLASS or not trigger  # one class 'all' under a trigger: the trigger alone
        tokens = " ".join(w for w in (trigger, label if named else "") if w)
        folder = " ".join(w for w in (safe_name(trigger) if trigger else "", folders[label] if named else "") if w)
        subsets[label] = KohyaSubset(f"{repeats}_{folder}", repeats, tokens)
    return subsets


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, and DEL, which JSON leaves raw, is escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A regular file with fixed metadata, so that the same bytes make the same tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


# --- destination ----------------------------------------------------------------------------------


def prepare_destination(dest: Path, force: bool, protected: Sequence[Path], crawl_folders: Sequence[Path] = ()) -> Path:
    """Check DEST can be written, and make the hidden build folder beside it.

    DEST may neither hold a ``protected`` path (the catalogue, OUTPUT_DIR, the files folder) nor lie
    in one of the ``crawl_folders``: replacing it (``--force``) would delete the crawl's pictures.
    Both are compared with symlinks resolved, so a link to ``images/`` is ``images/``.
    """
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest} exists and is not a folder")
    resolved = dest.resolve()
    for folder in crawl_folders:
        if resolved.is_relative_to(folder.resolve()):  # the folder itself too
            raise ExportError(f"{dest} is inside the crawl's own folder {folder}: export somewhere else")
    for path in [*protected, *crawl_folders]:
        if path.resolve().is_relative_to(resolved):
            raise ExportError(f"{dest} holds {path}: export somewhere else")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise ExportError(f"{dest} is not empty; --force replaces it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for leftover in dest.parent.glob(f".{glob_escape(dest.name)}.*{TEMP_SUFFIX}"):  # a killed export's
        shutil.rmtree(leftover, ignore_errors=True)
    build = dest.parent / f".{dest.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    build.mkdir()
    return build


def move_into_place(build: Path, dest: Path) -> None:
    """Rename the finished export onto DEST; an old DEST (``--force``) is moved aside, then deleted."""
    if dest.is_dir() and any(dest.iterdir()):
        old = build.with_name(build.name.replace(TEMP_SUFFIX, ".old" + TEMP_SUFFIX))
        os.replace(dest, old)
        os.replace(build, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(build, dest)  # over an empty folder too (POSIX rename)


# --- the export -----------------------------------------------------------------------------------


@dataclass
class ExportResult:
    dest: Path
    manifest: dict[str, Any] = field(repr=False)

    def lines(self) -> list[str]:
        m = self.manifest
        splits = ", ".join(f"{name} {m['totals'][name]}" for name in m["split"] if name in m["totals"])
        exact = sum(1 for d in m["duplicates"] if d["kind"] == "exact")
        return [
            f"Exported {m['total']} {CROP_NOUNS[m['crop']['kind']]} ({splits}) as {m['format']} "
            f"to {self.dest}",
            f"  classes: {', '.join(f'{label} {n}' for label, n in sorted(m['class_totals'].items()))}",
            f"  duplicates left out: {len(m['duplicates'])} ({exact} exact, {len(m['duplicates']) - exact} near); "
            f"skipped: {len(m['skipped'])}; re-encoded to JPEG: {len(m['converted'])}",
            f"  manifest: {self.dest / MANIFEST_NAME}",
        ]


def export(settings: BaseSettings, options: ExportOptions) -> ExportResult:
    """Export what ``options`` select from the project's catalogue into ``options.dest``."""
    db = catalog_path(settings)
    root = Path(settings.get("FILES_STORE") or output_dir(settings))
    if not db.is_file():
        raise ExportError(f"no catalogue at {db} (crawl first, or set OUTPUT_DIR / CATALOG_DB)")
    dest = options.dest
    out = output_dir(settings)
    crawl_folders = sorted({base / name for base in (out, root) for name in CRAWL_FOLDERS})
    build = prepare_destination(dest, options.force, [db, root, out], crawl_folders)
    try:
        manifest = _build(db, root, build, options)
        (build / MANIFEST_NAME).write_text(dump_json(manifest) + "\n", encoding="utf-8")
        move_into_place(build, dest)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return ExportResult(dest, manifest)


def _build(db: Path, root: Path, build: Path, options: ExportOptions) -> dict[str, Any]:
    """Write the export into ``build``; its manifest."""
    selected = _select(db, options)
    usable = _usable(selected.items, root, options, selected.skipped)
    chosen, duplicates = _without_duplicates(usable, options.phash_distance)
    class_from, folders, class_index = _label_and_split(chosen, options, selected.translations, selected.tags)
    style = CaptionStyle.of(options, selected.tags, chosen)
    kohya = {} if options.format != "kohya" else kohya_subsets(Counter(item.label for item in chosen), folders, options)
    writer = Writer(build, options, folders, class_index, selected.translations,
                    lambda item: export_bytes(item, item.file, options), style, kohya)
    progress = ThrottledProgress("export: writing", len(chosen), options.progress)
    for name, _share in options.split:
        members = [item for item in chosen if item.split == name]
        if members:  # an empty split gets no folder, metadata or shard at all
            writer.write(name, members, progress)
    progress.close()
    kohya_config = writer.write_kohya_config(Path(os.path.abspath(options.dest))) if kohya else None
    return _manifest(options, selected, chosen, duplicates, class_from, folders, class_index, style, kohya,
                     kohya_config)


@dataclass
class _Selected:
    """What an export read from the catalogue: its items, and what the manifest records of the read."""

    query: str  # the SQL that selected the rows
    rows: int  # how many rows it selected, before the rules and the faces
    updated: str | None  # the catalogue's newest change: the manifest's date
    translations: dict[str, str]  # Pixiv tag -> its English translation
    tags: TagIndex | None  # aliases and implications, as the crawl's rules see them
    items: list[Item]
    skipped: list[dict[str, str]]  # {"key", "reason"} of each picture left out so far


def _select(db: Path, options: ExportOptions) -> _Selected:
    """The selected pictures as items, read on a read-only connection (after ``Catalog`` has brought an
    older catalogue's columns up to date)."""
    catalog = Catalog(db)
    conn = open_read_only(db)
    try:
        query = picture_query(options.statuses, options.selection.sql)
        try:
            rows = select_pictures(conn, query, options.where_timeout)
        except SelectionError as exc:
            raise ExportError(str(exc)) from None
        translations = tag_translations(conn)
        updated = catalog_updated(conn)
        faces = face_rows(conn) if options.faces else {}
        tags = TagIndex.load(conn) or None
        skipped: list[dict[str, str]] = []
        items = _items(rows, catalog, options, faces, tags, skipped)
    finally:
        conn.close()
        catalog.close()
    if not items:
        raise ExportError("the selection matched no pictures" + ("" if options.crop == "none" else " with faces"))
    return _Selected(query, len(rows), updated, translations, tags, items, skipped)


def _usable(items: list[Item], root: Path, options: ExportOptions, skipped: list[dict[str, str]]) -> list[Item]:
    """The items whose file is there, inside ``root``, readable and big enough for the crop and size
    asked; the others go into ``skipped`` with the reason. Refuses to go on with none left."""
    usable: list[Item] = []
    progress = ThrottledProgress("export: reading", len(items), options.progress)
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
        raise ExportError(f"every selected picture was skipped ({len(skipped)}), nothing exported: {reasons}"
                          + (" ..." if len(skipped) > 3 else ""))
    return usable


def _without_duplicates(usable: list[Item], phash_distance: int) -> tuple[list[Item], list[Duplicate]]:
    """The items to export, in catalogue order, and the duplicates left out (in the same order): the
    largest copy of a duplicated picture is the one exported."""
    by_key = {item.key: item for item in usable}
    ranked = sorted(usable, key=lambda item: (-item.width * item.height, item.order))
    kept, duplicates = find_duplicates((Candidate(item.key, item.sha256, item.phash) for item in ranked), phash_distance)
    chosen = sorted((by_key[c.key] for c in kept), key=lambda item: item.order)
    return chosen, sorted(duplicates, key=lambda d: by_key[d.key].order)


def _label_and_split(chosen: list[Item], options: ExportOptions, translations: dict[str, str],
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


def _manifest(options: ExportOptions, selected: _Selected, chosen: list[Item], duplicates: list[Duplicate],
              class_from: str, folders: dict[str, str], class_index: dict[str, int], style: CaptionStyle,
              kohya: dict[str, KohyaSubset], kohya_config: str | None) -> dict[str, Any]:
    """``manifest.json``: what was selected and how, the counts, what was left out and why, the models."""
    counts: dict[str, Counter[str]] = {name: Counter() for name, _ in options.split}
    for item in chosen:
        counts[item.split][item.label] += 1
    return {
        "format": options.format,
        "faces": options.faces,
        "crop": {"kind": options.crop, "ratios": RATIOS.get(options.crop)},
        "fit": None if options.fitting is None else options.fitting.as_dict(),
        "seed": options.seed,
        "split": {name: round(share, ROUND) for name, share in options.split},
        "selection": {**options.selection.as_dict(), "statuses": list(options.statuses), "query": selected.query},
        "class_from": class_from,
        "classes": folders,
        "class_index": class_index,
        "counts": {name: dict(sorted(c.items())) for name, c in counts.items()},
        "totals": {name: sum(c.values()) for name, c in counts.items()},
        "class_totals": dict(sorted(Counter(item.label for item in chosen).items())),
        "total": len(chosen),
        "artworks": {name: len({i.artwork_id for i in chosen if i.split == name}) for name, _ in options.split},
        "duplicates": [d.as_dict() for d in duplicates],
        "skipped": selected.skipped,
        "converted": [item.key for item in chosen if item.convert],
        "settings": {
            "EXPORT_PHASH_DISTANCE": options.phash_distance,
            "EXPORT_SHARD_SIZE": options.shard_size if options.format == "webdataset" else None,
            "EXPORT_TRIGGER_WORD": options.trigger_word,
            "JPEG_QUALITY": options.jpeg_quality,
        },
        "models": _models(chosen, options.classifier_model),
        "captions": {"underscores": style.underscores, "undesired_tags": list(options.undesired_tags),
                     "rating_tags": style.rating_tags, "characters_first": style.characters_first},
        "kohya": None if not kohya else {
            "config": kohya_config, "resolution": options.kohya_resolution, "batch_size": options.kohya_batch_size,
            "subsets": {label: {"folder": s.folder, "num_repeats": s.num_repeats, "class_tokens": s.class_tokens}
                        for label, s in kohya.items()},
        },
        "catalog": {"updated": selected.updated, "selected_rows": selected.rows},
    }


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
            path = face["path"] if options.crop == "face" else row["path"]
            items.append(Item(row=row, state=state, path=path, key=f"{stem}_f{face['index']}", face=face))
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


def _models(items: Sequence[Item], classifier_model: str) -> dict[str, Any]:
    """The model versions behind the exported labels and tags, and the configured classifier's card."""
    models: dict[str, Any] = {
        "classifier_versions": sorted({i.row["classifier_model"] for i in items if i.row["classifier_model"]}),
        "tagger_versions": sorted({i.state["record"]["model_tags"][0]["model"] for i in items if i.state["record"]["model_tags"]}),
        "classifier_card": None,
    }
    if classifier_model:
        from models.classifier import model_version

        path = Path(classifier_model)
        card_path = path.with_suffix(".json")
        card: dict[str, Any] = {"model": classifier_model}
        try:
            card["version"] = model_version(path)
            card["card"] = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            card["error"] = f"cannot read the model or its card: {exc}"
        models["classifier_card"] = card
    return models
