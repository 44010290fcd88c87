"""Scrapy adapter of the decision stage (stages/decide.py: the rules and what they match): keeps or
drops each kept picture of an item, moving a dropped one to ``dropped/`` (or deleting it with
``CURATE_DELETE_DROPPED``). Off when there are neither rules nor manual decisions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured

from catalog.store import read_manual_decisions
from catalog.tags import read_index
from core.items import ArtworkItem
from core.storage import catalog_path, files_root, move_to_status
from stages.decide import decide
from stages.rules import condition_of, default_action, load_rules

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class DecisionPipeline:
    def __init__(self, crawler: Crawler):
        s = crawler.settings
        self.rules = load_rules(s)
        # Read once, like the aliases: a re-crawled picture keeps what a person decided in `scrapy review`.
        self.manual = read_manual_decisions(catalog_path(s))
        if not self.rules and not self.manual:
            raise NotConfigured  # no rules: every stored picture is kept, as before curation
        self.default = default_action(s)
        self.delete_dropped = s.getbool("CURATE_DELETE_DROPPED")
        self.root = files_root(s)
        self.stats = crawler.stats
        # Read once: aliases made during the crawl (scrapy tags in another shell) count from the next one.
        self.tags = read_index(catalog_path(s)) if any(condition_of(r) == "tag" for r in self.rules) else None
        logger.info("Decision: %d rules, default %s%s", len(self.rules), self.default,
                    ", tags by canonical tag" if self.tags else "")
        for condition, what in (("duplicate", "groups pictures"), ("identity", "needs the whole set of pictures")):
            if any(condition_of(r) == condition for r in self.rules):
                logger.info("Decision: the %s rule %s, in `scrapy curate` only; in a crawl it never matches",
                            condition, what)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DecisionPipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArtworkItem):
            return item
        for record in item.images:
            if record.get("status") != "kept":
                continue
            manual = self.manual.get((str(item.artwork["id"]), int(record["page"])))
            if manual:
                record["manual"] = manual
            elif not self.rules:
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
            record["path"] = move_to_status(self.root, record["path"], "dropped")
        record["status"] = "dropped"
