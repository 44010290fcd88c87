"""Reading and checking curation rules: what a rule may say, before any picture is judged by it.

The rule language (conditions, bounds, what each matches) is described in ``stages/decide.py``,
which applies the rules. This module makes sure a rule list is one that ``decide`` can apply to
every picture without an error, and says exactly where one is not:

* every key of every rule is known to its condition; every bound is a real, finite number in its
  range (a YAML ``8e-1`` is text in YAML 1.1, a ``.nan`` never compares true, both are refused);
  tags are text;
* a rule read from a file names the file and the rule's line; from ``CURATE_RULES`` or an export's
  ``--where``, where it came from;
* a file is small enough to judge 10,000s of pictures with: at most ``MAX_RULES`` rules,
  ``MAX_TAGS`` tags in a rule, and ``MAX_NODES`` values once YAML's aliases are expanded (aliases
  nested a few deep turn a short file into millions of tags: the "billion laughs").
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core.errors import ProjectError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

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

MAX_RULES = 1_000  # rules in one list
MAX_TAGS = 2_000  # tags in one rule's any/all/none
MAX_NODES = 50_000  # values in a whole YAML document with its aliases expanded


class RuleError(ProjectError, ValueError):
    """A curation rule that cannot be understood; the message says which, where and why."""


def condition_of(rule: dict[str, Any]) -> str:
    """The rule's condition, whether written with ``if`` or ``unless``."""
    return str(rule["if"] if "if" in rule else rule["unless"])


