"""Stage: keep or drop each picture by declarative rules over what the earlier stages found.

Rules come from ``CURATE_RULES`` (a list; or a JSON file named by ``CURATE_RULES_FILE``), tried in
order, the first that matches decides; ``CURATE_DEFAULT`` decides when none does. Each rule is a
dict with ``action`` (keep or drop) and ``if``, one of:

    {"action": "drop", "if": "r18"}                          the artwork is R-18 (xRestrict > 0)
    {"action": "drop", "if": "ai"}                           the artwork is AI-generated (aiType 2)
    {"action": "keep", "if": "classifier", "min": 0.8}       the classifier's target score >= min
    {"action": "drop", "if": "classifier", "max": 0.2}       ... < max
    {"action": "keep", "if": "tag", "any": ["mona_(genshin_impact)", "モナ(原神)", "莫娜"]}
                                                             a model tag or a Pixiv tag, any case
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
from crawler.storage import DROPPED_DIR, output_dir

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

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


def _matches(rule: dict[str, Any], record: dict[str, Any], artwork: dict[str, Any]) -> str | None:
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
    wanted = {str(t).casefold() for t in rule["any"]}
    for tag in record.get("model_tags") or []:
        if tag["tag"].casefold() in wanted:
            return f"model tag {tag['tag']} {tag['score']:.3f} ({tag['model']})"
    for tag in artwork.get("tags") or []:
        if tag["name"].casefold() in wanted:
            return f"Pixiv tag {tag['name']}"
    return None


def decide(record: dict[str, Any], artwork: dict[str, Any], rules: list[dict[str, Any]], default: str) -> tuple[str, str]:
    """("keep" or "drop", the reason) for one picture."""
    for n, rule in enumerate(rules, 1):
        why = _matches(rule, record, artwork)
        if why:
            return rule["action"], f"{rule['action']}: {why} (rule {n})"
    return default, f"{default}: no rule matched (CURATE_DEFAULT)"


class DecisionPipeline:
    def __init__(self, crawler: Crawler):
        s = crawler.settings
        rules = s.get("CURATE_RULES") or []
        rules_file = s.get("CURATE_RULES_FILE")
        try:
            if rules_file:
                rules = json.loads(Path(rules_file).read_text(encoding="utf-8"))
            elif isinstance(rules, str):  # from the command line: -s 'CURATE_RULES=[{...}]'
                rules = json.loads(rules)
        except ValueError as exc:
            raise RuleError(f"curation rules are not valid JSON: {exc}") from None
        if not isinstance(rules, (list, tuple)):
            raise RuleError(f"curation rules must be a list, not {type(rules).__name__}")
        if not rules:
            raise NotConfigured  # no rules: every stored picture is kept, as before curation
        self.rules = check_rules(list(rules))
        self.default = s.get("CURATE_DEFAULT")
        if self.default not in ("keep", "drop"):
            raise RuleError(f"CURATE_DEFAULT must be keep or drop, not {self.default!r}")
        self.delete_dropped = s.getbool("CURATE_DELETE_DROPPED")
        self.root = Path(s.get("FILES_STORE") or output_dir(s))
        self.stats = crawler.stats
        logger.info("Decision: %d rules, default %s", len(self.rules), self.default)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DecisionPipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArtworkItem):
            return item
        for record in item.images:
            if record.get("status") != "kept":
                continue
            action, reason = decide(record, item.artwork, self.rules, self.default)
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
