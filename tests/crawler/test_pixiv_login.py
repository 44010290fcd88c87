"""The login: checked at start as PixivUtil2 checks it, never trusted because a cookie is set;
``PIXIV_COOKIES`` (a whole cookie string) for Cloudflare; premium-only orders fall back once.

Real crawls (``scrapy crawl`` in a subprocess) against the local Pixiv-style site.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.slow

SESSION = "demo-session-0001"  # the local site's account
SMALL = ("--size", "50", "--image-size", "32")


def searches(site) -> list[dict]:
    return [parse_qs(urlparse(r.split(" ", 1)[1]).query) for r in site.stats()["requests"] if "/ajax/search/" in r]


def test_a_dead_cookie_crawls_as_a_visitor_and_never_records_a_logged_in_coverage(make_site, run_crawl, tmp_path):
    site = make_site(*SMALL)
    dead = "999_" + "d" * 28
    run = run_crawl(site, tmp_path / "out", env={"PIXIV_PHPSESSID": dead})
    assert run.returncode == 0, run.log[-3000:]
    assert "The Pixiv cookie does not log in" in run.log and dead not in run.log
    assert json.loads(run.query("SELECT arguments FROM crawls")[0][0])["logged_in"] is False
    ((key, query_key),) = run.query("SELECT s.query_key, c.query_key FROM search_coverage s, crawls c")
    assert json.loads(key)["login"] is False and key == query_key
    r18 = [w["id"] for w in site.truth() if w["xRestrict"] and not w["deleted"]]
    assert r18 and all(s == "login_required" for (s,) in run.query(
        f"SELECT status FROM artworks WHERE id IN ({','.join('?' * len(r18))})", tuple(r18)))

    site.reset_stats()
    refused = run_crawl(site, tmp_path / "out", "-a", "mode=r18", env={"PIXIV_PHPSESSID": dead})
    assert refused.returncode == 1
    assert refused.query("SELECT status, reason FROM crawls ORDER BY id DESC LIMIT 1") == [
        ("failed", "a search page failed: the Pixiv login is dead, and mode=r18 needs a working one")]
    assert site.stats()["counts"]["search"] == 0 and site.stats()["counts"]["top"] == 1


def test_a_working_login_is_recorded_and_its_details_keep_english_translations(make_site, run_crawl, tmp_path):
    site = make_site(*SMALL)
    run = run_crawl(site, tmp_path / "out", env={"PIXIV_PHPSESSID": SESSION})
    assert run.returncode == 0
    assert "Logged in to Pixiv as user 90000000 (premium: no)" in run.log
    assert json.loads(run.query("SELECT query_key FROM search_coverage")[0][0])["login"] is True
    assert run.query("SELECT count(*) FROM artworks WHERE x_restrict > 0 AND status = 'ok'")[0][0] > 0
    # the account's language has no translations; the details ask for English ones
    assert run.query("SELECT translation_en FROM tags WHERE name = '原神'") == [("Genshin Impact",)]


def test_a_whole_cookie_string_passes_cloudflare_and_never_leaks(make_site, run_crawl, tmp_path):
    site = make_site(*SMALL, "--cloudflare", "cfok123")
    blocked = run_crawl(site, tmp_path / "blocked", env={"PIXIV_PHPSESSID": SESSION})
    assert blocked.returncode == 1
    assert "the top page answered HTTP 403" in blocked.log and "cf_clearance" in blocked.log

    cookies = f"first_visit=1; cf_clearance=cfok123; PHPSESSID={SESSION}"
    feed = tmp_path / "items.jsonl"
    run = run_crawl(site, tmp_path / "out", "-O", str(feed), "-s", "LOG_LEVEL=DEBUG", env={"PIXIV_COOKIES": cookies})
    assert run.returncode == 0, run.log[-3000:]
    assert "Logged in to Pixiv as user 90000000" in run.log
    stored = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix in ("", ".db", ".db-wal", ".json")]
    for text in [run.log, feed.read_text(), *(p.read_bytes().decode("latin-1") for p in stored)]:
        assert "cfok123" not in text and SESSION not in text


def test_a_premium_order_without_premium_says_so_once_and_searches_newest_first(make_site, run_crawl, tmp_path):
    site = make_site(*SMALL)
    run = run_crawl(site, tmp_path / "out", "-a", "order=popular_d", env={"PIXIV_PHPSESSID": SESSION})
    assert run.returncode == 0
    assert run.log.count("order=popular_d sorts by popularity for Pixiv Premium accounts only") == 1
    assert {q["order"][0] for q in searches(site)} == {"date_d"}
    assert run.query("SELECT count(*) FROM search_coverage") == [(1,)]  # a newest-first run, covered as one

    premium = make_site(*SMALL, "--premium")
    run = run_crawl(premium, tmp_path / "premium", "-a", "order=popular_d", env={"PIXIV_PHPSESSID": SESSION})
    assert run.returncode == 0 and "sorts by popularity" not in run.log
    assert {q["order"][0] for q in searches(premium)} == {"popular_d"}
    assert run.query("SELECT count(*) FROM search_coverage") == [(0,)]  # not newest first: no early stop
