"""Sources other than tag search: an artist's works (``-a user=ID``), optionally under one of the
artist's tags (``-a user_tag=TAG``), and someone's bookmarks (``-a bookmarks=ID``, ``rest``,
``bookmark_tag``), the rankings (``-a ranking=MODE``, ``date``, ``content``) and the feed of
followed artists (``-a following=1``), on the same pipelines, catalogue and coverage rules.

Real crawls (``scrapy crawl`` in a subprocess) against the local Pixiv-style site.
"""

from __future__ import annotations

import collections
import json

import pytest

from core.errors import ArgumentError
from crawler.spiders.pixiv import PixivSpider
from tests.crawler.test_crash_safety import interrupt_when, snapshot, start_crawl

pytestmark = pytest.mark.slow

SMALL_IMAGES = ("--image-size", "40", "--latency-ms", "2")


def works_by_user(truth: list[dict]) -> dict[str, list[dict]]:
    by_user = collections.defaultdict(list)
    for work in truth:
        by_user[work["userId"]].append(work)
    return by_user


def counts(site) -> dict[str, int]:
    return site.stats()["counts"]


def test_an_artists_works_whole_then_nothing_new_then_only_the_new_ones(make_site, run_crawl, tmp_path):
    site = make_site("--size", "400", *SMALL_IMAGES)
    by_user = works_by_user(site.truth())
    # the artist with most works among those with a deleted one (profile/all still names it)
    user = max((u for u, ws in by_user.items() if any(w["deleted"] for w in ws)), key=lambda u: len(by_user[u]))
    theirs = by_user[user]
    assert any(w["illustType"] == 1 for w in theirs) and any(w["illustType"] != 1 for w in theirs)
    out = tmp_path / "out"

    first = run_crawl(site, out, "-a", f"user={user}", tag=None)
    assert first.returncode == 0, first.log[-3000:]
    statuses = dict(first.query("SELECT id, status FROM artworks"))
    assert set(statuses) == {w["id"] for w in theirs}
    for work in theirs:
        expected = "deleted" if work["deleted"] else "login_required" if work["xRestrict"] else "ok"
        assert statuses[work["id"]] == expected, work
    pages = sum(w["pageCount"] for w in theirs if not w["deleted"] and not w["xRestrict"])
    assert first.query("SELECT count(*) FROM images")[0][0] == pages
    assert first.query("SELECT count(*) FROM artwork_sources WHERE source = ?", (f"user:{user}",))[0][0] == len(theirs)
    assert first.query("SELECT status, arguments FROM crawls")[0][0] == "finished"
    assert json.loads(first.query("SELECT arguments FROM crawls")[0][0])["user"] == user
    (key,) = first.query("SELECT query_key FROM search_coverage")[0]
    assert json.loads(key) == {"source": "user", "user": user, "user_tag": None, "login": False}

    site.reset_stats()
    again = run_crawl(site, out, "-a", f"user={user}", tag=None)
    assert again.returncode == 0
    seen = counts(site)
    assert seen["user_all"] == 1 and seen["illust"] == 0 and seen["image"] == 0, seen

    added = site.control("/_mock/add?count=150", "POST")["added"]
    new = {w["id"] for w in site.truth() if w["id"] in set(added) and w["userId"] == user}
    assert new
    site.reset_stats()
    newer = run_crawl(site, out, "-a", f"user={user}", "-a", "stop_after=3", tag=None)
    assert newer.returncode == 0
    assert counts(site)["illust"] == len(new)  # a detail for each new work, none for the known ones
    assert newer.query("SELECT status FROM crawls ORDER BY id DESC LIMIT 1") == [("stopped_early",)]
    assert {r[0] for r in newer.query("SELECT id FROM artworks")} >= new

    # the same artist's tag: every work is known, so no detail; a second source on the same rows
    site.reset_stats()
    tagged = run_crawl(site, out, "-a", f"user={user}", "-a", "user_tag=原神", tag=None)
    assert tagged.returncode == 0
    assert counts(site)["illust"] == 0 and counts(site)["user_tag"] == 1
    both = tagged.query(
        "SELECT artwork_id FROM artwork_sources WHERE source IN (?, ?) GROUP BY artwork_id HAVING count(*) = 2",
        (f"user:{user}", f"user:{user}/tag:原神"),
    )
    live = [w for w in site.truth() if w["userId"] == user and not w["deleted"] and not w["xRestrict"]]
    assert {r[0] for r in both} == {w["id"] for w in live}