def is_number(value: Any) -> bool:
    """A real, finite number: not a bool, not text that looks like one, not NaN or an infinity."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    """A value as the message shows it, with why a number-looking one is not a number."""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return shown
        if math.isfinite(number):
            return f"{shown} (text: YAML 1.1 reads 8e-1 as text; write 0.8 or 8.0e-1)"
        return f"{shown} (text)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{shown} (not a finite number)"
    return shown


# What each condition's keys must be: key -> (what the message calls it, the test it must pass).
Check = tuple[str, Callable[[Any], bool]]
_SHARE: Check = ("a number from 0 to 1", lambda v: is_number(v) and 0 <= v <= 1)
_AMOUNT: Check = ("a number >= 0", lambda v: is_number(v) and v >= 0)
_TAGS: Check = ("one non-empty list: 'any', 'all' or 'none'",
                lambda v: isinstance(v, list) and 0 < len(v))
KEYS: dict[str, dict[str, Check]] = {
    "r18": {}, "ai": {}, "no_face": {},
    "classifier": {"min": _SHARE, "max": _SHARE},
    "tag": {name: _TAGS for name in TAG_LISTS},
    "monochrome": {
        "max": _AMOUNT,
        "line_art": ("a share from 0 to 1, or false to leave sketches out",
                     lambda v: v is False or (is_number(v) and 0 <= v <= 1)),
    },
    "identity": {"match": ("true or false", lambda v: isinstance(v, bool))},
    "duplicate": {"distance": ("a whole number of bits from 0 to 64",
                               lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 64)},
    **{condition: {key: _AMOUNT for key in bounds} for condition, bounds in RANGES.items()},
}


def check_rules(rules: list[Any], source: str = "", lines: list[int] | None = None) -> list[dict[str, Any]]:
    """The rules, checked; a ``RuleError`` names the first problem, the rule's number, and, when
    ``source`` (a file, ``CURATE_RULES``, ``--where``) and ``lines`` are given, where it is."""
    if len(rules) > MAX_RULES:
        raise RuleError(f"{source + ': ' if source else ''}{len(rules)} rules; at most {MAX_RULES} are read")
    for n, rule in enumerate(rules, 1):
        where = _where(source, n, lines)
        try:
            _check_rule(rule)
        except RuleError as exc:
            raise RuleError(f"{where}: {exc}") from None
    if sum(condition_of(rule) == "duplicate" for rule in rules) > 1:
        raise RuleError(f"{source + ': ' if source else ''}only one duplicate rule can be given: the pictures are grouped once")
    return rules


def _where(source: str, n: int, lines: list[int] | None) -> str:
    line = f" (line {lines[n - 1]})" if lines and n <= len(lines) else ""
    return f"{source}, rule {n}{line}" if source else f"rule {n}{line}"


def _check_rule(rule: Any) -> None:
    if not isinstance(rule, dict):
        raise RuleError(f"is not an object: {_shown(rule)}")
    if rule.get("action") not in ("keep", "drop"):
        raise RuleError(f"action must be keep or drop, not {_shown(rule.get('action'))}")
    if "if" in rule and "unless" in rule:
        raise RuleError("write either 'if' or 'unless', not both")
    word = "unless" if "unless" in rule else "if"
    condition = rule.get(word)
    if not isinstance(condition, str) or condition not in CONDITIONS:
        raise RuleError(f"'{word}' must be one of {', '.join(CONDITIONS)}, not {_shown(condition)}")
    if word == "unless" and condition not in RANGES:
        raise RuleError(f"'unless' works with the range conditions ({', '.join(RANGES)}); write 'if' for {condition}")
    allowed = KEYS[condition]
    unknown = sorted(set(map(str, rule)) - {"action", "if", "unless", *allowed})
    if unknown:
        takes = ", ".join(allowed) if allowed else "nothing more"
        raise RuleError(f"{_a(condition)} rule takes {takes}; unknown key {unknown[0]!r}")
    for key, (what, test) in allowed.items():
        if key in rule and not test(rule[key]):
            if condition == "tag":
                raise RuleError(f"a tag rule needs {what}")
            name = f"{condition} {key}" if condition in RANGES else f"{_a(condition)} rule's {key}"
            if condition == "monochrome" and key == "max":
                name += " (colorfulness)"
            raise RuleError(f"{name} must be {what}, not {_shown(rule[key])}")
    if condition == "classifier" and not (("min" in rule) ^ ("max" in rule)):
        raise RuleError("a classifier rule needs exactly one of min or max")
    if condition == "tag":
        _check_tags(rule)
    if condition in RANGES and not any(key in rule for key in allowed):
        raise RuleError(f"a {condition} rule needs at least one of {', '.join(allowed)}")


def _a(condition: str) -> str:
    return f"{'an' if condition[0] in 'aeio' or condition == 'r18' else 'a'} {condition}"


def _check_tags(rule: dict[str, Any]) -> None:
    given = [key for key in TAG_LISTS if key in rule]
    if len(given) != 1:
        raise RuleError(f"a tag rule needs {_TAGS[0]}")
    tags = rule[given[0]]
    if len(tags) > MAX_TAGS:
        raise RuleError(f"a tag rule lists {len(tags)} tags; at most {MAX_TAGS}")
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            hint = f"; quote it: '{tag}'" if isinstance(tag, (int, float)) and not isinstance(tag, bool) else ""
            raise RuleError(f"a tag rule's tags are text, not {_shown(tag)}{hint}")


# --- reading ---------------------------------------------------------------------------------------


def parse_rules_text(text: str, source: str, yaml: bool = True) -> tuple[Any, list[int]]:
    """The value in ``text`` (YAML, or JSON when ``yaml`` is False) and the line of each item of a
    top-level list (empty for anything else). Errors name ``source`` and the line."""
    if yaml:
        return _parse_yaml(text, source)
    return _parse_json(text, source)


def _parse_yaml(text: str, source: str) -> tuple[Any, list[int]]:
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None, []
        try:
            size = _expanded_size(node)
        except RuleError as exc:
            raise RuleError(f"{source}: {exc}") from None
        if size > MAX_NODES:
            raise RuleError(f"{source}: the rules expand to {size:,} values with their YAML aliases; at most "
                            f"{MAX_NODES:,} are read (aliases nested inside aliases multiply)")
        value = yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as exc:
        raise RuleError(f"{source}{_yaml_error_text(exc)}") from None
    except RecursionError:
        raise RuleError(f"{source}: the rules nest too deeply to read") from None
    lines = [item.start_mark.line + 1 for item in node.value] if isinstance(node, yaml.SequenceNode) else []
    return value, lines


def _expanded_size(root: Any) -> int:
    """How many values a YAML node graph holds once every alias is expanded, counted without
    expanding: a node shared by aliases is counted once per reference, from a memo. A node that
    contains itself (``&a [*a]``) would expand forever."""
    import yaml

    memo: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in busy:
            raise RuleError("an alias refers to the list or mapping it is in: it would never end")
        busy.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        busy.discard(key)
        memo[key] = min(total, MAX_NODES + 1)  # past the cap the exact figure does not matter
        return memo[key]

    return size(root)


def _parse_json(text: str, source: str) -> tuple[Any, list[int]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RuleError(f"{source}, line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise RuleError(f"{source}: the rules nest too deeply to read") from None
    return value, (_json_item_lines(text) if isinstance(value, list) else [])


def _json_item_lines(text: str) -> list[int]:
    """The line each item of a top-level JSON array starts on (the text is known to be valid)."""
    decoder = json.JSONDecoder()
    lines: list[int] = []
    at = text.index("[") + 1
    while True:
        while text[at] in " \t\r\n,":
            at += 1
        if text[at] == "]":
            return lines
        lines.append(text.count("\n", 0, at) + 1)
        _value, at = decoder.raw_decode(text, at)


def rules_in_file(path: str | os.PathLike[str]) -> tuple[list[Any], list[int]]:
    """The rule list in a YAML (``.yaml``/``.yml``) or JSON file, not yet checked, and each rule's line.

    YAML because people write rules by hand and want comments; the extension decides, so a typo
    in a JSON file is reported as a JSON error rather than guessed at.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot read the curation rules: {exc}") from None
    rules, lines = parse_rules_text(text, str(path), yaml=path.suffix.lower() in (".yaml", ".yml"))
    if not isinstance(rules, list):
        found = "nothing" if rules is None else f"a {type(rules).__name__}"
        raise RuleError(f"{path}: the curation rules must be a list, found {found}")
    return rules, lines


