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
not away.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.tags import TagIndex, normalise
from stages.filters import MONOCHROME_MAX_COLORFULNESS, MONOCHROME_MIN_LINE_ART

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

# Range conditions: for each, its rule keys -> (the quantity bounded, the comparison that must hold).
RANGES: dict[str, dict[str, tuple[str, str]]] = {
    "size": {"min_side": ("short side", ">="), "max_side": ("long side", "<="),
             "min_pixels": ("pixels", ">="), "max_pixels": ("pixels", "<=")},
    "aspect": {"min": ("aspect", ">="), "max": ("aspect", "<=")},
    "faces": {"count": ("faces", "=="), "min": ("faces", ">="), "max": ("faces", "<=")},
    "bookmarks": {"min": ("bookmarks", ">="), "max": ("bookmarks", "<=")},
    "page": {"min": ("page", ">="), "max": ("page", "<=")},
}
CONDITIONS = ("r18", "ai", "classifier", "tag", "no_face", "monochrome", "duplicate", "identity", *RANGES)
TAG_LISTS = ("any", "all", "none")
_HOLDS = {">=": lambda v, b: v >= b, "<=": lambda v, b: v <= b, "==": lambda v, b: v == b}
_FAILS = {">=": "<", "<=": ">", "==": "!="}


class RuleError(ValueError):
    """A curation rule that cannot be understood; the message says which and why."""


def condition_of(rule: dict[str, Any]) -> str:
    """The rule's condition, whether written with ``if`` or ``unless``."""
    return str(rule["if"] if "if" in rule else rule["unless"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for n, rule in enumerate(rules, 1):
        if not isinstance(rule, dict):
            raise RuleError(f"rule {n} is not an object: {rule!r}")
        if rule.get("action") not in ("keep", "drop"):
            raise RuleError(f"rule {n}: action must be keep or drop, not {rule.get('action')!r}")
        if "if" in rule and "unless" in rule:
            raise RuleError(f"rule {n}: write either 'if' or 'unless', not both")
        word = "unless" if "unless" in rule else "if"
        condition = rule.get(word)
        if condition not in CONDITIONS:
            raise RuleError(f"rule {n}: '{word}' must be one of {', '.join(CONDITIONS)}, not {condition!r}")
        if word == "unless" and condition not in RANGES:
            raise RuleError(f"rule {n}: 'unless' works with the range conditions ({', '.join(RANGES)}); "
                            f"write 'if' for {condition}")
        if condition == "classifier" and not (("min" in rule) ^ ("max" in rule)):
            raise RuleError(f"rule {n}: a classifier rule needs exactly one of min or max")
        if condition == "tag":
            given = [key for key in TAG_LISTS if key in rule]
            if len(given) != 1 or not (isinstance(rule[given[0]], list) and rule[given[0]]):
                raise RuleError(f"rule {n}: a tag rule needs one non-empty list: 'any', 'all' or 'none'")
        if condition in RANGES:
            _check_range(n, condition, rule)
        if condition == "monochrome":
            _check_keys(n, condition, rule, ("max", "line_art"))
            if "max" in rule and not (_is_number(rule["max"]) and rule["max"] >= 0):
                raise RuleError(f"rule {n}: a monochrome rule's max (colorfulness) must be a number >= 0, "
                                f"not {rule['max']!r}")
            line = rule.get("line_art", 0)
            if not (line is False or (_is_number(line) and 0 <= line <= 1)):
                raise RuleError(f"rule {n}: a monochrome rule's line_art must be a share from 0 to 1, or false "
                                f"to leave sketches out, not {line!r}")
        if condition == "identity":
            _check_keys(n, condition, rule, ("match",))
            if not isinstance(rule.get("match", True), bool):
                raise RuleError(f"rule {n}: an identity rule's match must be true or false, not {rule['match']!r}")
        if condition == "duplicate":
            _check_keys(n, condition, rule, ("distance",))
            distance = rule.get("distance", 0)
            if not (isinstance(distance, int) and not isinstance(distance, bool) and 0 <= distance <= 64):
                raise RuleError(f"rule {n}: a duplicate rule's distance must be a whole number of bits from 0 to "
                                f"64, not {distance!r}")
    if sum(condition_of(rule) == "duplicate" for rule in rules) > 1:
        raise RuleError("only one duplicate rule can be given: the pictures are grouped once")
    return rules


def _check_keys(n: int, condition: str, rule: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(rule) - {"action", "if", "unless", *allowed})
    if unknown:
        takes = ", ".join(allowed) if allowed else "nothing more"
        raise RuleError(f"rule {n}: a {condition} rule takes {takes}; unknown key {unknown[0]!r}")


def _check_range(n: int, condition: str, rule: dict[str, Any]) -> None:
    bounds = RANGES[condition]
    _check_keys(n, condition, rule, tuple(bounds))
    given = [key for key in bounds if key in rule]
    if not given:
        raise RuleError(f"rule {n}: a {condition} rule needs at least one of {', '.join(bounds)}")
    for key in given:
        if not _is_number(rule[key]) or rule[key] < 0:
            raise RuleError(f"rule {n}: {condition} {key} must be a number >= 0, not {rule[key]!r}")


def read_rules_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rule list in a YAML (``.yaml``/``.yml``) or JSON file; errors name the file and line.

    YAML because people write rules by hand and want comments; the extension decides, so a typo
    in a JSON file is reported as a JSON error rather than guessed at.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot read the curation rules: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            rules = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RuleError(f"{path}{_yaml_error_text(exc)}") from None
    else:
        try:
            rules = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RuleError(f"{path}, line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}") from None
    if not isinstance(rules, list):
        found = "nothing" if rules is None else f"a {type(rules).__name__}"
        raise RuleError(f"{path}: the curation rules must be a list, found {found}")
    return rules


def _yaml_error_text(exc: Exception) -> str:
    """Where and what from a PyYAML error: ', line L column C: not valid YAML: what (while ...)'."""
    mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context", None)
    where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or str(exc)
    if context:
        context_mark = getattr(exc, "context_mark", None)
        what += f" ({context}" + (f" that starts on line {context_mark.line + 1})" if context_mark else ")")
    return f"{where}: not valid YAML: {what}"


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


def load_rules(settings: BaseSettings) -> list[dict[str, Any]]:
    """The checked rules from CURATE_RULES_FILE or CURATE_RULES; [] when none are configured.

    Shared by the crawl's decision stage and ``scrapy curate``, so both read the same rules.
    """
    rules = settings.get("CURATE_RULES") or []
    rules_file = settings.get("CURATE_RULES_FILE")
    if rules_file:
        rules = read_rules_file(rules_file)
    elif isinstance(rules, str):  # from the command line: -s 'CURATE_RULES=[{...}]'
        try:
            rules = json.loads(rules)
        except ValueError as exc:
            raise RuleError(f"curation rules are not valid JSON: {exc}") from None
    if not isinstance(rules, (list, tuple)):
        raise RuleError(f"curation rules must be a list, not {type(rules).__name__}")
    return check_rules(list(rules))


def default_action(settings: BaseSettings) -> str:
    """CURATE_DEFAULT, checked: what happens to a picture no rule matches."""
    default = settings.get("CURATE_DEFAULT")
    if default not in ("keep", "drop"):
        raise RuleError(f"CURATE_DEFAULT must be keep or drop, not {default!r}")
    return str(default)
