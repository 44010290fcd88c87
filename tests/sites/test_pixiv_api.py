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
        ({"order": "popular_d"}, "order must be one of"),
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
