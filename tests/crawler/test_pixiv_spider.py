"""End-to-end crawls: the real spider, settings and pipelines against the local Pixiv-style site."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from PIL import Image
from scrapy.http import Request, TextResponse
from scrapy.utils.test import get_crawler

from crawler.spiders.pixiv import PixivSpider
from tests.conftest import FAST_THROTTLE

pytestmark = pytest.mark.slow
SESSION = "demo-session-0001"  # the site's logged-in PHPSESSID
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "pixiv"

BROKEN_REASONS = {
    "truncated": "truncated or corrupt",
    "html": "an HTML page",
    "empty": "empty body (0 bytes)",
    "bomb": "decompression bomb refused",
}


def visible(truth, logged_in=False):
    return [a for a in truth if logged_in or a["xRestrict"] == 0]


def search_queries(site):
    return [parse_qs(urlparse(r.split(" ", 1)[1]).query) for r in site.stats()["requests"] if "/ajax/search/" in r]


def detail_ids(site):
    out = []
    for r in site.stats()["requests"]:
        path = urlparse(r.split(" ", 1)[1]).path
        if path.startswith("/ajax/illust/") and path.count("/") == 3:
            out.append(path.rsplit("/", 1)[1])
    return out


def image_requests(site):
    return [r for r in site.stats()["requests"] if "/img-original/" in r or "/img-zip-ugoira/" in r]


def test_full_crawl_stores_every_page_and_records_every_failure(pixiv_site, run_crawl, tmp_path):
    run = run_crawl(pixiv_site, tmp_path / "out")
    assert run.returncode == 0, run.log[-3000:]
    assert " ERROR: " not in run.log
    truth = {a["id"]: a for a in visible(pixiv_site.truth())}
    artworks = {r[0]: r for r in run.query("SELECT id, status, reason, page_count, tags FROM artworks")}
    assert set(artworks) == set(truth)  # ad slots skipped, nothing missing

    images = {(r[0], r[1]): r for r in run.query(
        "SELECT artwork_id, page, path, sha256, width, height, format, status, reason, frame_delays, original_path FROM images")}
    for artwork_id, a in truth.items():
        status, reason = artworks[artwork_id][1:3]
        if a["deleted"]:
            assert status == "deleted" and "404" in reason and "削除" in reason
            continue
        assert status == "ok", (artwork_id, reason)
        assert artworks[artwork_id][3] == a["pageCount"]
        for page in range(a["pageCount"]):
            _, _, path, sha, width, height, fmt, img_status, img_reason, delays, original = images[(artwork_id, page)]
            if page == 0 and a["broken"]:
                assert img_status == "failed" and BROKEN_REASONS[a["broken"]] in img_reason
                assert path is None and not list((run.output / "images").glob(f"{artwork_id}_p0.*"))
                continue
            assert img_status == "kept" and img_reason is None
            file = run.output / path
            assert hashlib.sha256(file.read_bytes()).hexdigest() == sha
            if a["illustType"] == 2:
                assert path == f"images/{artwork_id}_ugoira.webp" and fmt == "webp"
                assert json.loads(delays) == a["frameDelays"]
                assert (run.output / original).read_bytes()[:4] == b"PK\x03\x04"  # the zip is kept
                assert Image.open(file).n_frames == len(a["frameDelays"])
            else:
                assert path == f"images/{artwork_id}_p{page}.jpg" and fmt == "jpeg"
                with Image.open(file) as im:
                    assert im.format == "JPEG" and im.size == (width, height)
                expected = a["pages"][page]
                rotated = expected.get("exifOrientation") in (5, 6, 7, 8)
                assert (width, height) == ((expected["height"], expected["width"]) if rotated else (expected["width"], expected["height"]))
    # originals are not kept by default (ugoira zips are), and no temp file is left
    leftovers = [p.name for p in (run.output / "originals").iterdir() if not p.name.endswith("_ugoira.zip")]
    assert leftovers == []
    assert not list(run.output.rglob("*.part"))
    crawl = run.query("SELECT status, images_kept, images_failed FROM crawls")[0]
    assert crawl[0] == "finished" and crawl[2] == sum(1 for a in truth.values() if a["broken"] and not a["deleted"])
    tags = dict(run.query("SELECT name, translation_en FROM tags"))
    assert tags["原神"] == "Genshin Impact"


def test_image_requests_without_a_pixiv_referer_get_403(pixiv_site, run_crawl, tmp_path):
    run = run_crawl(pixiv_site, tmp_path / "out", "-a", "pages=1", "-s", "PIXIV_REFERER=https://example.com/")
    assert run.returncode == 0
    reasons = {r[0] for r in run.query("SELECT reason FROM images")}
    assert reasons == {"HTTP 403 from the image host (missing or wrong Referer?)"}
    assert "Image (refused)" in run.log


def test_r18_needs_the_cookie_and_the_cookie_never_leaks(pixiv_site, run_crawl, tmp_path):
    anonymous = run_crawl(pixiv_site, tmp_path / "anon", "-a", "pages=1")
    assert anonymous.query("SELECT count(*) FROM artworks WHERE x_restrict > 0") == [(0,)]

    secret = "4242_" + "q" * 28  # a PHPSESSID the site does not know: anonymous results
    out = tmp_path / "out"
    feed = tmp_path / "items.jsonl"
    log_file = tmp_path / "crawl.log"
    # the HTTP cache stores each request's headers, and JOBDIR pickles the queued requests
    stores = [tmp_path / "httpcache", tmp_path / "job"]
    run = run_crawl(pixiv_site, out, "-a", "pages=1", "-O", str(feed), "-s", f"LOG_FILE={log_file}",
                    "-s", "LOG_LEVEL=DEBUG", "-s", "HTTPCACHE_ENABLED=True", "-s", f"HTTPCACHE_DIR={stores[0]}",
                    "-s", f"JOBDIR={stores[1]}", env={"PIXIV_PHPSESSID": SESSION})
    assert run.returncode == 0
    r18 = run.query("SELECT id FROM artworks WHERE x_restrict > 0 AND status = 'ok'")
    assert r18, "logged in, page 1 should show R-18 works"
    stored = [p for store in stores for p in store.rglob("*") if p.is_file()]
    assert any(p.name == "request_headers" for p in stored)  # the cache really stored request headers
    for leaked_in in [log_file.read_text(), feed.read_text(), run.log,
                      *(p.read_bytes().decode("latin-1") for p in [*out.glob("catalog.db*"), *stored])]:
        assert SESSION not in leaked_in
    assert json.loads(run.query("SELECT arguments FROM crawls")[0][0])["logged_in"] is True

    # the cookie as a setting is not printed either (Scrapy's "Overridden settings" line)
    run = run_crawl(pixiv_site, tmp_path / "out2", "-a", "pages=1", "-s", f"PIXIV_PHPSESSID={secret}")
    assert run.returncode == 0 and secret not in run.log


def test_anonymous_r18_detail_is_recorded_as_login_required(tmp_path):
    if not FIXTURES.is_dir():
        pytest.skip("shared fixtures not present")
    crawler = get_crawler(PixivSpider, {"OUTPUT_DIR": str(tmp_path), "PIXIV_BASE_URL": "https://www.pixiv.net"})
    spider = PixivSpider.from_crawler(crawler, tag="原神")
    spider.state = {}
    body = (FIXTURES / "illust_130000003_r18_anonymous.json").read_bytes()
    response = TextResponse("https://www.pixiv.net/ajax/illust/130000003", body=body, status=200,
                            request=Request("https://www.pixiv.net/ajax/illust/130000003"))
    [item] = list(spider.parse_detail(response, artwork={"id": "130000003", "x_restrict": 1, "tags": []}))
    assert item.status == "login_required" and "PHPSESSID" in item.reason and item.file_urls == []

    broken = TextResponse("https://www.pixiv.net/ajax/illust/1", body=b'{"error":false,"body":{', status=200,
                          request=Request("https://www.pixiv.net/ajax/illust/1"))
    [item] = list(spider.parse_detail(broken, artwork={"id": "1", "tags": []}))
    assert item.status == "error" and "malformed JSON" in item.reason
    assert spider.state["artwork_errors"] == 1


def test_429_with_retry_after_is_honoured(make_site, run_crawl, tmp_path):
    site = make_site("--size", "70", "--image-size", "48", "--throttle-429-every", "9", "--retry-after", "1")
    started = time.monotonic()
    run = run_crawl(site, tmp_path / "out", *FAST_THROTTLE)
    assert run.returncode == 0
    assert time.monotonic() - started >= 1.0
    assert "HTTP 429 from" in run.log and "Retry-After: 1" in run.log
    expected = [a for a in visible(site.truth()) if not a["deleted"]]
    assert run.query("SELECT count(*) FROM artworks WHERE status = 'ok'") == [(len(expected),)]
    assert run.query("SELECT status FROM crawls") == [("finished",)]


def test_throttled_empty_page_is_retried_not_taken_as_the_end(make_site, run_crawl, tmp_path):
    site = make_site("--size", "150", "--image-size", "32", "--throttle-empty-every", "2")
    run = run_crawl(site, tmp_path / "out", *FAST_THROTTLE)
    assert run.returncode == 0
    assert "soft throttle" in run.log
    assert run.query("SELECT count(*) FROM artworks") == [(len(visible(site.truth())),)]
    pages = [q["p"][0] for q in search_queries(site)]
    assert pages.count("2") >= 2  # page 2 came back empty once and was asked again


def test_persistent_throttling_ends_the_crawl_as_throttled(make_site, run_crawl, tmp_path):
    site = make_site("--size", "150", "--image-size", "32", "--throttle-empty-every", "2")
    run = run_crawl(site, tmp_path / "out", *FAST_THROTTLE, "-s", "PIXIV_EMPTY_PAGE_RETRIES=0")
    assert run.returncode == 0
    assert "Pixiv is throttling this client" in run.log
    assert run.query("SELECT status FROM crawls") == [("throttled",)]
    assert run.query("SELECT count(*) FROM search_coverage") == [(0,)]  # nothing proven complete


def test_an_empty_tag_is_not_throttling(make_site, run_crawl, tmp_path):
    site = make_site("--size", "30", "--image-size", "32")
    run = run_crawl(site, tmp_path / "out", tag="存在しないタグ")
    assert run.returncode == 0 and "past the end (total 0)" in run.log
    assert len(search_queries(site)) == 1


def test_ai_exclude_skips_before_any_detail_request(make_site, run_crawl, tmp_path):
    site = make_site("--size", "120", "--image-size", "32")
    run = run_crawl(site, tmp_path / "out", "-a", "ai=exclude")
    assert run.returncode == 0
    ai_ids = {a["id"] for a in visible(site.truth()) if a["aiType"] == 2}
    assert ai_ids
    assert ai_ids.isdisjoint(detail_ids(site))
    skipped = {r[0] for r in run.query("SELECT id FROM artworks WHERE status = 'skipped'")}
    assert skipped == ai_ids


def test_arguments_reach_the_search(make_site, run_crawl, tmp_path):
    site = make_site("--size", "150", "--image-size", "32")
    run = run_crawl(site, tmp_path / "out", "-a", "order=date", "-a", "mode=safe", "-a", "type=illust",
                    "-a", "since=2024-01-01", "-a", "until=2024-01-02", "-a", "pages=1")
    assert run.returncode == 0
    [query] = search_queries(site)
    assert {k: v[0] for k, v in query.items() if k in ("order", "mode", "type", "scd", "ecd", "p")} == {
        "order": "date", "mode": "safe", "type": "illust", "scd": "2024-01-01", "ecd": "2024-01-02", "p": "1"}
    bad = run_crawl(site, tmp_path / "bad", "-a", "order=sideways")
    assert bad.returncode != 0 and "order must be one of" in bad.log


def test_rerun_fetches_nothing_known_and_refetches_reuploads(make_site, run_crawl, tmp_path):
    site = make_site("--size", "200", "--image-size", "32")
    out = tmp_path / "out"
    first = run_crawl(site, out)
    assert first.returncode == 0
    assert first.query("SELECT count(*) FROM search_coverage") == [(1,)]

    site.reset_stats()
    second = run_crawl(site, out)
    assert second.returncode == 0
    assert detail_ids(site) == [] and image_requests(site) == []
    assert len(search_queries(site)) == 1  # 60 known in a row on page 1: stop
    assert second.query("SELECT status FROM crawls ORDER BY id DESC LIMIT 1") == [("stopped_early",)]

    newest = sorted(visible(site.truth()), key=lambda a: a["createDate"])[-5]
    before = out.joinpath(f"images/{newest['id']}_p0.jpg")
    old_sha = first.query("SELECT sha256 FROM images WHERE artwork_id = ? AND page = 0", (newest["id"],))
    site.control("/_mock/add?count=7", "POST")
    site.control(f"/_mock/reupload?id={newest['id']}", "POST")
    site.reset_stats()
    third = run_crawl(site, out)
    assert third.returncode == 0
    added = {a["id"] for a in site.truth()[-7:] if a["xRestrict"] == 0}
    assert set(detail_ids(site)) == added | {newest["id"]}
    new_sha = third.query("SELECT sha256 FROM images WHERE artwork_id = ? AND page = 0", (newest["id"],))
    if not newest["broken"]:
        assert new_sha != old_sha and hashlib.sha256(before.read_bytes()).hexdigest() == new_sha[0][0]
    assert third.query("SELECT count(*) FROM artworks") == [(len(visible(site.truth())),)]


def test_face_stage_runs_inside_the_crawl_when_enabled(make_site, run_crawl, tmp_path):
    site = make_site("--size", "70", "--image-size", "64")
    run = run_crawl(site, tmp_path / "out", "-a", "pages=1", "-s", "FACES_ENABLED=True")
    assert run.returncode == 0 and " ERROR: " not in run.log
    assert "Faces: detectors" in run.log
    kept = run.query("SELECT count(*) FROM images WHERE status = 'kept' AND format = 'jpeg'")[0][0]
    # the demo site's pictures are synthetic: every kept JPEG is searched and none has a face
    assert f"'faces/pages_without_face': {kept}" in run.log
    assert run.query("SELECT count(*) FROM faces") == [(0,)]


def test_tagger_stage_tags_every_kept_picture_in_batches(make_site, run_crawl, tmp_path):
    from models.tagger import DeepDanbooruTagger
    from tests.models.tagger_fixtures import build_project

    project = build_project(tmp_path / "project", size=32)
    site = make_site("--size", "70", "--image-size", "48")
    run = run_crawl(site, tmp_path / "out", "-a", "pages=1", "-s", f"TAGGER_PROJECT={project}",
                    "-s", "TAGGER_THRESHOLD=0.3", "-s", "CURATE_BATCH_SIZE=16", timeout=240)
    assert run.returncode == 0 and " ERROR: " not in run.log, run.log[-3000:]
    assert "Tagger: resnet_custom_v3-" in run.log
    tagger = DeepDanbooruTagger.load(project, threshold=0.3)
    kept = run.query("SELECT artwork_id, page, path FROM images WHERE status = 'kept' AND format = 'jpeg'")
    assert len(kept) > 16  # more than one batch
    batches = int(run.log.split("'tagger/batches': ")[1].split(",")[0])
    assert batches < len(kept)  # batched, not one model call per picture
    assert run.query("SELECT count(DISTINCT tag) FROM image_tags")[0][0] >= 2  # not vacuous
    for artwork_id, page, path in kept:
        with Image.open(run.output / path) as image:
            [expected] = tagger.predict([image.convert("RGB")])
        rows = run.query("SELECT tag, category, score, model FROM image_tags WHERE artwork_id = ? AND page = ?",
                         (artwork_id, page))
        assert {tag for tag, *_ in rows} == set(expected), (artwork_id, page)
        for tag, category, score, model in rows:
            assert abs(score - expected[tag]) < 1e-5 and model == tagger.version
            assert category == tagger.category_of(tagger.tags.index(tag))


def test_rules_drop_into_dropped_folder_with_reasons(make_site, run_crawl, tmp_path):
    site = make_site("--size", "120", "--image-size", "32")
    rules = json.dumps([{"action": "keep", "if": "tag", "any": ["モナ(原神)"]}])
    run = run_crawl(site, tmp_path / "out", "-s", f"CURATE_RULES={rules}", "-s", "CURATE_DEFAULT=drop")
    assert run.returncode == 0 and " ERROR: " not in run.log
    mona = {a["id"] for a in site.truth() if "モナ(原神)" in a["tags"]}
    rows = run.query("SELECT artwork_id, path, status, reason FROM images WHERE status IN ('kept', 'dropped')")
    assert {r[2] for r in rows} == {"kept", "dropped"}
    for artwork_id, path, status, reason in rows:
        if artwork_id in mona:
            assert status == "kept" and reason == "keep: Pixiv tag モナ(原神) (rule 1)" and path.startswith("images/")
        else:
            assert status == "dropped" and reason == "drop: no rule matched (CURATE_DEFAULT)"
            assert path.startswith("dropped/")
        assert (run.output / path).is_file()
    crawl = run.query("SELECT images_kept, images_dropped FROM crawls")[0]
    assert crawl == (sum(r[2] == "kept" for r in rows), sum(r[2] == "dropped" for r in rows))


def test_classifier_scores_decide_keep_or_drop_inside_the_crawl(make_site, run_crawl, tmp_path):
    from models.classifier import CharacterClassifier, train
    from tests.models.test_classifier import write_dataset

    result = train(write_dataset(tmp_path / "data", per_class=30, seed=3), tmp_path / "model",
                   image_size=32, epochs=2, progress=False)
    classifier = CharacterClassifier.load(result.model_path)
    site = make_site("--size", "70", "--image-size", "48")
    rules = json.dumps([{"action": "keep", "if": "classifier", "min": 0.5}])
    run = run_crawl(site, tmp_path / "out", "-a", "pages=1", "-s", f"CLASSIFIER_MODEL={result.model_path}",
                    "-s", f"CURATE_RULES={rules}", "-s", "CURATE_DEFAULT=drop", timeout=240)
    assert run.returncode == 0 and " ERROR: " not in run.log, run.log[-3000:]
    rows = run.query("SELECT path, status, reason, classifier_label, classifier_score, classifier_model "
                     "FROM images WHERE format = 'jpeg' AND status != 'failed'")
    assert len(rows) > 16
    for path, status, reason, label, score, model in rows:
        assert model == classifier.version and label in classifier.classes
        with Image.open(run.output / path) as image:
            [expected] = classifier.predict([image.convert("RGB")])
        assert abs(score - expected.target_score) < 1e-4
        if score >= 0.5:
            assert status == "kept" and reason.startswith(f"keep: classifier {classifier.target} ")
        else:
            assert status == "dropped" and path.startswith("dropped/")
