"""labelme polygons to index masks: the data side of segmentation, under ``scrapy masks``.

People annotate characters in labelme, which saves one JSON file per picture; segmentation
trainers want index masks in the ``images/`` + ``annotations/`` layout (ADE20K, mmsegmentation).
labelme's own converter takes one file per call and stops at the first problem, so this converts
a whole folder (recursively) and records a bad file instead of stopping:

* Classes: from a labels file (one name a line; labelme's ``__ignore__`` / ``_background_``
  header lines are understood), or else every label found in the JSON files, sorted, so the same
  files always give the same numbering. ``DEST/labels.txt`` lists them, line *i* being mask value
  *i*, ``_background_`` first.
* Labels: surrounding whitespace is stripped, in the JSON files as in the labels file (labelme
  strips what is typed, and its own labels.txt reader does too), so `` cat `` is ``cat``, with a
  warning. A label that is empty, or holds a control character or a line break (which would
  split a line of labels.txt and shift every class after it), fails its file, naming the label.
* Masks: 8-bit palette PNGs (mode ``P``) whose pixel values are the class indexes, with the PASCAL
  VOC colours so that they are readable in an image viewer: 0 background, 1..K the classes, 255 the
  ``__ignore__`` label (training and IoU skip it). Shapes are painted in file order, a later shape
  over an earlier one, outline included: labelme's own rule.
* Shapes: ``polygon`` (3+ points), ``rectangle`` (2 corners), ``circle`` (centre and a point on
  it), ``mask`` (labelme 5's base64 bitmap over a box). ``line``, ``linestrip`` and ``point``
  enclose no area: they are left out, with a warning.
* The picture: ``imageData`` (base64) when the file carries it, else the file at ``imagePath``
  (relative to the JSON, or else its file name beside the JSON; Windows separators accepted).
  A path that leads out of the labelme folder (``../``, absolute, or through a symlink) is refused
  unless ``allow_outside`` (``--allow-outside``) says to follow it: a JSON file from elsewhere
  must not make the converter copy any file it can read into the dataset. It
  is copied byte for byte to ``images/`` unless its EXIF orientation turns it (labelme shows and
  annotates it turned), in which case the turned picture is written. When ``imageHeight``/``imageWidth`` disagree with the picture, the
  picture wins (labelme does the same) and a warning says so.

A file that cannot be converted (bad JSON, a missing or unreadable picture, a polygon of two points,
points that are not numbers, a mask bitmap larger than its picture, a label the labels file lacks)
is logged with its reason and left out; the others go on. Outputs are written atomically, a picture
and its mask together or neither, so an interrupted run leaves no half file, and a re-run rewrites
the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from core.errors import ProjectError
from core.progress import progress_bar
from core.storage import atomic_write

log = logging.getLogger("models.labelme")

BACKGROUND = "_background_"
IGNORE = "__ignore__"
IGNORE_INDEX = 255
MAX_CLASSES = 254  # 1..254 for classes: 0 is the background, 255 "ignore"
AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
LINE_SHAPES = ("line", "linestrip", "point")
IMAGE_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
EXIF_ORIENTATION = 0x0112
LINE_BREAKING = ("Cc", "Zl", "Zp")  # control characters and line/paragraph separators: str.splitlines splits on some
LABELS_NAME = "labels.txt"
IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"


class LabelmeError(ProjectError, ValueError):
    """One file (or the labels file) cannot be converted; the message says why."""


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map, flat (768 values): the bits of an index spread over R, G and B."""
    palette = []
    for index in range(256):
        r = g = b = 0
        bits = index
        for shift in range(7, -1, -1):
            r |= (bits & 1) << shift
            g |= ((bits >> 1) & 1) << shift
            b |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette += [r, g, b]
    return palette


PALETTE = voc_palette()