def read_rules_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The checked rules of a file; an error names the file and the rule's line."""
    rules, lines = rules_in_file(path)
    return check_rules(rules, str(path), lines)


def _yaml_error_text(exc: Exception) -> str:
    """Where and what from a PyYAML error: ', line L column C: not valid YAML: what (while ...)'."""
    mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context", None)
    where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or str(exc)
    if context:
        context_mark = getattr(exc, "context_mark", None)
        what += f" ({context}" + (f" that starts on line {context_mark.line + 1})" if context_mark else ")")
    return f"{where}: not valid YAML: {what}"


def load_rules(settings: BaseSettings) -> list[dict[str, Any]]:
    """The checked rules from CURATE_RULES_FILE or CURATE_RULES; [] when none are configured.

    Shared by the crawl's decision stage and ``scrapy curate``, so both read the same rules.
    """
    rules_file = settings.get("CURATE_RULES_FILE")
    if rules_file:
        return read_rules_file(rules_file)
    rules, lines = settings.get("CURATE_RULES") or [], None
    if isinstance(rules, str):  # from the command line: -s 'CURATE_RULES=[{...}]'
        rules, lines = _parse_json(rules, "CURATE_RULES")
    if not isinstance(rules, (list, tuple)):
        raise RuleError(f"curation rules must be a list, not {type(rules).__name__}")
    return check_rules(list(rules), "CURATE_RULES", lines)


def default_action(settings: BaseSettings) -> str:
    """CURATE_DEFAULT, checked: what happens to a picture no rule matches."""
    default = settings.get("CURATE_DEFAULT")
    if default not in ("keep", "drop"):
        raise RuleError(f"CURATE_DEFAULT must be keep or drop, not {default!r}")
    return str(default)
