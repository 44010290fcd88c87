"""`scrapy review`: keep/drop by hand in a real browser; the decision moves the file, is stored, and
outranks the rules when `scrapy curate` decides again."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from catalog.store import Catalog
from core.output_lock import OutputLock
from jobs.review import apply_manual_decision
from mocksites.runner import REPO
from tests.conftest import crawl_env
from tests.crawler.small_crawl import crawled_copy

CHROMIUM = Path("/usr/bin/chromium")


def status_of(output: Path, artwork_id: str, page: int = 0) -> tuple:
    with sqlite3.connect(output / "catalog.db") as conn:
        return conn.execute("SELECT status, reason, path FROM images WHERE artwork_id = ? AND page = ?",
                            [artwork_id, page]).fetchone()


def start_review(output: Path, *settings: str) -> tuple[subprocess.Popen, str]:
    """The review server on a free port. Its log (one access line a request) goes to a file beside
    ``output``: a pipe nobody reads fills after a few hundred requests and blocks the server."""
    log = output.parent / "review-server.log"
    with open(log, "ab") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "scrapy", "review", "--port", "0", "-s", f"OUTPUT_DIR={output}",
             *(arg for setting in settings for arg in ("-s", setting))],
            cwd=REPO, env=crawl_env(), stdout=subprocess.PIPE, stderr=sink, text=True,
        )
    line = server.stdout.readline()
    assert line.startswith("Review page: http://127.0.0.1:"), line + log.read_text(errors="replace")
    return server, line.split()[2]


def kept_ids(output: Path) -> list[str]:
    with sqlite3.connect(output / "catalog.db") as conn:
        return [r[0] for r in conn.execute(
            "SELECT artwork_id FROM images WHERE status = 'kept' AND page = 0 "
            "ORDER BY length(artwork_id) DESC, artwork_id DESC")]


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian's chromium; scripts/setup.sh installs it)")
def test_drop_and_keep_by_hand_in_chromium_then_curate_keeps_the_hand_decisions(pixiv_site, tmp_path_factory, tmp_path):
    from playwright.sync_api import sync_playwright

    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    first, second = kept_ids(output)[:2]
    server, url = start_review(output)
    try:
        errors = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                page = browser.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(url, wait_until="load")
                cards = page.locator(".card")
                with sqlite3.connect(output / "catalog.db") as conn:
                    kept = conn.execute("SELECT count(*) FROM images WHERE status = 'kept'").fetchone()[0]
                assert cards.count() == min(kept, 60) and f"{kept} pictures" in page.content()
                # every thumbnail loads under the page's Content-Security-Policy (img-src 'self'); polled from
                # here, since wait_for_function evaluates a string, which that policy rightly forbids
                deadline = time.monotonic() + 30
                while not page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"):
                    assert time.monotonic() < deadline, "thumbnails did not load"
                    page.wait_for_timeout(100)
                page.locator(f'.card[data-key="{first}:0"] button[value=drop]').click()
                page.wait_for_load_state("load")
                assert "dropped by hand" in page.locator(".said").inner_text()
                assert page.locator(f'.card[data-key="{first}:0"]').count() == 0  # no longer among the kept
                page.goto(url + "?status=dropped", wait_until="load")
                assert page.locator(f'.card.manual[data-key="{first}:0"]').count() == 1
                page.goto(url, wait_until="load")
                page.locator(f'.card[data-key="{second}:0"] button[value=keep]').click()  # confirm a keep
                page.wait_for_load_state("load")
            finally:
                browser.close()
        assert errors == []

        # without the page's token, nothing happens (another site cannot click for you)
        forged = requests.post(url + "decide", data={"artwork_id": second, "page": "0", "decision": "drop"},
                               allow_redirects=False, timeout=10)
        assert forged.status_code == 403
        # while a crawl holds OUTPUT_DIR, a click changes nothing and says why
        token = requests.get(url, timeout=10).text.split('name="token" value="')[1].split('"')[0]
        with OutputLock(output / "output.lock").hold("a long crawl"):
            busy = requests.post(url + "decide", data={"artwork_id": second, "page": "0", "decision": "drop",
                                                       "token": token}, allow_redirects=False, timeout=10)
        assert busy.status_code == 409 and "a long crawl" in busy.text
    finally:
        server.terminate()
        server.wait(timeout=30)

    status, reason, path = status_of(output, first)
    assert status == "dropped" and reason.startswith("drop: manual review (") and path == f"dropped/{first}_p0.jpg"
    assert (output / path).is_file() and not (output / f"images/{first}_p0.jpg").exists()
    assert status_of(output, second)[:1] == ("kept",) and status_of(output, second)[1].startswith("keep: manual review")

    # rules that would keep the first and drop the second: the hand decisions win
    rules = json.dumps([{"action": "drop", "if": "page", "max": 0}])
    done = subprocess.run(
        [sys.executable, "-m", "scrapy", "curate", "-s", f"OUTPUT_DIR={output}", "-s", f"CURATE_RULES={rules}",
         "-s", "CURATE_DEFAULT=keep", "--no-progress"],
        cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert status_of(output, first)[0] == "dropped" and status_of(output, second)[0] == "kept"
    with sqlite3.connect(output / "catalog.db") as conn:  # curate decides stills only (not ugoira WebP)
        stills = {r[0] for r in conn.execute("SELECT artwork_id FROM images WHERE page = 0 AND format = 'jpeg'")}
    assert [i for i in kept_ids(output) if i in stills] == [second]  # the rule dropped every other first page


def test_clear_gives_the_picture_back_to_the_rules_and_a_failed_picture_cannot_be_kept(pixiv_site, tmp_path_factory, tmp_path):
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    [artwork_id, *_] = kept_ids(output)
    catalog = Catalog(output / "catalog.db")
    try:
        apply_manual_decision(catalog, output, artwork_id, 0, "drop")
        assert catalog.manual_decision(artwork_id, 0)["decision"] == "drop"
        apply_manual_decision(catalog, output, artwork_id, 0, None)
        assert catalog.manual_decision(artwork_id, 0) is None
        assert status_of(output, artwork_id)[0] == "dropped"  # until the rules decide again
        [failed] = catalog.conn.execute("SELECT artwork_id, page FROM images WHERE status = 'failed' LIMIT 1").fetchall()
        with pytest.raises(ValueError, match="no stored picture"):
            apply_manual_decision(catalog, output, *failed, "keep")
        with pytest.raises(LookupError):
            apply_manual_decision(catalog, output, "nope", 0, "keep")
    finally:
        catalog.close()


def test_a_recrawled_picture_keeps_its_manual_decision_even_without_rules(tmp_path):
    """The crawl's decision stage reads the manual decisions at start: a re-fetched page a person
    dropped goes straight to dropped/, one they kept stays kept whatever the rules say."""
    from scrapy.exceptions import NotConfigured

    from tests.stages.test_decide import decision_pipeline, stored_item

    with pytest.raises(NotConfigured):  # no rules and no manual decision: the stage is off, as before
        decision_pipeline(tmp_path)
    catalog = Catalog(tmp_path / "catalog.db")
    with catalog.batch():
        catalog.set_manual_decision("7", 1, "drop", "2026-12-04T10:00:00+00:00")
        catalog.set_manual_decision("8", 0, "keep", "2026-12-04T10:00:01+00:00")
    catalog.close()

    pipeline = decision_pipeline(tmp_path)  # no rules, but decisions to honour
    work = stored_item(tmp_path, "7", {"x_restrict": 0}, {}, {})
    pipeline.process_item(work)
    assert [(r["status"], r.get("reason"), r["path"]) for r in work.images] == [
        ("kept", None, "images/7_p0.jpg"),
        ("dropped", "drop: manual review (2026-12-04T10:00:00+00:00)", "dropped/7_p1.jpg"),
    ]
    rules = json.dumps([{"action": "drop", "if": "r18"}])
    pipeline = decision_pipeline(tmp_path, CURATE_RULES=rules, CURATE_DEFAULT="keep")
    r18 = stored_item(tmp_path, "8", {"x_restrict": 1}, {})
    pipeline.process_item(r18)
    assert (r18.images[0]["status"], r18.images[0]["reason"]) == ("kept", "keep: manual review (2026-12-04T10:00:01+00:00)")


def test_the_page_answers_only_to_its_own_names_and_never_redirects_off_site(pixiv_site, tmp_path_factory, tmp_path):
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    first, second = kept_ids(output)[:2]
    server, url = start_review(output)
    port = url.rstrip("/").rsplit(":", 1)[1]
    try:
        page = requests.get(url, timeout=10)
        assert page.status_code == 200 and page.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none': no script at all
        token = page.text.split('name="token" value="')[1].split('"')[0]
        assert requests.get(url, headers={"Host": f"localhost:{port}"}, timeout=10).status_code == 200

        # DNS rebinding: the attacker's name, resolved to 127.0.0.1, can neither read the token nor click
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{int(port) + 1}", f"127.0.0.1.evil.example:{port}"):
            read = requests.get(url, headers={"Host": host}, timeout=10)
            assert read.status_code == 403 and token not in read.text and read.headers["X-Frame-Options"] == "DENY"
            drop = requests.post(url + "decide", headers={"Host": host}, allow_redirects=False, timeout=10,
                                 data={"artwork_id": first, "page": "0", "decision": "drop", "token": token})
            assert drop.status_code == 403
        for origin, site in (("http://evil.example", None), ("null", None), (None, "cross-site")):
            headers = {k: v for k, v in (("Origin", origin), ("Sec-Fetch-Site", site)) if v}
            drop = requests.post(url + "decide", headers=headers, allow_redirects=False, timeout=10,
                                 data={"artwork_id": first, "page": "0", "decision": "drop", "token": token})
            assert drop.status_code == 403, (origin, site)
        assert status_of(output, first)[0] == "kept"

        # page numbers: anything but plain ASCII digits, or a huge one, is a 400, never a 500
        for bad in ("²", "١", "٣", "1e3", "-1", "9" * 30, str(10**7)):
            assert requests.get(url, params={"page": bad}, timeout=10).status_code == 400, bad
            assert requests.get(url + "thumb", params={"artwork_id": first, "page": bad}, timeout=10).status_code == 400
            posted = requests.post(url + "decide", allow_redirects=False, timeout=10,
                                   data={"artwork_id": first, "page": bad, "decision": "drop", "token": token})
            assert posted.status_code == 400, bad
        assert requests.get(url, params={"page": "99999"}, timeout=10).status_code == 200  # past the end: empty

        # `back` goes to a listing page of this server, whatever it says
        for back, expected in (("/%09/evil.example/x", "/?status=kept&page=1"), ("/\t/evil.example/x", "/?status=kept&page=1"),
                               ("//evil.example/", "/?status=kept&page=1"), ("https://evil.example/", "/?status=kept&page=1"),
                               ("/\\evil.example", "/?status=kept&page=1"), ("/thumb?x=1", "/?status=kept&page=1"),
                               ("/?status=dropped&page=2&x=//evil", "/?status=dropped&page=2")):
            done = requests.post(url + "decide", allow_redirects=False, timeout=10,
                                 data={"artwork_id": second, "page": "0", "decision": "keep", "token": token, "back": back})
            assert done.status_code == 303 and done.headers["Location"].startswith(expected + "&said="), (back, done.headers)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_a_usage_error(tmp_path, port):
    Catalog(tmp_path / "catalog.db").close()
    done = subprocess.run([sys.executable, "-m", "scrapy", "review", "--port", port, "-s", f"OUTPUT_DIR={tmp_path}"],
                          cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--port must be from 0 (any free port) to 65535" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
