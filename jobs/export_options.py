"""What an export is asked to do (``scrapy export``'s options and the EXPORT_* settings), read and checked
before any work: the layout, the selection (``--where``: SQL or curation rules), the split, the
classes, captions, crops and one training size. jobs/export.py runs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.reading import STATUSES, SelectionError, check_one_expression
from core.errors import DataError, ProjectError
from models.crops import CROP_KINDS, FITS, Fit, parse_colour
from stages.rules import RuleError, check_rules, parse_rules_text, rules_in_file

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

FORMATS = ("imagefolder", "kohya", "hf", "webdataset")
SPLIT_NAMES = ("train", "val", "test")
CLASS_SOURCES = ("auto", "classifier", "decision", "none", "tags:")
UNLABELLED = "unlabelled"  # class of a picture the classifier never saw (--class-from classifier)
NO_TAG_CLASS = "other"  # class of a picture with none of the --class-from tags
SINGLE_CLASS = "all"  # the one class of --class-from none
UNDERSCORE_STYLES = ("keep", "space")  # --caption-underscores
# --split's default per format. sd-scripts trains on every picture its dataset.toml names and has no
# validation folder of its own, so a kohya export keeps them all in train; the others hold 10% back.
DEFAULT_SPLITS = {"kohya": (("train", 1.0), ("val", 0.0))}
DEFAULT_SPLIT = (("train", 0.9), ("val", 0.1))

# Upper bounds, checked before any work: --size and EXPORT_KOHYA_RESOLUTION (SDXL trains at 1024; 8192 px
# square is 64 MP a sample, as far as IMAGE_MAX_PIXELS lets a crawl store), and --max-upscale.
MAX_SIZE = 8192  # px
MAX_UPSCALE = 16.0
# --max-upscale's defaults. A whole picture is never enlarged: a small one is kept small (resize) or
# skipped (pad, crop). A head on a Pixiv picture is a fraction of it, so a head crop at a training size
# (512 px) usually needs enlarging; up to 8x is allowed, and the summary and manifest say which were.
# A crop that would need more (a head under 64 px at 512) is too small to teach anything: skipped.
PICTURE_MAX_UPSCALE = 1.0
CROP_MAX_UPSCALE = 8.0


class ExportError(ProjectError, ValueError):
    """An export that cannot be made (bad option, unsafe DEST, empty selection); the message says why."""


class NothingToExport(ExportError, DataError):
    """The options were right but no picture could be exported (none matched, every one was skipped):
    a failed run on its data (DataError's exit code 1), not a wrong command line."""


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
    """What an export does. ``from_settings`` makes one: the fields read from settings have no default
    here, theirs are crawler/settings.py's (EXPORT_*, JPEG_QUALITY, CLASSIFIER_MODEL); the command
    line's options have theirs below."""

    dest: Path
    # From the settings.
    phash_distance: int  # EXPORT_PHASH_DISTANCE
    shard_size: int  # EXPORT_SHARD_SIZE
    trigger_word: str  # EXPORT_TRIGGER_WORD
    jpeg_quality: int  # JPEG_QUALITY
    classifier_model: str  # CLASSIFIER_MODEL
    where_timeout: float  # EXPORT_WHERE_TIMEOUT: seconds the picture query (with --where) may run
    undesired_tags: tuple[str, ...]  # EXPORT_UNDESIRED_TAGS (--undesired-tags): left out of captions
    repeats_base: int  # EXPORT_KOHYA_REPEATS
    kohya_resolution: int  # EXPORT_KOHYA_RESOLUTION: dataset.toml's resolution
    kohya_batch_size: int  # EXPORT_KOHYA_BATCH_SIZE: dataset.toml's batch size
    # From the command line.
    format: str = "imagefolder"
    selection: Selection = Selection()
    split: tuple[tuple[str, float], ...] = ()  # empty: the format's own (DEFAULT_SPLITS)
    seed: int = 0
    faces: bool = False
    class_from: str = "auto"
    statuses: tuple[str, ...] = ("kept",)
    force: bool = False
    progress: bool = True
    exclude_ai: bool = False  # leave out AI-generated works (Pixiv aiType 2); kept ones are captioned ai-generated
    # Captions (every format; kohya's defaults differ: underscores as spaces, characters first).
    caption_underscores: str = ""  # keep | space; empty: space for kohya, keep for the others
    rating_tags: bool = True  # False: rating tags (rating:safe, a "Rating" category) left out of captions
    # kohya: num_repeats per class folder (None: repeats_base, balanced over several classes).
    repeats: int | None = None
    # Crops and one training size (models/crops.py). crop: none, face (the stored face crops, what
    # --faces does), head or upper_body (cut from the stored picture around each stored face box).
    crop: str = "none"
    size: int | None = None  # --size: None exports the pictures at their own size
    fit: str = "resize"  # pad | crop | resize
    pad_colour: str = "white"  # a colour name or #rrggbb, or edge
    multiple: int = 64  # resize: both sides cut down to a multiple of this
    max_upscale: float | None = None  # enlarge no picture more than this; None: by --crop (see above)

    @property
    def fitting(self) -> Fit | None:
        """The --size alignment, or None."""
        if self.size is None:
            return None
        return Fit(self.size, self.fit, parse_colour(self.pad_colour), self.multiple,
                   PICTURE_MAX_UPSCALE if self.max_upscale is None else self.max_upscale)

    @classmethod
    def from_settings(cls, settings: BaseSettings, dest: str | os.PathLike[str], **given: Any) -> ExportOptions:
        """Options from the EXPORT_* settings, then those ``given`` (the command line) on top."""
        if not str(dest).strip():
            raise ExportError("DEST is empty: name the folder to export to")
        options = cls(
            dest=Path(dest),
            phash_distance=settings.getint("EXPORT_PHASH_DISTANCE"),
            shard_size=settings.getint("EXPORT_SHARD_SIZE"),
            trigger_word=(settings.get("EXPORT_TRIGGER_WORD") or "").strip(),
            jpeg_quality=settings.getint("JPEG_QUALITY"),
            classifier_model=settings.get("CLASSIFIER_MODEL") or "",
            where_timeout=settings.getfloat("EXPORT_WHERE_TIMEOUT"),
            undesired_tags=tuple(t.strip() for t in settings.getlist("EXPORT_UNDESIRED_TAGS") if t.strip()),
            repeats_base=settings.getint("EXPORT_KOHYA_REPEATS"),
            kohya_resolution=settings.getint("EXPORT_KOHYA_RESOLUTION"),
            kohya_batch_size=settings.getint("EXPORT_KOHYA_BATCH_SIZE"),
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
        if not 64 <= self.kohya_resolution <= MAX_SIZE:
            raise ExportError(f"EXPORT_KOHYA_RESOLUTION must be from 64 to {MAX_SIZE} (pixels), not {self.kohya_resolution}")
        if self.crop not in CROP_KINDS:
            raise ExportError(f"--crop must be one of {', '.join(CROP_KINDS)}, not {self.crop!r}")
        if self.faces and self.crop not in ("none", "face"):
            raise ExportError(f"--faces is --crop face: give one of --faces and --crop {self.crop}")
        crop = "face" if self.faces else self.crop
        max_upscale = self.max_upscale
        if max_upscale is None:
            max_upscale = PICTURE_MAX_UPSCALE if crop == "none" else CROP_MAX_UPSCALE
        if self.size is not None:
            if self.fit not in FITS:
                raise ExportError(f"--fit must be one of {', '.join(FITS)}, not {self.fit!r}")
            for name, value in (("--size", self.size), ("--multiple", self.multiple)):
                if not 1 <= value <= MAX_SIZE:
                    raise ExportError(f"{name} must be from 1 to {MAX_SIZE} (pixels), not {value}")
            if not 1 <= max_upscale <= MAX_UPSCALE:
                raise ExportError(f"--max-upscale must be from 1 (never enlarge) to {MAX_UPSCALE:g}, not {max_upscale}")
            try:
                parse_colour(self.pad_colour)
            except ValueError:
                raise ExportError(f"--pad-colour must be a colour (white, #808080) or edge, not {self.pad_colour!r}") from None
        split = self.split or DEFAULT_SPLITS.get(self.format, DEFAULT_SPLIT)
        return replace(self, statuses=tuple(sorted(set(self.statuses))), caption_underscores=underscores, split=split,
                       crop=crop, faces=crop == "face", max_upscale=max_upscale)


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
    if text[0] in "{[":  # JSON is YAML too; YAML lets a hand-written rule skip the quotes
        try:
            loaded, lines = parse_rules_text(text, "--where")
            return _rule_selection(text, loaded, lines)
        except RuleError as exc:
            raise ExportError(str(exc)) from None
    if Path(text).suffix.lower() in (".json", ".yaml", ".yml") and Path(text).is_file():
        try:
            return _rule_selection(text, *rules_in_file(text), source=text)
        except RuleError as exc:
            raise ExportError(str(exc)) from None
    if ";" in text:
        raise ExportError("--where is one SQL expression over images i and artworks a; ';' is refused")
    try:
        check_one_expression(text)
    except SelectionError as exc:
        raise ExportError(str(exc)) from None
    return Selection(text=text, sql=text)


def _rule_selection(text: str, loaded: Any, lines: list[int] | None = None, source: str = "--where") -> Selection:
    """The rules of ``--where`` (a rule object or a list; a rule without ``action`` keeps), checked."""
    rules = [loaded] if isinstance(loaded, dict) else loaded
    if not isinstance(rules, list):
        raise ExportError(f"--where rules must be a rule object or a list of them, not {type(loaded).__name__}")
    rules = [{"action": "keep", **rule} if isinstance(rule, dict) else rule for rule in rules]
    check_rules(rules, source, lines)
    default = "keep" if all(rule["action"] == "drop" for rule in rules) else "drop"
    return Selection(text=text, rules=rules, default=default)
