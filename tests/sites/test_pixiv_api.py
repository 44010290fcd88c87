"""Parsing against real captured responses and the made-up ones in the real shapes.

The captures live in ../shared/fixtures/pixiv (never copied into the project); the tests that need
them skip with a message when that folder is not beside the checkout.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from sites import pixiv_api as api

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "pixiv"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"{FIXTURES} not present")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@needs_fixtures
def test_real_search_page():
    page = api.parse_search(api.parse_envelope(fixture("real/tag-not-last-page.json")))
    assert len(page.works) == 60 and page.total == 118752
    assert all(isinstance(w["id"], str) for w in page.works)
    record = api.artwork_from_search(page.works[1])
    assert record["id"] == "91285604" and record["page_count"] == 17
    assert record["ai_type"] == 0  # older captures have no aiType at all


@needs_fixtures
def test_ad_slots_are_skipped():
    page = api.parse_search(api.parse_envelope(fixture("search_artworks_with_ad.json")))
    assert page.raw_count == 3 and [w["id"] for w in page.works] == ["130000006", "130000005"]


@needs_fixtures
def test_throttled_and_past_the_end_pages():
    throttled = api.parse_search(api.parse_envelope(fixture("search_artworks_throttled_empty.json")))
    assert throttled.raw_count == 0 and throttled.total == 0
    beyond = api.parse_search(api.parse_envelope(fixture("search_artworks_beyond_last_page.json")))
    assert beyond.raw_count == 0 and beyond.total > 0


@needs_fixtures
@pytest.mark.parametrize("name", ["real/ajax-error.json", "real/test-image-error-123.json", "error_not_found.json"])
def test_error_envelopes(name):
    with pytest.raises(api.ApiError, match="API error"):
        api.parse_envelope(fixture(name))


@needs_fixtures
def test_detail_merge_takes_translations_and_bookmarks():
    detail = api.parse_envelope(fixture("illust_130000006_single_png.json"))
    merged = api.merge_detail({"id": "130000006", "tags": [], "page_count": 1}, detail)
    assert merged["bookmark_count"] == 1234
    assert {"name": "原神", "translation_en": "Genshin Impact"} in merged["tags"]
    assert {"name": "GenshinImpact", "translation_en": None} in merged["tags"]


@needs_fixtures
def test_anonymous_r18_has_no_urls():
    detail = api.parse_envelope(fixture("real/test-image-nologin-67089412.json"))
    assert all(v is None for v in detail["urls"].values())


@needs_fixtures
def test_pages_list():
    urls = api.original_urls_from_pages(api.parse_envelope(fixture("illust_130000005_pages.json")))
    assert [u.rsplit("/", 1)[1] for u in urls] == ["130000005_p0.jpg", "130000005_p1.jpg", "130000005_p2.jpg"]


def test_malformed_json_is_an_api_error():
    with pytest.raises(api.ApiError, match="malformed JSON"):
        api.parse_envelope(b'{"error": false, "body": {')
    with pytest.raises(api.ApiError, match="envelope"):
        api.parse_envelope(b"[1, 2]")


def test_search_url_carries_every_argument():
    query = api.SearchQuery(tag="原神", order="date", mode="safe", type="illust", since="2024-01-01", until="2024-02-01")
    url = api.search_url("https://www.pixiv.net", query, 3)
    parsed = urlparse(url)
    assert parsed.path == "/ajax/search/artworks/%E5%8E%9F%E7%A5%9E"
    qs = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    assert qs == {"word": "原神", "order": "date", "mode": "safe", "p": "3", "s_mode": "s_tag_full",
                  "type": "illust", "lang": "en", "scd": "2024-01-01", "ecd": "2024-02-01"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order": "popular"}, "order must be one of"),
        ({"mode": "x"}, "mode must be one of"),
        ({"type": "novel"}, "type must be one of"),
        ({"ai": "maybe"}, "ai must be one of"),
        ({"since": "2024-13-01"}, "since must be a date"),
        ({"since": "2024-02-01", "until": "2024-01-01"}, "is after until"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        api.SearchQuery(tag="原神", **kwargs)


def test_query_key_depends_on_login_but_not_order():
    a = api.SearchQuery(tag="原神")
    assert a.key(True) != a.key(False)
    assert a.key(False) == api.SearchQuery(tag="原神", order="date").key(False)
    assert json.loads(a.key(False))["tag"] == "原神"


# ---- an artist's works ------------------------------------------------------------------------

@needs_fixtures
@pytest.mark.parametrize("name", ["real/all-4991959.json", "real/all-14095911.json", "real/all-26357.json"])
def test_real_profile_all_lists_illust_and_manga_ids_newest_first(name):
    body = api.parse_envelope(fixture(name))
    ids = api.parse_profile_all(body)
    expected = set(body["illusts"] or {}) | set(body["manga"] or {})  # manga is [] when there is none
    assert set(ids) == expected and len(ids) == len(expected)
    assert [int(i) for i in ids] == sorted((int(i) for i in ids), reverse=True)


def test_profile_all_refuses_what_is_not_a_list_of_ids():
    with pytest.raises(api.ApiError, match="without illusts"):
        api.parse_profile_all([])
    with pytest.raises(api.ApiError, match="manga"):
        api.parse_profile_all({"illusts": [], "manga": "nope"})
    with pytest.raises(api.ApiError, match="not a number"):
        api.parse_profile_all({"illusts": {"12a": None}, "manga": []})
    assert api.parse_profile_all({"illusts": [], "manga": []}) == []


def test_profile_illusts_keeps_the_order_asked_for_and_leaves_out_what_the_site_left_out():
    body = {"works": {"30": {"id": "30", "title": "c"}, "10": {"id": "10", "title": "a"}}, "extraData": {}}
    works = api.parse_profile_illusts(body, ["30", "20", "10"])
    assert [w["id"] for w in works] == ["30", "10"]
    assert api.parse_profile_illusts({"works": []}, ["1"]) == []  # nothing visible: PHP's []
    with pytest.raises(api.ApiError):
        api.parse_profile_illusts({"error": "x"}, ["1"])


@needs_fixtures
def test_real_user_tag_pages():
    first = api.parse_works_page(api.parse_envelope(fixture("real/tag-R-18-14095911.json")))
    last = api.parse_works_page(api.parse_envelope(fixture("real/tag-R-18-14095911-lastpage.json")))
    assert first.total == last.total == 85
    assert len(first.works) + len(last.works) >= 85
    assert all(w["userId"] == "14095911" and "createDate" in w for w in first.works + last.works)
    with pytest.raises(api.ApiError, match="works/total"):
        api.parse_works_page({"works": []})


def test_user_urls_and_keys():
    assert api.profile_all_url("https://www.pixiv.net/", "11") == "https://www.pixiv.net/ajax/user/11/profile/all?lang=en"
    query = parse_qs(urlparse(api.profile_illusts_url("https://www.pixiv.net", "11", ["3", "2"])).query)
    assert query["ids[]"] == ["3", "2"] and query["work_category"] == ["illustManga"]
    tagged = urlparse(api.user_tag_url("https://www.pixiv.net", "11", "R-18", 48))
    assert tagged.path == "/ajax/user/11/illustmanga/tag"
    assert parse_qs(tagged.query) == {"tag": ["R-18"], "offset": ["48"], "limit": ["48"], "lang": ["en"]}
    whole, tag = api.UserQuery("11"), api.UserQuery("11", "R-18")
    assert whole.label == "user:11" and tag.label == "user:11/tag:R-18"
    assert len({whole.key(False), whole.key(True), tag.key(False)}) == 3
    assert whole.key(False) != api.SearchQuery(tag="11").key(False)
    for bad in ("", "0", "12a", "../1"):
        with pytest.raises(ValueError, match="user id"):
            api.UserQuery(bad)


@needs_fixtures
def test_a_detail_fills_in_an_artwork_known_by_id_alone_with_jst_dates():
    detail = api.parse_envelope(fixture("real/test-image-info-32039274.json"))
    merged = api.merge_detail(api.artwork_from_id("32039274"), detail)
    assert merged["title"] == "新しいお姫様" and merged["user_id"] == "341433"
    assert merged["create_date"] == "2012-12-11T00:23:00+09:00"  # 15:23 UTC, as a listing writes it
    listed = api.artwork_from_search({"id": "32039274", "title": "listed", "createDate": "x", "updateDate": "y"})
    assert api.merge_detail(listed, detail)["title"] == "listed"  # a listing's fields stay


# ---- rankings ---------------------------------------------------------------------------------

def test_ranking_pages_read_what_pixivutil2_reads():
    page = api.parse_ranking(json.dumps({
        "contents": [{"illust_id": 3, "user_id": 1, "rating_count": 5}, {"illust_id": 2, "user_id": 1}],
        "mode": "daily", "content": "all", "page": 2, "prev": 1, "next": False, "date": "20240105",
        "prev_date": "20240104", "next_date": False, "rank_total": 52,
    }))
    assert page.ids == ["3", "2"] and page.next_page is None and page.date == "20240105" and page.rank_total == 52
    assert api.parse_ranking(json.dumps({"contents": [], "page": 1, "next": 2, "date": "x", "rank_total": 0})).next_page == 2
    with pytest.raises(api.ApiError, match="ranking error: 該当ランキングは存在しません"):
        api.parse_ranking('{"error": "該当ランキングは存在しません"}')
    with pytest.raises(api.ApiError, match="illust_id"):
        api.parse_ranking('{"contents": [{"title": "no id"}], "page": 1, "next": false, "date": "x", "rank_total": 1}')
    with pytest.raises(api.ApiError, match="malformed JSON"):
        api.parse_ranking("<html>")


def test_ranking_urls_keys_and_labels():
    query = api.RankingQuery("weekly", "20240105", "manga")
    url = urlparse(api.ranking_url("https://www.pixiv.net", query, 3))
    assert url.path == "/ranking.php"
    assert parse_qs(url.query) == {"mode": ["weekly"], "p": ["3"], "format": ["json"], "date": ["20240105"],
                                   "content": ["manga"]}
    latest = api.RankingQuery("daily")
    assert latest.label() == "ranking:daily" and latest.label("20240105") == "ranking:daily/20240105"
    assert latest.key(False, "20240105") == api.RankingQuery("daily", "20240105").key(False)
    assert latest.key(False, "20240105") != latest.key(False, "20240106")
    assert api.RankingQuery("daily_r18").needs_login and not latest.needs_login


@needs_fixtures
def test_real_follow_feed_page():
    body = api.parse_envelope(fixture("real/test-bookmarks_new_ilust.json"))
    works = api.parse_following(body)
    assert [w["id"] for w in works] == [str(i) for i in body["page"]["ids"]]
    described = [w for w in works if "createDate" in w]
    assert len(described) == len(body["thumbnails"]["illust"]) == 60
    assert api.parse_following({"page": {"ids": [5]}, "thumbnails": {"illust": []}}) == [{"id": "5"}]
    with pytest.raises(api.ApiError, match="page.ids"):
        api.parse_following({"thumbnails": {}})


# ---- the login check ----------------------------------------------------------------------------

def test_the_login_is_read_as_pixivutil2_reads_the_top_page():
    assert api.read_login({}, "<script>var dataLayer = [{ login: 'no', }];</script>") is None
    assert api.read_login({}, "") is None
    assert api.read_login({"X-Userid": "42"}, "") == api.Login("42", premium=False, x_restrict=None)
    page = ("<script>var dataLayer = [{ login: 'yes', gender: \"male\", user_id: \"3145410\", lang: \"en\", "
            "illustup_flg: 'not_uploaded', premium: 'no', }];</script><script>{\"xRestrict\":1}</script>")
    assert api.read_login({}, page) == api.Login("3145410", premium=False, x_restrict=1)
    premium = page.replace("premium: 'no'", "premium: 'yes'").replace('{"xRestrict":1}', '{\\"xRestrict\\":2}')
    assert api.read_login({}, premium) == api.Login("3145410", premium=True, x_restrict=2)
    older = "<a href=\"/logout.php\">logout</a><script>pixiv.user.id = \"77\";" \
            "_gaq.push(['_setCustomVar', 3, 'plan', 'premium', 1]);</script>"
    assert api.read_login({}, older) == api.Login("77", premium=True, x_restrict=None)


def test_details_ask_for_english_translations():
    assert api.illust_url("https://www.pixiv.net/", "5") == "https://www.pixiv.net/ajax/illust/5?lang=en"


def test_match_modes_and_window_overrides_in_the_search_url():
    partial = api.SearchQuery(tag="雷電 OR 刻晴", match="partial", since="2024-01-01")
    url = urlparse(api.search_url("https://www.pixiv.net", partial, 2, until="2024-02-01", since="2024-01-05"))
    query = parse_qs(url.query)
    assert query["s_mode"] == ["s_tag"] and query["word"] == ["雷電 OR 刻晴"]
    assert query["scd"] == ["2024-01-05"] and query["ecd"] == ["2024-02-01"]
    assert parse_qs(urlparse(api.search_url("https://x", api.SearchQuery(tag="a", match="title"), 1)).query)["s_mode"] == ["s_tc"]
    exact = api.SearchQuery(tag="a")
    assert "match" not in json.loads(exact.key(False))  # keys written before match existed stay valid
    assert exact.key(False) != api.SearchQuery(tag="a", match="partial").key(False)
    with pytest.raises(ValueError, match="match must be one of"):
        api.SearchQuery(tag="a", match="fuzzy")