def test_an_artist_killed_mid_crawl_then_rerun_equals_a_clean_crawl(make_site, run_crawl, tmp_path):
    """Two profile/illusts batches and two illustmanga/tag pages (48 a page), kill -9 between."""
    site = make_site("--size", "1300", *SMALL_IMAGES)
    truth = site.truth()
    by_user = works_by_user(truth)
    user = max(by_user, key=lambda u: len(by_user[u]))
    assert len(by_user[user]) > 48
    reference = run_crawl(site, tmp_path / "ref", "-a", f"user={user}", tag=None)
    assert reference.returncode == 0

    out = tmp_path / "killed"
    interrupt_when(start_crawl(site, out, "-a", f"user={user}", tag=None), out, 40)
    rerun = run_crawl(site, out, "-a", f"user={user}", tag=None)
    assert rerun.returncode == 0, rerun.log[-3000:]
    assert snapshot(out) == snapshot(reference.output)
    assert [r[0] for r in rerun.query("SELECT status FROM crawls ORDER BY id")] == ["interrupted", "finished"]

    # an artist's tag over two pages: exactly the works filed under it, and nothing fetched twice
    site.reset_stats()
    tagged = run_crawl(site, out, "-a", f"user={user}", "-a", "user_tag=原神", tag=None)
    assert tagged.returncode == 0
    expected = {w["id"] for w in by_user[user] if not w["deleted"] and not w["xRestrict"] and "原神" in w["tags"]}
    assert len(expected) > 48
    listed = tagged.query("SELECT artwork_id FROM artwork_sources WHERE source = ?", (f"user:{user}/tag:原神",))
    assert {r[0] for r in listed} == expected
    assert counts(site)["user_tag"] == 2 and counts(site)["illust"] == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"tag": "原神", "user": "11"}, "tag and user are 2 sources"),
        ({"user": "11", "bookmarks": "12"}, "user and bookmarks are 2 sources"),
        ({"user_tag": "R-18"}, "user_tag goes with user=ID only"),
        ({"bookmarks": "11", "user_tag": "R-18"}, "user_tag goes with user=ID only"),
        ({"user": "11", "rest": "hide"}, "rest goes with bookmarks=ID only"),
        ({"tag": "原神", "bookmark_tag": "x"}, "bookmark_tag goes with bookmarks=ID only"),
        ({"bookmarks": "11", "rest": "all"}, "rest must be one of show, hide"),
        ({"bookmarks": "11", "type": "manga"}, "type applies to tag search only, not to bookmarks"),
        ({"ranking": "hourly"}, "ranking must be one of daily"),
        ({"ranking": "daily", "date": "2024-01-05"}, "date must be a day as YYYYMMDD"),
        ({"ranking": "daily", "content": "novel"}, "content must be one of illust, manga, ugoira"),
        ({"user": "11", "date": "20240105"}, "date goes with ranking=MODE only"),
        ({"following": "yes"}, "following takes 1"),
        ({"following": "1", "ranking": "daily"}, "ranking and following are 2 sources"),
        ({"user": "11", "order": "date"}, "order applies to tag search only"),
        ({"user": "11", "since": "2024-01-01", "mode": "safe"}, "mode, since applies"),
        ({"user": "eleven"}, "user id"),
        ({"user": "11", "ai": "maybe"}, "ai must be one of"),
        ({}, "give a source"),
    ],
)
def test_arguments_that_do_not_go_together_are_refused(arguments, message):
    with pytest.raises(ArgumentError, match=message):
        PixivSpider(**arguments)