def mask_to_png(mask: np.ndarray) -> bytes:
    """A (H, W) uint8 index mask as a palette PNG: the pixel values are the indexes."""
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    image.putpalette(PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- labels


def label_problem(name: str) -> str | None:
    """Why ``name`` (already stripped) cannot be a class name, or None: labels.txt holds one name a line."""
    if not name:
        return "empty label"
    if any(unicodedata.category(char) in LINE_BREAKING for char in name):
        return f"label {name!r} has a control character or line break"
    return None


def label_of(shape: dict[str, Any]) -> str:
    """A shape's class name: its label without surrounding whitespace (see the module docstring)."""
    return str(shape["label"]).strip()


def parse_labels(lines: Iterable[str]) -> list[str]:
    """Class names by mask value (``_background_`` first) from a labels file's lines.

    ``__ignore__`` lines are dropped (that label always paints 255); ``_background_`` may be the
    first name or absent (it is then added). Blank lines are skipped; names are stripped.
    """
    names = [line.strip() for line in lines]
    names = [name for name in names if name and name != IGNORE]
    for name in names:
        problem = label_problem(name)
        if problem:
            raise LabelmeError(problem)
    if names and names[0] == BACKGROUND:
        names = names[1:]
    if BACKGROUND in names:
        raise LabelmeError(f"{BACKGROUND} must be the first class (mask value 0)")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise LabelmeError(f"classes listed twice: {', '.join(duplicates)}")
    if len(names) > MAX_CLASSES:
        raise LabelmeError(f"{len(names)} classes: an 8-bit mask holds at most {MAX_CLASSES}")
    return [BACKGROUND, *names]


def read_labels(path: str | Path) -> list[str]:
    return parse_labels(Path(path).read_text(encoding="utf-8").splitlines())


def labels_text(classes: Sequence[str]) -> str:
    return "".join(f"{name}\n" for name in classes)


# --------------------------------------------------------------------------- one file


def load_document(path: Path) -> dict[str, Any]:
    """The JSON of a labelme file, with its shapes checked for what drawing them needs."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise LabelmeError(f"not UTF-8 text ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise LabelmeError(f"not JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise LabelmeError("not JSON (nested too deeply)") from None
    if not isinstance(document, dict) or not isinstance(document.get("shapes"), list):
        raise LabelmeError("not a labelme file: no 'shapes' list")
    for number, shape in enumerate(document["shapes"], 1):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise LabelmeError(f"shape {number}: no label")
        problem = label_problem(label_of(shape))
        if problem:
            raise LabelmeError(f"shape {number}: {problem}")
        kind = shape.get("shape_type")
        if kind is not None and not isinstance(kind, str):
            raise LabelmeError(f"shape {number} ({shape['label']!r}): shape_type must be a string, not {kind!r}")
        points = shape.get("points")
        if not isinstance(points, list) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(is_coordinate(v) for v in p) for p in points
        ):
            raise LabelmeError(f"shape {number} ({shape['label']!r}): points must be a list of [x, y] numbers")
    return document


def is_coordinate(value: Any) -> bool:
    """A finite number: JSON as Python reads it allows NaN, Infinity and 400-digit integers, none a place."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def shape_type(shape: dict[str, Any]) -> str:
    return shape.get("shape_type") or "polygon"  # labelme 3 files have no shape_type


def decode_picture(data: bytes, source: str, notes: list[str]) -> Image.Image:
    """``data`` decoded, or a LabelmeError naming ``source``; Pillow's decompression-bomb warning becomes a note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except UnidentifiedImageError:
            raise LabelmeError(f"{source}: not a readable picture (not a format Pillow knows)") from None
        except Exception as error:  # noqa: BLE001 - corrupt bytes make decoders raise all sorts; each is this file's reason
            raise LabelmeError(f"{source}: not a readable picture ({error})") from None
    if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
        notes.append(f"the picture is {image.size[0]}x{image.size[1]}, over Pillow's decompression-bomb warning "
                     f"level ({Image.MAX_IMAGE_PIXELS} pixels): converted, check it is meant to be this big")
    return image


def find_picture(image_path: str, json_path: Path, root: Path | None) -> Path:
    """The file ``imagePath`` names, inside ``root`` (resolved) unless ``root`` is None."""
    relative = PureWindowsPath(image_path) if "\\" in image_path else PurePosixPath(image_path)
    named = json_path.parent.joinpath(*relative.parts)
    beside = json_path.parent / relative.name  # a path from another machine; the file moved with the JSON
    found = [p for p in (named, beside) if p.is_file()]
    if not found:
        raise LabelmeError(f"imagePath {image_path!r}: no file at {named}")
    inside = [p for p in found if root is None or p.resolve().is_relative_to(root)]
    if not inside:
        raise LabelmeError(f"imagePath {image_path!r} is outside the labelme folder (--allow-outside to follow it)")
    return inside[0]


def read_picture(document: dict[str, Any], json_path: Path, root: Path | None = None,
                 notes: list[str] | None = None) -> tuple[bytes, Image.Image]:
    """The picture's bytes and its decoded image (EXIF orientation not yet applied).

    ``root`` (resolved) is the folder ``imagePath`` must stay in; None follows it anywhere. Warnings go to ``notes``.
    """
    notes = [] if notes is None else notes
    if document.get("imageData"):
        try:
            data = base64.b64decode(document["imageData"], validate=False)
        except (binascii.Error, TypeError, ValueError) as error:
            raise LabelmeError(f"imageData is not base64 ({error})") from None
        source = "imageData"
    else:
        image_path = document.get("imagePath")
        if not isinstance(image_path, str) or not image_path:
            raise LabelmeError("no imageData and no imagePath")
        data = find_picture(image_path, json_path, root).read_bytes()
        source = f"imagePath {image_path!r}"
    return data, decode_picture(data, source, notes)


def draw_shapes(size: tuple[int, int], shapes: Sequence[dict[str, Any]], value_of: dict[str, int]) -> np.ndarray:
    """The (H, W) uint8 index mask of ``shapes`` on a picture of ``size`` (W, H)."""
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for number, shape in enumerate(shapes, 1):
        kind = shape_type(shape)
        if kind not in AREA_SHAPES:
            continue
        value = value_of[label_of(shape)]
        points = [(float(x), float(y)) for x, y in shape["points"]]
        where = f"shape {number} ({kind} {label_of(shape)!r})"
        if kind == "polygon":
            if len(points) < 3:
                raise LabelmeError(f"{where}: a polygon needs at least 3 points, has {len(points)}")
            draw.polygon(points, fill=value, outline=value)
        elif kind == "rectangle":
            if len(points) != 2:
                raise LabelmeError(f"{where}: a rectangle needs 2 corner points, has {len(points)}")
            (x1, y1), (x2, y2) = points
            draw.rectangle((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), fill=value, outline=value)
        elif kind == "circle":
            if len(points) != 2:
                raise LabelmeError(f"{where}: a circle needs its centre and a point on it, has {len(points)} points")
            (cx, cy), (px, py) = points
            radius = math.hypot(px - cx, py - cy)
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=value, outline=value)
        else:  # "mask": a bitmap covering the box between two corner points
            draw_bitmap(canvas, shape, value, where)
    return np.asarray(canvas, dtype=np.uint8).copy()


def draw_bitmap(canvas: Image.Image, shape: dict[str, Any], value: int, where: str) -> None:
    if len(shape["points"]) != 2 or not isinstance(shape.get("mask"), str):
        raise LabelmeError(f"{where}: a mask shape needs 2 corner points and a base64 'mask'")
    try:
        with warnings.catch_warnings():
            # the size check below is stricter than Pillow's warning level: no bitmap larger than its picture
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            bitmap = Image.open(io.BytesIO(base64.b64decode(shape["mask"])))
    except Image.DecompressionBombError as error:
        raise LabelmeError(f"{where}: the bitmap is too large ({error})") from None
    except (OSError, ValueError, binascii.Error) as error:
        raise LabelmeError(f"{where}: 'mask' is not a base64 picture ({error})") from None
    if bitmap.width > canvas.width or bitmap.height > canvas.height:  # checked before decoding: a bomb stays small
        raise LabelmeError(f"{where}: the bitmap is {bitmap.width}x{bitmap.height}, larger than the "
                           f"{canvas.width}x{canvas.height} picture")
    try:
        bitmap.load()
    except Exception as error:  # noqa: BLE001 - as in decode_picture
        raise LabelmeError(f"{where}: 'mask' is not a readable picture ({error})") from None
    x1, y1 = (int(v) for v in shape["points"][0])
    if not (-bitmap.width < x1 < canvas.width and -bitmap.height < y1 < canvas.height):
        return  # wholly off the picture: nothing to paint (and Pillow cannot take such offsets)
    covered = Image.fromarray((np.asarray(bitmap.convert("L")) > 0).astype(np.uint8) * 255)
    canvas.paste(Image.new("L", covered.size, value), (x1, y1), covered)


def oriented(data: bytes, image: Image.Image) -> tuple[bytes, Image.Image, str]:
    """The picture as labelme shows it (EXIF orientation applied): bytes, image and file suffix."""
    suffix = IMAGE_SUFFIX.get(image.format or "")
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1 or suffix is None:
        turned = ImageOps.exif_transpose(image)
        buffer = io.BytesIO()
        if image.format == "JPEG" and turned.mode in ("RGB", "L"):
            turned.save(buffer, format="JPEG", quality=95)
            suffix = ".jpg"
        else:
            turned.save(buffer, format="PNG")
            suffix = ".png"
        return buffer.getvalue(), turned, suffix
    return data, image, suffix


@dataclass(frozen=True)
class Converted:
    """One labelme file as a picture and its mask."""

    image_bytes: bytes
    image_suffix: str
    mask: np.ndarray  # (H, W) uint8
    warnings: list[str]


def convert_document(document: dict[str, Any], json_path: Path, value_of: dict[str, int],
                     root: Path | None = None) -> Converted:
    """The picture and index mask of one labelme document (``load_document``'s result).

    ``root``: the resolved folder ``imagePath`` must stay in (None: anywhere).
    """
    notes = []
    unknown = sorted({label_of(s) for s in document["shapes"]
                      if shape_type(s) in AREA_SHAPES and label_of(s) not in value_of})
    if unknown:
        raise LabelmeError(f"labels not in the class list: {', '.join(unknown)}")
    for label in sorted({s["label"] for s in document["shapes"] if s["label"] != label_of(s)}):
        notes.append(f"label {label!r} read as {label.strip()!r}")
    left_out = Counter(shape_type(s) for s in document["shapes"] if shape_type(s) not in AREA_SHAPES)
    for kind, count in sorted(left_out.items()):
        why = "encloses no area" if kind in LINE_SHAPES else "is not a shape type labelme writes"
        notes.append(f"{count} {kind} shape(s) left out: a {kind} {why}")
    data, image = read_picture(document, json_path, root, notes)
    data, image, suffix = oriented(data, image)
    declared = (document.get("imageWidth"), document.get("imageHeight"))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in declared) and declared != image.size:
        notes.append(f"imageWidth/imageHeight say {declared[0]}x{declared[1]} but the picture is "
                     f"{image.size[0]}x{image.size[1]}: the picture's size is used")
    mask = draw_shapes(image.size, document["shapes"], value_of)
    return Converted(data, suffix, mask, notes)


# --------------------------------------------------------------------------- a folder


@dataclass
class ConvertSummary:
    """What ``convert_folder`` did, for the command's report."""

    dest: Path
    classes: list[str]
    converted: list[str] = field(default_factory=list)  # relative stems
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relative JSON path, reason)
    files_per_class: Counter[str] = field(default_factory=Counter)  # class: masks showing it
    warnings: int = 0

    def lines(self) -> list[str]:
        lines = [
            f"Converted {len(self.converted)} labelme files to {self.dest}/{IMAGES_DIR} and "
            f"{self.dest}/{ANNOTATIONS_DIR}; {len(self.failed)} failed, {self.warnings} warnings",
            f"  {len(self.classes) - 1} classes in {self.dest / LABELS_NAME} (mask value: name, masks showing it):",
        ]
        lines += [f"    {value}: {name}, {self.files_per_class[name]}" for value, name in enumerate(self.classes)]
        if self.files_per_class[IGNORE]:
            lines.append(f"    {IGNORE_INDEX}: {IGNORE}, {self.files_per_class[IGNORE]}")
        lines += [f"  failed: {rel}: {reason}" for rel, reason in self.failed]
        return lines


def find_json_files(folder: Path) -> list[Path]:
    """Every ``.json`` under ``folder``, sorted, hidden ones left out."""
    return sorted(p for p in folder.rglob("*.json")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def collect_labels(documents: Iterable[dict[str, Any]]) -> list[str]:
    """Every area-shape label, sorted (code point order), after ``_background_``."""
    names = {label_of(s) for document in documents for s in document["shapes"] if shape_type(s) in AREA_SHAPES}
    return parse_labels(sorted(names - {BACKGROUND, IGNORE}))


def convert_folder(
    labelme_dir: str | Path, dest: str | Path, *, labels: str | Path | None = None, progress: bool = False,
    allow_outside: bool = False,
) -> ConvertSummary:
    """Convert every labelme JSON under ``labelme_dir`` into ``dest``; see the module docstring.

    Two passes: the first reads the files to learn the classes (unless a labels file gives them),
    the second draws the masks, so no file's picture is held in memory longer than its turn.
    Whatever goes wrong with one file becomes that file's reason: it never stops the others.
    ``allow_outside`` lets ``imagePath`` lead out of ``labelme_dir``.
    """
    source, dest = Path(labelme_dir), Path(dest)
    if not source.is_dir():
        raise LabelmeError(f"{source}: not a folder")
    refuse_overlap(source, dest, labels)
    paths = find_json_files(source)
    if not paths:
        raise LabelmeError(f"{source}: no .json files")
    root = None if allow_outside else source.resolve()
    failed: dict[Path, str] = {}
    if labels is not None:
        try:
            classes = read_labels(labels)
        except LabelmeError as error:
            raise LabelmeError(f"{labels}: {error}") from None
    else:
        documents = []
        for path in paths:
            try:
                documents.append(load_document(path))
            except Exception as error:  # noqa: BLE001 - one file's problem, see file_failure
                failed[path] = file_failure(path.relative_to(source), error)
        classes = collect_labels(documents)
        del documents
    value_of = {name: value for value, name in enumerate(classes)} | {IGNORE: IGNORE_INDEX}
    summary = ConvertSummary(dest=dest, classes=classes)
    atomic_write(dest / LABELS_NAME, labels_text(classes).encode("utf-8"))
    bar = progress_bar("masks", len(paths), progress)
    for path in paths:
        relative = path.relative_to(source)
        try:
            if path in failed:
                raise LabelmeError(failed[path])
            converted = convert_document(load_document(path), path, value_of, root)
            mask_png = mask_to_png(converted.mask)
            write_pair(dest, relative.with_suffix(""), converted.image_suffix, converted.image_bytes, mask_png)
        except Exception as error:  # noqa: BLE001 - one file's problem, see file_failure
            reason = failed.get(path) or file_failure(relative, error)
            log.error("%s: not converted: %s", relative.as_posix(), reason)
            summary.failed.append((relative.as_posix(), reason))
            bar.update(1)
            continue
        for warning in converted.warnings:
            log.warning("%s: %s", relative.as_posix(), warning)
        summary.warnings += len(converted.warnings)
        present = set(np.unique(converted.mask).tolist())
        summary.files_per_class.update(name for name, value in value_of.items() if value in present)
        summary.converted.append(relative.with_suffix("").as_posix())
        bar.update(1)
    bar.close()
    return summary


def refuse_overlap(source: Path, dest: Path, labels: str | Path | None) -> None:
    """Never write over an input: DEST and LABELME_DIR may not be one folder or hold each other
    (DEST/labels.txt, DEST/images/ would replace the user's own files), nor may --labels be the
    DEST/labels.txt this run writes (symlinks resolved)."""
    here, there = source.resolve(), dest.resolve()
    if there == here or there.is_relative_to(here) or here.is_relative_to(there):
        where = "is" if there == here else "is inside" if there.is_relative_to(here) else "holds"
        raise LabelmeError(f"DEST {dest} {where} LABELME_DIR {source}: the masks would be written over the files "
                           "they are made from; give a DEST outside it")
    if labels is not None and Path(labels).resolve() == there / LABELS_NAME:
        raise LabelmeError(f"--labels {labels} is the {LABELS_NAME} this run writes in DEST: copy it elsewhere first")


def file_failure(relative: Path, error: Exception) -> str:
    """The reason one file was not converted; an error no check foresaw is logged with its traceback."""
    if isinstance(error, (LabelmeError, OSError)):
        return str(error)
    log.error("%s: unexpected %s", relative.as_posix(), type(error).__name__, exc_info=error)
    return f"unexpected {type(error).__name__}: {error}"


def write_pair(dest: Path, stem: Path, image_suffix: str, image_bytes: bytes, mask_png: bytes) -> None:
    """The picture and its mask, each written atomically; a picture whose mask cannot be written is taken back."""
    image_path = dest / IMAGES_DIR / stem.parent / (stem.name + image_suffix)
    mask_path = dest / ANNOTATIONS_DIR / stem.parent / (stem.name + ".png")
    try:
        atomic_write(image_path, image_bytes)
    except OSError as error:
        raise LabelmeError(f"cannot write {image_path}: {error.strerror or error}") from None
    try:
        atomic_write(mask_path, mask_png)
    except OSError as error:
        image_path.unlink(missing_ok=True)
        raise LabelmeError(f"cannot write {mask_path}: {error.strerror or error}") from None
