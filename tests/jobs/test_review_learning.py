"""`scrapy review` learns from the labels: after REVIEW_RETRAIN_EVERY clicks a background worker
retrains, rescores every picture and decides again (manual decisions still win), seen from a real
Chromium labelling with the keyboard; a worker that fails says so on the page and loses no label."""

from __future__ import annotations

import sqlite3
import time

import pytest
import requests

from tests.crawler.small_crawl import crawled_copy
from tests.jobs.test_review import CHROMIUM, kept_ids, start_review, status_of


def token_of(url: str) -> str:
    return requests.get(url, timeout=30).text.split('name="token" value="')[1].split('"')[0]


def label(url: str, token: str, artwork_id: str, decision: str) -> None:
    answer = requests.post(url + "api/decide", json={"artwork_id": artwork_id, "page": 0, "decision": decision,
                                                     "token": token}, timeout=60)
    assert answer.status_code == 200, answer.text


def settled(url: str, timeout: float = 240) -> dict:
    """GET /api/model once the learner is no longer training."""
    deadline = time.monotonic() + timeout
    while True:
        model = requests.get(url + "api/model", timeout=30).json()
        if model["learning"]["state"] != "training":
            return model
        assert time.monotonic() < deadline, model
        time.sleep(0.5)


def test_a_failed_retrain_is_reported_and_loses_no_label(pixiv_site, tmp_path_factory, tmp_path):
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    ids = kept_ids(output)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the model folder should be")
    server, url = start_review(output, "REVIEW_RETRAIN_EVERY=2", f"REVIEW_MODEL_DIR={blocker}")
    try:
        token = token_of(url)
        label(url, token, ids[0], "keep")
        label(url, token, ids[1], "keep")
        learning = settled(url)["learning"]  # two labels, one kind: it waits, it has not failed
        assert learning["state"] == "waiting" and "2 pictures kept and 0 dropped" in learning["error"], learning
        assert "Not learning yet" in requests.get(url, timeout=30).text
        label(url, token, ids[2], "drop")  # the next label tries again ...
        label(url, token, ids[3], "drop")
        learning = settled(url)["learning"]  # ... and the worker breaks on the model folder
        assert learning["state"] == "failed" and "not-a-folder" in learning["error"], learning
        page = requests.get(url, timeout=30).text
        assert "The last retrain failed" in page and "Every label is stored" in page
        with sqlite3.connect(output / "catalog.db") as conn:
            stored = dict(conn.execute("SELECT artwork_id, decision FROM manual_decisions").fetchall())
        assert stored == {ids[0]: "keep", ids[1]: "keep", ids[2]: "drop", ids[3]: "drop"}
        assert [status_of(output, i)[0] for i in ids[:4]] == ["kept", "kept", "dropped", "dropped"]
        label(url, token, ids[4], "keep")  # labelling goes on after a failure
        assert status_of(output, ids[4])[0] == "kept"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian's chromium; scripts/setup.sh installs it)")
def test_labelling_with_the_keyboard_in_chromium_sees_a_retrain_and_the_order_change(pixiv_site, tmp_path_factory,
                                                                                     tmp_path):
    from playwright.sync_api import sync_playwright

    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    server, url = start_review(output, "REVIEW_RETRAIN_EVERY=4")
    problems: list[str] = []

    def manual(key: str):
        artwork_id, page = key.split(":")
        with sqlite3.connect(output / "catalog.db") as conn:
            row = conn.execute("SELECT decision FROM manual_decisions WHERE artwork_id = ? AND page = ?",
                               [artwork_id, int(page)]).fetchone()
        return row[0] if row else None

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                page = browser.new_page()
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
                page.goto(url + "label", wait_until="load")
                main = page.locator("main")

                def current() -> str:
                    return main.get_attribute("data-current") or ""

                def press_and_wait(key: str) -> str:
                    shown = current()
                    page.keyboard.press(key)
                    deadline = time.monotonic() + 30
                    while current() == shown:
                        assert time.monotonic() < deadline, f"{key} did not move on from {shown}"
                        page.wait_for_timeout(50)
                    return current()

                deadline = time.monotonic() + 30
                while not current():
                    assert time.monotonic() < deadline, "no picture shown"
                    page.wait_for_timeout(50)
                before = main.get_attribute("data-queue").split()
                assert current() == before[0]
                while not page.evaluate("document.getElementById('picture').complete && "
                                        "document.getElementById('picture').naturalWidth > 0"):
                    assert time.monotonic() < deadline, "the picture did not load under the page's policy"
                    page.wait_for_timeout(50)

                first = current()
                second = press_and_wait("k")
                assert manual(first) == "keep"
                press_and_wait("d")
                assert manual(second) == "drop"
                assert press_and_wait("u") == second and manual(second) is None  # undone: back, and cleared
                third = press_and_wait("d")
                fourth = press_and_wait("k")
                assert (manual(second), manual(third)) == ("drop", "keep")
                press_and_wait("d")  # the fourth label: a retrain starts
                assert manual(fourth) == "drop"

                deadline = time.monotonic() + 240
                while not main.get_attribute("data-model"):
                    assert time.monotonic() < deadline, page.locator("#model").inner_text()
                    page.wait_for_timeout(200)
                assert "New model live (4 labels)" in page.locator("#model").inner_text()
                page.wait_for_timeout(500)  # the queue is read again after the banner
                after = main.get_attribute("data-queue").split()
                assert after != before[4:] and not {first, second, third, fourth} & set(after)  # new order, labels out
                shown = current()
                moved = press_and_wait("s")
                assert press_and_wait("ArrowLeft") == shown and moved != shown
            finally:
                browser.close()

        # what the retrain did, through the API and the catalogue
        model = settled(url)
        last = model["learning"]["last"]
        assert last["labels"] == 4 and set(last["change"]) == {"kept", "dropped", "scored"} and last["change"]["scored"] > 4
        assert model["model"]["version"] == last["version"] and model["model"]["learned_from"] == 4
        assert f"Model {last['version']} is live: learned from 4 labels" in requests.get(url, timeout=30).text
        with sqlite3.connect(output / "catalog.db") as conn:
            versions = {r[0] for r in conn.execute(
                "SELECT classifier_model FROM images WHERE status IN ('kept', 'dropped') AND path LIKE '%.jpg'")}
            reasons = {f"{a}:{p}": r for a, p, r in conn.execute("SELECT artwork_id, page, reason FROM images")}
        assert versions == {last["version"]}  # every stored still was scored by the new model
        with sqlite3.connect(output / "label-features.sqlite") as conn:  # their features, kept for the next retrain
            cached = conn.execute("SELECT count(*) FROM features").fetchone()[0]
        assert cached == last["change"]["scored"]
        hands = {first: "keep", second: "drop", third: "keep", fourth: "drop"}
        for key, decision in hands.items():  # the rules ran again, and the hands still win
            assert manual(key) == decision and reasons[key].startswith(f"{decision}: manual review"), (key, reasons[key])
        assert [r for k, r in reasons.items() if k not in hands and r and "classifier" in r]  # the rest: by the new scores
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert problems == []