def test_a_bad_combination_is_one_line_and_exit_code_2(pixiv_site, run_crawl, tmp_path):
    refused = run_crawl(pixiv_site, tmp_path / "out", "-a", "user=11", tag="原神")
    assert refused.returncode == 2
    assert "scrapy crawl: error: tag and user are 2 sources; give one per run" in refused.log
    assert "Traceback" not in refused.log


def test_an_unknown_artist_ends_the_crawl_failed_with_the_sites_reason(pixiv_site, run_crawl, tmp_path):
    run = run_crawl(pixiv_site, tmp_path / "out", "-a", "user=1", tag=None)
    assert run.returncode == 1
    ((status, reason),) = run.query("SELECT status, reason FROM crawls")
    assert status == "failed" and reason.startswith("a listing page failed: profile/all: HTTP 404: API error: 該当ユーザーは")
    assert run.query("SELECT count(*) FROM artworks") == [(0,)]
    assert run.query("SELECT count(*) FROM search_coverage") == [(0,)]


OWN = "90000000"  # the account whose login the local site's session cookie is
COOKIE = {"PIXIV_PHPSESSID": "demo-session-0001"}


def test_bookmarks_public_private_by_tag_and_killed_then_rerun(make_site, run_crawl, tmp_path):
    site = make_site("--size", "700", *SMALL_IMAGES)
    truth = {w["id"]: w for w in site.truth()}
    gone = next(w for w in truth.values() if w["deleted"] and w["userId"] != OWN)
    site.control(f"/_mock/bookmark?user={OWN}&id={gone['id']}", "POST")  # masked in the listing now
    marks = site.control(f"/_mock/bookmarks?user={OWN}")
    public = [m["id"] for m in marks if not m["private"]]
    private = [m["id"] for m in marks if m["private"]]
    assert len(public) > 48  # two pages
    source = ("-a", f"bookmarks={OWN}")

    reference = run_crawl(site, tmp_path / "ref", *source, tag=None)
    assert reference.returncode == 0, reference.log[-3000:]
    statuses = dict(reference.query("SELECT id, status FROM artworks"))
    assert set(statuses) == set(public)
    assert statuses[gone["id"]] == "deleted"
    assert {i for i, s in statuses.items() if s == "login_required"} == {i for i in public if truth[i]["xRestrict"]}
    listed = reference.query("SELECT artwork_id FROM artwork_sources WHERE source = ?", (f"bookmarks:{OWN}",))
    assert {r[0] for r in listed} == set(public)

    out = tmp_path / "killed"
    interrupt_when(start_crawl(site, out, *source, tag=None), out, 25)
    assert run_crawl(site, out, *source, tag=None).returncode == 0
    assert snapshot(out) == snapshot(reference.output)

    site.reset_stats()
    assert run_crawl(site, reference.output, *source, tag=None).returncode == 0
    assert counts(site)["illust"] == 0 and counts(site)["bookmarks"] == 2

    # two new bookmarks on top, of works nobody catalogued yet: only they are fetched
    fresh = [w["id"] for w in truth.values()
             if w["id"] not in statuses and not w["deleted"] and w["userId"] != OWN][:2]
    for work_id in fresh:
        site.control(f"/_mock/bookmark?user={OWN}&id={work_id}", "POST")
    site.reset_stats()
    newer = run_crawl(site, reference.output, *source, "-a", "stop_after=3", tag=None)
    assert newer.returncode == 0
    assert counts(site)["illust"] == 2 and counts(site)["bookmarks"] == 1
    assert newer.query("SELECT status FROM crawls ORDER BY id DESC LIMIT 1") == [("stopped_early",)]

    # private ones: only with the owner's login, and never someone else's
    refused = run_crawl(site, reference.output, *source, "-a", "rest=hide", tag=None)
    assert refused.returncode == 2 and "rest=hide lists your own private bookmarks" in refused.log
    hidden = run_crawl(site, reference.output, *source, "-a", "rest=hide", tag=None, env=COOKIE)
    assert hidden.returncode == 0
    listed = hidden.query("SELECT artwork_id FROM artwork_sources WHERE source = ?", (f"bookmarks:{OWN}/hide",))
    assert {r[0] for r in listed} == set(private)
    site.reset_stats()
    other = run_crawl(site, reference.output, "-a", "bookmarks=90000001", "-a", "rest=hide", tag=None, env=COOKIE)
    assert other.returncode == 1
    assert other.query("SELECT reason FROM crawls ORDER BY id DESC LIMIT 1") == [(
        "a listing page failed: rest=hide lists your own private bookmarks only: this login is user 90000000, "
        "not 90000001",)]
    assert counts(site)["bookmarks"] == 0

    # under one bookmark tag: exactly the public bookmarks filed so, nothing fetched twice
    site.reset_stats()
    tagged = run_crawl(site, reference.output, *source, "-a", "bookmark_tag=甘雨(原神)", tag=None)
    assert tagged.returncode == 0 and counts(site)["illust"] == 0
    listed = tagged.query("SELECT artwork_id FROM artwork_sources WHERE source = ?", (f"bookmarks:{OWN}/tag:甘雨(原神)",))
    expected = {i for i in public + fresh if "甘雨(原神)" in truth[i]["tags"]}
    assert expected and {r[0] for r in listed} == expected


