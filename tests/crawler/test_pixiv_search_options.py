"""Search options: how the tag matches (``match``), OR queries, ``min_bookmarks`` before any
download, and going past the site's deepest page in both date orders.

Real crawls (``scrapy crawl`` in a subprocess) against the local Pixiv-style site.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.slow

SMALL = ("--size", "50", "--image-size", "32")


def visible(truth: list[dict]) -> list[dict]:
    return [w for w in truth if not w["xRestrict"]]


def catalogued(run) -> set[str]:
    return {r[0] for r in run.query("SELECT id FROM artworks")}


def search_params(site) -> list[dict]:
    return [parse_qs(urlparse(r.split(" ", 1)[1]).query) for r in site.stats()["requests"] if "/ajax/search/" in r]


def test_or_queries_partial_tags_and_titles(make_site, run_crawl, tmp_path):
    site = make_site(*SMALL)
    truth = visible(site.truth())
    either = run_crawl(site, tmp_path / "or", tag="甘雨(原神) OR 刻晴(原神) -漫画")
    assert either.returncode == 0, either.log[-3000:]
    expected = {w["id"] for w in truth
                if ("甘雨(原神)" in w["tags"] or "刻晴(原神)" in w["tags"]) and "漫画" not in w["tags"]}
    assert expected and catalogued(either) == expected
    assert {q["s_mode"][0] for q in search_params(site)} == {"s_tag_full"}

    site.reset_stats()
    partial = run_crawl(site, tmp_path / "partial", "-a", "match=partial", tag="雷電")
    assert partial.returncode == 0
    assert catalogued(partial) == {w["id"] for w in truth if any("雷電" in t for t in w["tags"])} != set()
    assert {q["s_mode"][0] for q in search_params(site)} == {"s_tag"}

    title = run_crawl(site, tmp_path / "title", "-a", "match=title", tag="らくがき")
    assert title.returncode == 0
    assert catalogued(title) == {w["id"] for w in truth if "らくがき" in w["title"]} != set()

    refused = run_crawl(site, tmp_path / "bad", "-a", "match=fuzzy")
    assert refused.returncode == 2 and "match must be one of exact, partial, title" in refused.log


def test_min_bookmarks_skips_before_any_download_and_is_not_asked_again(make_site, run_crawl, tmp_path):
    site = make_site(*SMALL)
    truth = {w["id"]: w for w in visible(site.truth()) if not w["deleted"]}
    bar = sorted(w["bookmarkCount"] for w in truth.values())[len(truth) // 2]
    run = run_crawl(site, tmp_path / "out", "-a", f"min_bookmarks={bar}")
    assert run.returncode == 0, run.log[-3000:]
    skipped = dict(run.query("SELECT id, reason FROM artworks WHERE status = 'skipped'"))
    few = {i for i, w in truth.items() if w["bookmarkCount"] < bar}
    assert set(skipped) == few
    one = next(iter(few))
    assert skipped[one] == f"fewer bookmarks than min_bookmarks {bar}: {truth[one]['bookmarkCount']} bookmarks"
    fetched = {r.split("/img-original/")[1].split("/")[-1].split("_")[0]
               for r in site.stats()["requests"] if "/img-original/" in r}
    assert fetched and not fetched & few  # no image of a skipped work was asked for

    site.reset_stats()
    again = run_crawl(site, tmp_path / "out", "-a", f"min_bookmarks={bar}")
    assert again.returncode == 0 and site.stats()["counts"]["illust"] == 0
    lower = run_crawl(site, tmp_path / "out", "-a", "min_bookmarks=1")  # a lower bar: asked again
    assert lower.returncode == 0
    assert site.stats()["counts"]["illust"] == len(few)
    assert dict(lower.query("SELECT id, status FROM artworks WHERE id = ?", (one,)))[one] in ("ok", "skipped")


@pytest.mark.parametrize("order", ["date_d", "date"])
def test_past_the_deepest_page_the_date_window_moves_in_either_order(make_site, run_crawl, tmp_path, order):
    """The site serves one page (60) of any query and answers that page again past it: the crawl
    notices the repeat and moves its date window (ecd back, or scd forward), to every work."""
    site = make_site("--size", "130", "--image-size", "32", "--max-pages", "1")
    run = run_crawl(site, tmp_path / "out", "-a", f"order={order}", "-a", "ai=exclude")
    assert run.returncode == 0, run.log[-3000:]
    wanted = {w["id"] for w in visible(site.truth())}
    assert catalogued(run) == wanted
    moved = "ecd" if order == "date_d" else "scd"
    assert f"continuing with {moved}=" in run.log and "repeats page 1" in run.log
    windows = {q.get(moved, [None])[0] for q in search_params(site)}
    assert len(windows) >= 3  # the first query and at least two moves
    assert run.query("SELECT status FROM crawls") == [("finished",)]
