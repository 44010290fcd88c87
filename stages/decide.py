"""Stage: keep or drop each picture by declarative rules over what the earlier stages found.

Rules come from ``CURATE_RULES`` (a list; or a file named by ``CURATE_RULES_FILE``: YAML when it
ends in ``.yaml``/``.yml``, JSON otherwise), tried in order, the first that matches decides;
``CURATE_DEFAULT`` decides when none does. Each rule is a dict with ``action`` (keep or drop) and
``if``, one of:

    {"action": "drop", "if": "r18"}                          the artwork is R-18 (xRestrict > 0)
    {"action": "drop", "if": "ai"}                           the artwork is AI-generated (aiType 2)
    {"action": "keep", "if": "classifier", "min": 0.8}       the classifier's target score >= min
    {"action": "drop", "if": "classifier", "max": 0.2}       ... < max
    {"action": "keep", "if": "tag", "any": ["mona_(genshin_impact)", "モナ(原神)", "莫娜"]}
                                                             a model tag or a Pixiv tag, any case;
                                                             with aliases or implications in the
                                                             catalogue (catalog/tags.py), by canonical
                                                             tag: 莫娜 matches when it is an alias
    {"action": "drop", "if": "tag", "all": ["1girl", "solo"]}  every one of these tags
    {"action": "drop", "if": "tag", "none": ["mona_(genshin_impact)"]}
                                                             none of these tags (to exclude tags, drop
                                                             with "any"; to require one, drop with "none")
    {"action": "drop", "if": "no_face"}                      the face stage found no face
    {"action": "drop", "if": "monochrome"}                   greyscale, one tint (sepia, blue) or sketch-like
                                                             line art, from the picture's stored pixel
                                                             statistics (stages/filters.py): colorfulness
                                                             <= "max" (default 3.0) or line_art >= "line_art"
                                                             (default 0.6; false: greyscale and tints only)
    {"action": "drop", "if": "duplicate"}                    a lesser copy of a kept picture: the same sha256,
                                                             or a perceptual hash at most "distance" bits away
                                                             (default CURATE_PHASH_DISTANCE); `scrapy curate`
                                                             only, see jobs/curate.py
    {"action": "keep", "if": "identity"}                     the identity stage matched the wanted character
                                                             (its references, or the dominant cluster; "match":
                                                             false: it looked and it is not); `scrapy curate`
                                                             only, see jobs/identity.py

Range conditions, from the stored picture and artwork; bounds are inclusive, every one given must hold:

    {"if": "size", "min_side": 512}       the short side >= 512 px; also "max_side" (the long side <=),
                                          "min_pixels", "max_pixels" (width x height)
    {"if": "aspect", "max": 2.0}          long side / short side <= 2.0; also "min"
    {"if": "faces", "count": 1}           exactly one face found; also "min", "max"
    {"if": "bookmarks", "min": 100}       the artwork's Pixiv bookmark count >= 100; also "max"
    {"if": "page", "max": 0}              the artwork's first page only; also "min"

A range condition can be written with ``unless`` in place of ``if``: the rule then matches when a
bound does not hold, which is how a filter reads: ``{"action": "drop", "unless": "size",
"min_side": 512}`` drops every picture with a short side under 512 px, ``{"action": "drop",
"unless": "faces", "count": 1}`` every picture without exactly one face.

A rule whose stage did not run (no classifier score, faces not searched, no pixel statistics, no
bookmark count: a picture from a folder) does not match, with ``if`` or ``unless``. The reason
written to the catalogue names the rule, the value and the threshold or model version, so a
decision can be checked and, with a better model, changed: dropped pictures move to ``dropped/``,
not away. Rules are read and checked (types, ranges, sizes, where a bad one is) in ``stages/rules.py``.
"""

from __future__ import annotations

import logging
from typing import Any

from catalog.tags import TagIndex, normalise
from stages.filters import MONOCHROME_MAX_COLORFULNESS, MONOCHROME_MIN_LINE_ART
from stages.rules import RANGES, condition_of

logger = logging.getLogger(__name__)

_HOLDS = {">=": lambda v, b: v >= b, "<=": lambda v, b: v <= b, "==": lambda v, b: v == b}
_FAILS = {">=": "<", "<=": ">", "==": "!="}