def test_a_ranking_whole_then_known_then_its_day_given_and_killed_then_rerun(make_site, run_crawl, tmp_path):
    site = make_site("--size", "700", *SMALL_IMAGES)
    out = tmp_path / "out"
    daily = run_crawl(site, out, "-a", "ranking=daily", tag=None)
    assert daily.returncode == 0, daily.log[-3000:]
    ((key, label),) = daily.query("SELECT query_key, tag FROM search_coverage")
    day = json.loads(key)["date"]
    assert label == f"ranking:daily/{day}" and len(day) == 8  # the day the site answered with
    listed = {r[0] for r in daily.query("SELECT artwork_id FROM artwork_sources WHERE source = ?", (label,))}
    truth = {w["id"]: w for w in site.truth()}
    assert listed and all(not truth[i]["xRestrict"] and truth[i]["aiType"] != 2 for i in listed)
    assert {r[0] for r in daily.query("SELECT id FROM artworks WHERE status = 'ok'")} == listed

    site.reset_stats()
    dated = run_crawl(site, out, "-a", "ranking=daily", "-a", f"date={day}", "-a", "stop_after=5", tag=None)
    assert dated.returncode == 0
    assert counts(site)["illust"] == 0 and counts(site)["ranking"] == 1
    # the undated run's coverage was the day's: the same day asked by date stops early on it
    assert dated.query("SELECT status FROM crawls ORDER BY id DESC LIMIT 1") == [("stopped_early",)]

    refused = run_crawl(site, out, "-a", "ranking=daily_r18", tag=None)
    assert refused.returncode == 2 and "ranking=daily_r18 is R-18: it needs a login" in refused.log
    r18 = run_crawl(site, out, "-a", "ranking=daily_r18", tag=None, env=COOKIE)
    assert r18.returncode == 0
    ranked = r18.query("SELECT artwork_id FROM artwork_sources WHERE source = ?", (f"ranking:daily_r18/{day}",))
    assert ranked and all(truth[r[0]]["xRestrict"] for r in ranked)
    manga = run_crawl(site, out, "-a", "ranking=weekly", "-a", "content=manga", "-a", "pages=1", tag=None)
    assert manga.returncode == 0
    ranked = manga.query("SELECT artwork_id FROM artwork_sources WHERE source = ?", (f"ranking:weekly/manga/{day}",))
    assert ranked and all(truth[r[0]]["illustType"] == 1 for r in ranked)
    missing = run_crawl(site, out, "-a", "ranking=daily", "-a", "date=20200101", tag=None)
    assert missing.returncode == 1
    assert missing.query("SELECT reason FROM crawls ORDER BY id DESC LIMIT 1")[0][0] == (
        "a listing page failed: ranking page 1: HTTP 400: 該当ランキングは存在しません")

    # two pages of a weekly ranking, killed mid-way: the re-run equals a clean run
    weekly = ("-a", "ranking=weekly", "-a", "pages=2")
    reference = run_crawl(site, tmp_path / "ref", *weekly, tag=None)
    assert reference.returncode == 0
    assert len(reference.query("SELECT id FROM artworks")) == 100
    killed = tmp_path / "killed"
    interrupt_when(start_crawl(site, killed, *weekly, tag=None), killed, 40)
    assert run_crawl(site, killed, *weekly, tag=None).returncode == 0
    assert snapshot(killed) == snapshot(reference.output)


