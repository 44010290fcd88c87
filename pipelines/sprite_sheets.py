"""The wiki sprites' Scrapy stage: slice each kind's sheet, record it, rewrite the card.

The Isaac wiki spider (``crawler/spiders/isaac_wiki.py``) hands over one ``SpriteSheetItem`` per
kind: the list page's rows, the CSS (or a browser's computed styles) and the sheet's bytes. This
stage is the thin adapter over ``stages.sprites``: ``build_sprites`` cuts and writes the icons
(in a thread, so the crawl goes on), ``Catalog.record_sprite_sheet`` and ``record_wiki_page`` keep
what was cut from what, and ``sprites/card.json`` is rebuilt from the catalogue. It also opens and
closes the crawl's ``crawls`` row, whose status says ``failed`` (and why) when a kind could not be cut.

A page with no item rows, or a sheet that gives not one labelled icon, is a failure, not an empty
dataset: the table has changed, or the CSS the crawl saw positions none of the icons (a page that
adds its icon CSS with JavaScript does that). The kind then keeps what an earlier crawl cut.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.utils.asyncio import run_in_thread

from catalog.store import Catalog, utc_now
from core.items import SpriteSheetItem
from core.storage import catalog_path, output_dir
from pipelines.guarded import STATUS_STAT
from stages.sprites import SheetSlices, SpriteSheetError, build_card, build_sprites, write_card
from stages.sprites.css import resolve_computed
from stages.sprites.slicing import load_sheet
from stages.sprites.table import KINDS

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class SpriteSheetPipeline:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.output = output_dir(crawler.settings)
        self.upscale = crawler.settings.getint("SPRITES_UPSCALE")
        self.catalog: Catalog | None = None
        self.crawl_id: int | None = None
        self.failures: dict[str, str] = {}  # kind -> why it was not cut in this crawl
        self.counts: Counter[str] = Counter()
        # One sheet at a time: each one's cross-sheet twins are judged against the sheets cut before it.
        self.slicing = asyncio.Lock()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SpriteSheetPipeline:
        pipe = cls(crawler)
        crawler.signals.connect(pipe.spider_closed, signal=signals.spider_closed)
        return pipe

    def open_spider(self) -> None:
        spider: Any = self.crawler.spider
        self.catalog = Catalog(catalog_path(self.crawler.settings))
        arguments = spider.crawl_arguments() if hasattr(spider, "crawl_arguments") else {}
        self.crawl_id = self.catalog.start_crawl(spider.name, None, None, arguments)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, SpriteSheetItem):
            return item
        assert self.catalog is not None
        stats = self.crawler.stats
        if item.status == "unchanged":
            self.catalog.record_wiki_page(item.kind, item.page_url, utc_now())
            stats.inc_value("sprite_sheets/unchanged")
            self.counts["unchanged"] += 1
            return item
        if item.status == "failed":
            self._fail(item, item.reason or "the spider gave no reason", logged=True)
            return item
        if not item.rows:  # slicing would drop every labelled sprite this kind has in the catalogue
            skipped = f" ({len(item.skipped_rows)} rows skipped, e.g. {item.skipped_rows[0]})" if item.skipped_rows else ""
            self._fail(item, f"the page has no item rows{skipped}; has its table changed?")
            return item
        async with self.slicing:
            originals = self.catalog.sprite_originals(except_sheet=item.sheet_url)
            try:
                slices = await run_in_thread(self._slice, item, originals)
            except SpriteSheetError as error:
                self._fail(item, f"the sheet {item.sheet_url} cannot be sliced: {error}")
                return item
            finally:
                item.sheet_bytes = None  # the files are written; no need to hold the sheet any longer
            counts = slices.counts()
            if item.rows and counts["labelled"] == 0:
                self._fail(item, self._nothing_positioned(item, slices))
                return item
            now = utc_now()
            self.catalog.record_sprite_sheet(slices.sheet_url, [sprite.row() for sprite in slices.sprites], now)
            self.catalog.record_wiki_page(item.kind, item.page_url, now, sliced={
                "source": item.source, "revid": item.revid, "styles_sha1": item.styles_sha1,
                "sheet_url": item.sheet_url, "sheet_sha1": item.sheet_sha1, "problems": slices.problems,
            })
            self._write_card()
        for name, value in counts.items():
            stats.inc_value(f"sprite_sheets/{item.kind}/{name}", value)
        stats.inc_value("sprite_sheets/sliced")
        self.counts["sliced"] += 1
        logger.info(
            "Sprites %s (sliced, %s): %d labelled, %d unlabelled, %d blank, %d duplicates, %d files%s",
            item.kind, item.source, counts["labelled"], counts["unlabelled"], counts["blank"], counts["duplicates"],
            counts["files"], f"; {counts['problems']} without a sprite (see the card)" if counts["problems"] else "",
        )
        for row in item.skipped_rows:
            logger.info("Sprites %s: table %s", item.kind, row)
        return item

    def record_failure(self, item: Any, reason: str) -> bool:
        """A sheet a stage raised on (pipelines/guarded.py): the kind is failed for this crawl and
        keeps what an earlier crawl cut."""
        if not isinstance(item, SpriteSheetItem) or self.catalog is None:
            return False
        item.status, item.reason = "failed", reason
        self._fail(item, reason, logged=True)
        return True

    def _slice(self, item: SpriteSheetItem, originals: dict[str, str]) -> SheetSlices:
        """Runs in a thread: parse the CSS or convert the computed styles, cut, write the files."""
        assert item.sheet_bytes is not None and item.sheet_url
        resolved = None
        if item.computed is not None:
            size = load_sheet(item.sheet_bytes).size
            resolved = resolve_computed(item.computed, page_url=item.page_url, sheet_sizes={item.sheet_url: size})
        return build_sprites(
            item.css if resolved is None else None, item.rows, item.sheet_bytes, item.sheet_url, item.sheet_sha1,
            self.output, kind=item.kind, base_url=item.css_url, upscale=self.upscale, known_originals=originals,
            resolved=resolved,
        )

    @staticmethod
    def _nothing_positioned(item: SpriteSheetItem, slices: SheetSlices) -> str:
        example = next(iter(slices.problems.values()), "no reason given")
        why = f"not one of the {len(item.rows)} icons got a rectangle from the {item.source} path (e.g. {example})"
        if item.source != "browser":
            why += "; the page may add its icon CSS with JavaScript after load, which only -a render=browser sees"
        return why

    def _fail(self, item: SpriteSheetItem, why: str, logged: bool = False) -> None:
        assert self.catalog is not None
        if not logged:
            logger.error("Sprites %s (failed): %s", item.kind, why)
        self.failures[item.kind] = why
        self.crawler.stats.inc_value("sprite_sheets/failed")
        self.catalog.record_wiki_page(item.kind, item.page_url, utc_now(), status="failed", reason=why)

    def _write_card(self) -> None:
        assert self.catalog is not None
        pages, problems = {}, {}
        for kind in KINDS:
            page = self.catalog.wiki_page(kind)
            if page:
                pages[kind] = page["page_url"]
                problems.update(json.loads(page["problems"] or "{}"))
        card = build_card(self.catalog.sprites(), upscale=self.upscale, pages=pages, problems=problems)
        write_card(self.output, card)

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.catalog is None or self.crawl_id is None:
            return
        if reason != "finished":
            status, why = reason, f"Scrapy closed the spider: {reason}"
        elif self.failures:
            status, why = "failed", "; ".join(f"{kind}: {text}" for kind, text in sorted(self.failures.items()))
        else:
            status, why = "finished", None
        self.catalog.finish_crawl(self.crawl_id, status, why, {}, self.crawler.stats.get_stats())
        self.crawler.stats.set_value(STATUS_STAT, status)
        sprites = self.catalog.sprites()
        logger.info(
            "Crawl %s (%s): %d sheets sliced, %d unchanged, %d failed; %d sprites catalogued (%d labelled); %s",
            self.crawl_id, status, self.counts["sliced"], self.counts["unchanged"], len(self.failures),
            len(sprites), sum(s["labelled"] for s in sprites), self.catalog.path,
        )
        self.catalog.close()
