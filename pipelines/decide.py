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
                                                             catalogue (crawler/tags.py), by canonical
                                                             tag: 莫娜 matches when it is an alias
    {"action": "drop", "if": "no_face"}                      the face stage found no face

A rule whose stage did not run (no classifier score, faces not searched) does not match. The
reason written to the catalogue names the rule, the value and the model version, so a decision can
be checked and, with a better model, changed: dropped pictures move to ``dropped/``, not away.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured

from crawler.items import ArtworkItem
from crawler.storage import DROPPED_DIR, catalog_path, output_dir
from crawler.tags import TagIndex, normalise, read_index

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

CONDITIONS = ("r18", "ai", "classifier", "tag", "no_face")


class RuleError(ValueError):
    """A curation rule that cannot be understood; the message says which and why."""


def check_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for n, rule in enumerate(rules, 1):
        if not isinstance(rule, dict):
            raise RuleError(f"rule {n} is not an object: {rule!r}")
        if rule.get("action") not in ("keep", "drop"):
            raise RuleError(f"rule {n}: action must be keep or drop, not {rule.get('action')!r}")
        condition = rule.get("if")
        if condition not in CONDITIONS:
            raise RuleError(f"rule {n}: 'if' must be one of {', '.join(CONDITIONS)}, not {condition!r}")
        if condition == "classifier" and not (("min" in rule) ^ ("max" in rule)):
            raise RuleError(f"rule {n}: a classifier rule needs exactly one of min or max")
        if condition == "tag" and not (isinstance(rule.get("any"), list) and rule["any"]):
            raise RuleError(f"rule {n}: a tag rule needs a non-empty list 'any'")
    return rules


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
    condition = rule["if"]
    if condition == "r18":
        return f"R-18 (xRestrict {artwork['x_restrict']})" if (artwork.get("x_restrict") or 0) > 0 else None
    if condition == "ai":
        return "AI-generated (aiType 2)" if artwork.get("ai_type") == 2 else None
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
    if tags is not None:
        return _matches_canonical(rule, record, artwork, tags)
    wanted = {str(t).casefold() for t in rule["any"]}
    for tag in record.get("model_tags") or []:
        if tag["tag"].casefold() in wanted:
            return f"model tag {tag['tag']} {tag['score']:.3f} ({tag['model']})"
    for tag in artwork.get("tags") or []:
        if tag["name"].casefold() in wanted:
            return f"Pixiv tag {tag['name']}"
    return None


def _matches_canonical(rule: dict[str, Any], record: dict[str, Any], artwork: dict[str, Any], tags: TagIndex) -> str | None:
    """The tag rule through aliases and implications: a picture's tag matches a rule's tag when both
    name the same canonical tag, or the picture's tag implies it. The reason says which rule tag."""
    wanted = {tags.key(str(t)): str(t) for t in rule["any"]}

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


def decide(record: dict[str, Any], artwork: dict[str, Any], rules: list[dict[str, Any]], default: str,
           tags: TagIndex | None = None) -> tuple[str, str]:
    """("keep" or "drop", the reason) for one picture; ``tags``: the catalogue's aliases (``read_index``)."""
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
    return default


class DecisionPipeline:
    def __init__(self, crawler: Crawler):
        s = crawler.settings
        self.rules = load_rules(s)
        if not self.rules:
            raise NotConfigured  # no rules: every stored picture is kept, as before curation
        self.default = default_action(s)
        self.delete_dropped = s.getbool("CURATE_DELETE_DROPPED")
        self.root = Path(s.get("FILES_STORE") or output_dir(s))
        self.stats = crawler.stats
        # Read once: aliases made during the crawl (scrapy tags in another shell) count from the next one.
        self.tags = read_index(catalog_path(s)) if any(r["if"] == "tag" for r in self.rules) else None
        logger.info("Decision: %d rules, default %s%s", len(self.rules), self.default,
                    ", tags by canonical tag" if self.tags else "")

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DecisionPipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArtworkItem):
            return item
        for record in item.images:
            if record.get("status") != "kept":
                continue
            action, reason = decide(record, item.artwork, self.rules, self.default, self.tags)
            record["reason"] = reason
            self.stats.inc_value(f"decision/{action}")
            if action == "drop":
                self._drop(record)
        return item

    def _drop(self, record: dict[str, Any]) -> None:
        source = self.root / record["path"]
        if self.delete_dropped:
            source.unlink(missing_ok=True)
            record["path"] = None
        else:
            relative = f"{DROPPED_DIR}/{Path(record['path']).name}"
            (self.root / DROPPED_DIR).mkdir(parents=True, exist_ok=True)
            os.replace(source, self.root / relative)
            record["path"] = relative
        record["status"] = "dropped"