def test_the_follow_feed_needs_the_login_and_ends_at_the_sites_page_limit(make_site, run_crawl, tmp_path):
    site = make_site("--size", "500", "--follow-max-pages", "2", *SMALL_IMAGES)
    followed = {"90000002", "90000003", "90000005", "90000008", "90000011", "90000013", "90000017"}
    feed = [w["id"] for w in reversed(site.truth()) if w["userId"] in followed and not w["deleted"]]
    assert len(feed) > 120  # more than the two pages the site serves
    out = tmp_path / "out"
    refused = run_crawl(site, out, "-a", "following=1", tag=None)
    assert refused.returncode == 2 and "following=1 is the feed of the artists your account follows" in refused.log

    # the spider's own limit set past the site's: the repeated page ends the run, never a loop
    first = run_crawl(site, out, "-a", "following=1", "-s", "PIXIV_FOLLOWING_MAX_PAGES=5", tag=None, env=COOKIE)
    assert first.returncode == 0, first.log[-3000:]
    assert "page 3 is the previous page again; that is the end" in first.log
    listed = {r[0] for r in first.query("SELECT artwork_id FROM artwork_sources WHERE source = 'following'")}
    assert listed == set(feed[:120])
    assert {r[0] for r in first.query("SELECT id FROM artworks")} == listed
    assert first.query("SELECT status FROM crawls ORDER BY id DESC LIMIT 1") == [("finished",)]
    assert first.query("SELECT query_key FROM search_coverage") == [('{"source": "following", "user": "90000000"}',)]

    killed = tmp_path / "killed"
    interrupt_when(start_crawl(site, killed, "-a", "following=1", tag=None, env=COOKIE), killed, 40)
    assert run_crawl(site, killed, "-a", "following=1", tag=None, env=COOKIE).returncode == 0
    assert snapshot(killed) == snapshot(out)

    site.control("/_mock/add?count=60", "POST")
    new = {w["id"] for w in site.truth()[500:] if w["userId"] in followed and not w["deleted"]}
    site.reset_stats()
    again = run_crawl(site, out, "-a", "following=1", "-a", "stop_after=5", tag=None, env=COOKIE)
    assert again.returncode == 0
    assert counts(site)["illust"] == len(new) and counts(site)["following"] == 1
    assert again.query("SELECT status FROM crawls ORDER BY id DESC LIMIT 1") == [("stopped_early",)]


def test_an_artist_through_429s_gets_every_work(make_site, run_crawl, tmp_path):
    site = make_site("--size", "200", "--throttle-429-every", "4", "--retry-after", "0", *SMALL_IMAGES)
    by_user = works_by_user(site.truth())
    user = max(by_user, key=lambda u: len(by_user[u]))
    run = run_crawl(site, tmp_path / "out", "-a", f"user={user}", tag=None)
    assert run.returncode == 0, run.log[-3000:]
    assert {r[0] for r in run.query("SELECT id FROM artworks")} == {w["id"] for w in by_user[user]}
    assert run.query("SELECT count(*) FROM artworks WHERE status = 'error'") == [(0,)]
    assert "429" in run.log
