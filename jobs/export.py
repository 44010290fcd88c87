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

The parts: what was asked (jobs/export_options.py: options, ``--where``, their checks), which pictures
(jobs/export_selection.py) and how they are written (jobs/export_writers.py: layouts and captions).
This module prepares DEST, runs them, writes the manifest and moves the result into place.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections import Counter
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from catalog.reading import ROUND
from core.progress import progress_bar
from core.storage import CRAWL_FOLDERS, catalog_path, files_root, output_dir
from jobs.export_options import (
    FORMATS,
    SPLIT_NAMES,
    UNDERSCORE_STYLES,
    ExportError,
    ExportOptions,
    Selection,
    parse_split,
    parse_statuses,
    parse_tags,
    parse_where,
)
from jobs.export_selection import (
    Item,
    Selected,
    label_and_split,
    read_selection,
    split_of,
    usable_items,
    without_duplicates,
)
from jobs.export_writers import AI_GENERATED, AI_TAG, CaptionStyle, KohyaSubset, Writer, dump_json, export_bytes, kohya_subsets
from models.crops import RATIOS
from stages.dedup import Duplicate

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = [  # what the command and the tests use; the parts live in export_options/selection/writers.py
    "FORMATS", "SPLIT_NAMES", "UNDERSCORE_STYLES", "ExportError", "ExportOptions", "ExportResult", "Selection",
    "Writer", "export", "parse_split", "parse_statuses", "parse_tags", "parse_where", "split_of",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
CROP_NOUNS = {"none": "pictures", "face": "face crops", "head": "head crops", "upper_body": "upper-body crops"}
TEMP_SUFFIX = ".export.part"  # the hidden folder an export is built in, beside DEST
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")  # kernel and device files: never a place for an export


def prepare_destination(dest: Path, force: bool, protected: Sequence[Path], crawl_folders: Sequence[Path] = ()) -> Path:
    """Check DEST can be written, and make the hidden build folder beside it.

    DEST may neither hold a ``protected`` path (the catalogue, OUTPUT_DIR, the files folder) nor lie
    in one of the ``crawl_folders``: replacing it (``--force``) would delete the crawl's pictures.
    Both are compared with symlinks resolved, so a link to ``images/`` is ``images/``.
    """
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest} exists and is not a folder")
    above = next((p for p in dest.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ExportError(f"{dest} cannot be made: {above} is a file, not a folder")
    resolved = dest.resolve()
    system = next((root for root in SYSTEM_FOLDERS if resolved.is_relative_to(root)), None)
    if system is not None:
        raise ExportError(f"{dest} is in {system}, a folder of the system's: export somewhere else")
    for folder in crawl_folders:
        if resolved.is_relative_to(folder.resolve()):  # the folder itself too
            raise ExportError(f"{dest} is inside the crawl's own folder {folder}: export somewhere else")
    for path in [*protected, *crawl_folders]:
        if path.resolve().is_relative_to(resolved):
            raise ExportError(f"{dest} holds {path}: export somewhere else")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise ExportError(f"{dest} is not empty; --force replaces it")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for leftover in dest.parent.glob(f".{glob_escape(dest.name)}.*{TEMP_SUFFIX}"):  # a killed export's
            shutil.rmtree(leftover, ignore_errors=True)
        build = dest.parent / f".{dest.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        build.mkdir()
    except OSError as exc:
        raise ExportError(f"{dest} cannot be written: {exc.strerror or exc}") from None
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
            *self.enlarged_lines(),
            *([f"  AI-generated (Pixiv aiType 2): {len(m['ai_generated'])}, captioned {AI_TAG} (--exclude-ai leaves "
                "them out)"] if m.get("ai_generated") else []),
            *self.held_back_lines(),
            f"  manifest: {self.dest / MANIFEST_NAME}",
        ]

    def held_back_lines(self) -> list[str]:
        """kohya with --split holding pictures back: say that sd-scripts will not train on them."""
        m = self.manifest
        held = {name: n for name, n in m["totals"].items() if name != SPLIT_NAMES[0] and n}
        if m["format"] != "kohya" or not held:
            return []
        return [f"  not trained on: {', '.join(f'{name} {n}' for name, n in held.items())} (their folders are not in "
                f"{m['kohya']['config'] or 'dataset.toml'}; --split 1,0 trains on all)"]

    def enlarged_lines(self) -> list[str]:
        """How many samples --size enlarged, and by how much at most: an enlarged crop is blurrier."""
        enlarged = self.manifest.get("enlarged") or {}
        if not enlarged:
            return []
        limit = (self.manifest.get("fit") or {}).get("max_upscale")
        return [f"  enlarged to --size: {len(enlarged)} of {self.manifest['total']} (up to x{max(enlarged.values()):g}; "
                f"--max-upscale {limit:g} allowed, 1 skips them instead)"]


def export(settings: BaseSettings, options: ExportOptions) -> ExportResult:
    """Export what ``options`` select from the project's catalogue into ``options.dest``."""
    db = catalog_path(settings)
    root = files_root(settings)
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
    selected = read_selection(db, options)
    usable = usable_items(selected.items, root, options, selected.skipped)
    chosen, duplicates = without_duplicates(usable, options.phash_distance)
    class_from, folders, class_index = label_and_split(chosen, options, selected.translations, selected.tags)
    style = CaptionStyle.of(options, selected.tags, chosen, selected.translations, selected.model_characters)
    kohya = {} if options.format != "kohya" else kohya_subsets(Counter(item.label for item in chosen), folders, options)
    writer = Writer(build, options, folders, class_index, selected.translations,
                    lambda item: export_bytes(item, usable_file(item), options), style, kohya)
    progress = progress_bar("export: writing", len(chosen), options.progress)
    for name, _share in options.split:
        members = [item for item in chosen if item.split == name]
        if members:  # an empty split gets no folder, metadata or shard at all
            writer.write(name, members, progress)
    progress.close()
    kohya_config = writer.write_kohya_config(Path(os.path.abspath(options.dest))) if kohya else None
    return _manifest(options, selected, chosen, duplicates, class_from, folders, class_index, style, kohya,
                     kohya_config)


def usable_file(item: Item) -> Path:
    """The checked file of an item ``usable_items`` kept (it sets ``file`` on every one it keeps)."""
    assert item.file is not None
    return item.file


def _manifest(options: ExportOptions, selected: Selected, chosen: list[Item], duplicates: list[Duplicate],
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
        "exclude_ai": options.exclude_ai,
        "ai_generated": [item.key for item in chosen if item.row["ai_type"] == AI_GENERATED],
        "enlarged": {item.key: round(item.upscale, 2) for item in chosen if item.upscale > 1 + 1e-9},
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
