"""The sprite-sheet stage without a crawl: what it refuses to record, and the crawl's status."""

from __future__ import annotations

import asyncio
import hashlib

from scrapy.utils.test import get_crawler

from catalog.store import Catalog
from core.items import SpriteSheetItem
from crawler.spiders.isaac_wiki import IsaacWikiSpider
from pipelines.sprite_sheets import SpriteSheetPipeline
from tests.conftest import project_settings


def open_pipeline(tmp_path) -> SpriteSheetPipeline:
    crawler = get_crawler(IsaacWikiSpider, settings_dict=project_settings(OUTPUT_DIR=str(tmp_path)))
    crawler.spider = IsaacWikiSpider(kinds="trinkets")
    crawler.spider.base_url = "http://wiki.invalid"
    pipe = SpriteSheetPipeline.from_crawler(crawler)
    pipe.open_spider()
    return pipe


def test_a_page_without_rows_is_a_failure_that_keeps_the_earlier_sprites(tmp_path):
    pipe = open_pipeline(tmp_path)
    pipe.catalog.record_sprite_sheet("http://up.invalid/T.png", [{
        "key": "trinket:001", "kind": "trinket", "game_id": 1, "css_id": "trinket_001", "labelled": 1,
        "sheet_url": "http://up.invalid/T.png", "x": 0, "y": 0, "w": 32, "h": 32,
        "sha256": hashlib.sha256(b"x").hexdigest(), "blank": 0,
    }], "2026-01-01T00:00:00+00:00")
    item = SpriteSheetItem(kind="trinket", page_url="http://wiki.invalid/wiki/x", source="api", rows=[],
                           skipped_rows=["row 2: 3 cells, 7 expected"], css="", sheet_url="http://up.invalid/T.png",
                           sheet_bytes=b"not read")
    asyncio.run(pipe.process_item(item))
    failed = SpriteSheetItem(kind="collectible", page_url="http://wiki.invalid/wiki/y", status="failed",
                             reason="the page answered HTTP 503")
    asyncio.run(pipe.process_item(failed))
    pipe.spider_closed(pipe.crawler.spider, "finished")

    catalog = Catalog(tmp_path / "catalog.db")
    assert [s["key"] for s in catalog.sprites()] == ["trinket:001"]
    page = catalog.wiki_page("trinket")
    assert page["status"] == "failed" and "no item rows (1 rows skipped, e.g. row 2: 3 cells" in page["reason"]
    assert catalog.wiki_page("collectible")["reason"] == "the page answered HTTP 503"
    status, reason = catalog.conn.execute("SELECT status, reason FROM crawls").fetchone()
    assert status == "failed" and reason.startswith("collectible: the page answered HTTP 503; trinket: the page")


def test_an_unchanged_page_moves_only_its_check_time(tmp_path):
    pipe = open_pipeline(tmp_path)
    pipe.catalog.record_wiki_page("trinket", "http://wiki.invalid/wiki/x", "2026-01-01T00:00:00+00:00",
                                  sliced={"source": "api", "revid": 7, "sheet_sha1": "ab"})
    asyncio.run(pipe.process_item(SpriteSheetItem(kind="trinket", page_url="http://wiki.invalid/wiki/x",
                                                  status="unchanged")))
    pipe.spider_closed(pipe.crawler.spider, "finished")
    page = Catalog(tmp_path / "catalog.db").wiki_page("trinket")
    assert (page["status"], page["revid"], page["sliced_at"]) == ("ok", 7, "2026-01-01T00:00:00+00:00")
    assert page["checked_at"] > page["sliced_at"]