def _matches(rule: dict[str, Any], record: dict[str, Any], artwork: dict[str, Any],
             tags: TagIndex | None = None) -> str | None:
    """Why the rule matches this picture, or None."""
    condition = condition_of(rule)
    if condition in RANGES:
        return _matches_range(rule, condition, _measure(condition, record, artwork))
    if condition == "monochrome":
        return _matches_monochrome(rule, record)
    if condition == "duplicate":
        return _matches_duplicate(record)
    if condition == "r18":
        return f"R-18 (xRestrict {artwork['x_restrict']})" if (artwork.get("x_restrict") or 0) > 0 else None
    if condition == "ai":
        return "AI-generated (aiType 2)" if artwork.get("ai_type") == 2 else None
    if condition == "identity":  # set by `scrapy curate --stages identity` (jobs/identity.py)
        found = record.get("identity")
        if not found or found["matched"] != rule.get("match", True):
            return None
        return f"{'' if found['matched'] else 'not '}the character: {found['reason']}"
    if condition == "no_face":
        return "no face found" if record.get("faces") == [] else None
    if condition == "classifier":
        result = record.get("classifier")
        if not result:
            return None
        score, model = result["score"], result["model"]
        if "min" in rule and score >= rule["min"]:
            return f"classifier {result['target']} {score:.3f} >= {rule['min']} ({model})"
        if "max" in rule and score < rule["max"]:
            return f"classifier {result['target']} {score:.3f} < {rule['max']} ({model})"
        return None
    if "any" in rule:
        return _tag_hit(rule["any"], record, artwork, tags)
    listed = rule["all"] if "all" in rule else rule["none"]
    hits = [_tag_hit([tag], record, artwork, tags) for tag in listed]
    if "all" in rule:
        return "; ".join(hits) if all(hits) else None  # type: ignore[arg-type]
    if any(hits):
        return None
    shown = ", ".join(str(t) for t in listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
    return f"none of the tags {shown}"


def _tag_hit(wanted_tags: list[Any], record: dict[str, Any], artwork: dict[str, Any],
             tags: TagIndex | None) -> str | None:
    """Which of the picture's model or Pixiv tags is one of ``wanted_tags``, or None."""
    if tags is not None:
        return _matches_canonical(wanted_tags, record, artwork, tags)
    wanted = {str(t).casefold() for t in wanted_tags}
    for tag in record.get("model_tags") or []:
        if tag["tag"].casefold() in wanted:
            return f"model tag {tag['tag']} {tag['score']:.3f} ({tag['model']})"
    for tag in artwork.get("tags") or []:
        if tag["name"].casefold() in wanted:
            return f"Pixiv tag {tag['name']}"
    return None


def _measure(condition: str, record: dict[str, Any], artwork: dict[str, Any]) -> dict[str, float] | None:
    """The quantities a range condition bounds, or None when they are not known for this picture."""
    if condition == "size" or condition == "aspect":
        width, height = record.get("width"), record.get("height")
        if not width or not height:
            return None
        if condition == "aspect":
            return {"aspect": max(width, height) / min(width, height)}
        return {"short side": min(width, height), "long side": max(width, height), "pixels": width * height}
    if condition == "faces":
        return None if record.get("faces") is None else {"faces": len(record["faces"])}
    value = artwork.get("bookmark_count") if condition == "bookmarks" else record.get("page")
    return None if value is None else {condition: value}


def _matches_range(rule: dict[str, Any], condition: str, measured: dict[str, float] | None) -> str | None:
    """``if``: every bound holds, the reason shows them; ``unless``: one does not, the reason shows it."""
    if measured is None:
        return None
    shown = []
    for key, (quantity, holds) in RANGES[condition].items():
        if key not in rule:
            continue
        value, bound = measured[quantity], rule[key]
        text = f"{value:.2f}" if quantity == "aspect" else f"{value:g}"
        if not _HOLDS[holds](value, bound):
            return f"{quantity} {text} {_FAILS[holds]} {bound}" if "unless" in rule else None
        shown.append(f"{quantity} {text} {holds} {bound}")
    return None if "unless" in rule else ", ".join(shown)


def _matches_monochrome(rule: dict[str, Any], record: dict[str, Any]) -> str | None:
    colorfulness, line_art = record.get("colorfulness"), record.get("line_art")
    if colorfulness is None:
        return None
    limit = rule.get("max", MONOCHROME_MAX_COLORFULNESS)
    if colorfulness <= limit:
        return f"monochrome (colorfulness {colorfulness:.1f} <= {limit:g})"
    line_limit = rule.get("line_art", MONOCHROME_MIN_LINE_ART)
    if line_limit is not False and line_art is not None and line_art >= line_limit:
        return f"sketch-like line art (line_art {line_art:.2f} >= {line_limit:g}, colorfulness {colorfulness:.1f})"
    return None


def _matches_duplicate(record: dict[str, Any]) -> str | None:
    """Set by ``scrapy curate``'s grouping (jobs/curate.py): the kept copy this one repeats."""
    copy = record.get("duplicate_of")
    if not copy:
        return None
    if copy["kind"] == "exact":
        return f"exact duplicate of {copy['of']} (same sha256)"
    return f"near-duplicate of {copy['of']} (phash distance {copy['distance']})"


def _matches_canonical(wanted_tags: list[Any], record: dict[str, Any], artwork: dict[str, Any],
                       tags: TagIndex) -> str | None:
    """The tag rule through aliases and implications: a picture's tag matches a rule's tag when both
    name the same canonical tag, or the picture's tag implies it. The reason says which rule tag."""
    wanted = {tags.key(str(t)): str(t) for t in wanted_tags}

    def hit(name: str) -> str | None:
        key = next((k for k in tags.keys(name) if k in wanted), None)
        if key is None:
            return None
        return "" if normalise(name) == normalise(wanted[key]) else f" as {wanted[key]}"

    for tag in record.get("model_tags") or []:
        if (via := hit(tag["tag"])) is not None:
            return f"model tag {tag['tag']}{via} {tag['score']:.3f} ({tag['model']})"
    for tag in artwork.get("tags") or []:
        if (via := hit(tag["name"])) is not None:
            return f"Pixiv tag {tag['name']}{via}"
    return None


def manual_reason(decision: str, decided_at: str) -> str:
    """The reason of a picture a person kept or dropped (``scrapy review``)."""
    return f"{decision}: manual review ({decided_at})"


def decide(record: dict[str, Any], artwork: dict[str, Any], rules: list[dict[str, Any]], default: str,
           tags: TagIndex | None = None) -> tuple[str, str]:
    """("keep" or "drop", the reason) for one picture; ``tags``: the catalogue's aliases (``read_index``).

    A manual decision (``record["manual"]``, from ``scrapy review``) outranks every rule.
    """
    manual = record.get("manual")
    if manual:
        return manual["decision"], manual_reason(manual["decision"], manual["decided_at"])
    for n, rule in enumerate(rules, 1):
        why = _matches(rule, record, artwork, tags)
        if why:
            return rule["action"], f"{rule['action']}: {why} (rule {n})"
    return default, f"{default}: no rule matched (CURATE_DEFAULT)"
