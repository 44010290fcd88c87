"""`scrapy report`: the static HTML contact sheet, its thumbnails, and the page in a real browser."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from catalog.store import Catalog
from jobs.report import write_report
from tests.crawler.small_crawl import HOSTILE, crawled_copy, mark_some_dropped

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (scripts/setup.sh installs it)


def picture(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=90)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def library(tmp_path):
    """OUTPUT_DIR with one kept, one dropped and one failed picture; titles, tags and reasons hostile."""
    root = tmp_path / "output"
    cat = Catalog(root / "catalog.db")
    works = [
        ("1", HOSTILE, [{"name": '"><img src=x onerror=alert(2)>'}],
         {"status": "kept", "path": "images/1_p0.jpg", "sha256": picture(root / "images/1_p0.jpg", (200, 40, 40))}),
        ("2", "ok & fine", [{"name": "モナ(原神)"}],
         {"status": "dropped", "reason": "drop: classifier mona 0.123 < 0.2 (clf) (rule 1) <b>bold</b>",
          "path": "dropped/2_p0.jpg", "sha256": picture(root / "dropped/2_p0.jpg", (40, 200, 40), (300, 900))}),
        ("3", "broken", [], {"status": "failed", "reason": "truncated or corrupt PNG: image file is truncated"}),
    ]
    for work_id, title, work_tags, image in works:
        cat.record_artwork({"id": work_id, "title": title, "user_name": "<i>artist</i>", "page_count": 1,
                            "status": "ok", "tags": work_tags}, [{"page": 0, **image}], "now")
    cat.replace_model_tags("1", 0, "tagger-1", [{"tag": "long_hair", "score": 0.9}, {"tag": "<u>x</u>", "score": 0.7}])
    cat.set_classifier("1", 0, {"label": "mona", "score": 0.93, "model": "clf-1", "target": "mona"})
    cat.conn.commit()
    cat.close()
    return root


def report(root: Path, dest: Path, **options) -> tuple:
    summary = write_report(root / "catalog.db", root, dest, progress=False, **options)
    return summary, (dest / "index.html").read_text(encoding="utf-8")


def test_every_string_from_the_catalogue_is_escaped(library, tmp_path):
    summary, page = report(library, tmp_path / "report")
    assert summary.counts == {"kept": 1, "dropped": 1, "failed": 1}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page and "<img src=x" not in page and "<u>" not in page and "<i>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "ok &amp; fine" in page
    assert page.count('class="thumb"') == 2
    assert "truncated or corrupt PNG" in page  # the failed one, with its reason
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from elsewhere


def test_thumbnails_are_small_stored_and_made_again_only_when_the_picture_changes(library, tmp_path):
    dest = tmp_path / "report"
    first, _ = report(library, dest, thumbnail_size=96)
    assert (first.thumbnails_made, first.thumbnails_reused) == (2, 0)
    with sqlite3.connect(library / "catalog.db") as conn:
        stored = dict(((a, p), (w, h, jpeg)) for a, p, w, h, jpeg in
                      conn.execute("SELECT artwork_id, page, width, height, jpeg FROM thumbnails"))
    assert set(stored) == {("1", 0), ("2", 0)}
    width, height, jpeg = stored[("2", 0)]
    assert (width, height) == (32, 96)  # 300x900 fitted in 96 px
    assert jpeg[:3] == b"\xff\xd8\xff" and (dest / "thumbs/2_p0.jpg").read_bytes() == jpeg
    assert not list(dest.rglob("*.part"))
    second, _ = report(library, dest, thumbnail_size=96)
    assert (second.thumbnails_made, second.thumbnails_reused) == (0, 2)
    # A re-upload: the stored picture and its sha256 change, so its thumbnail is made again
    sha = picture(library / "images/1_p0.jpg", (10, 10, 250))
    with sqlite3.connect(library / "catalog.db") as conn:
        conn.execute("UPDATE images SET sha256 = ? WHERE artwork_id = '1'", [sha])
    third, _ = report(library, dest, thumbnail_size=96)
    assert (third.thumbnails_made, third.thumbnails_reused) == (1, 1)
    assert Image.open(dest / "thumbs/1_p0.jpg").getpixel((5, 5))[2] > 200  # blue now


def test_missing_files_limits_and_the_classifiers_plots(library, tmp_path):
    model_dir = tmp_path / "models/mona"
    model_dir.mkdir(parents=True)
    (model_dir / "classifier.keras").write_bytes(b"not read")
    (model_dir / "classifier.json").write_text(json.dumps({"classes": ["mona", "other"], "threshold": 0.5,
                                                           "metrics": {"val_accuracy": 0.97}}))
    for name in ("history.png", "confusion.png"):
        Image.new("RGB", (64, 48), "white").save(model_dir / name)
    (library / "dropped/2_p0.jpg").unlink()
    summary, page = report(library, tmp_path / "report", classifier_model=str(model_dir / "classifier.keras"), limit=0)
    assert summary.plots == ["plots/history.png", "plots/confusion.png"]
    assert (tmp_path / "report/plots/confusion.png").is_file()
    assert 'src="plots/history.png"' in page and "validation accuracy: 0.97" in page
    assert summary.shown == {"kept": 0, "dropped": 0, "failed": 0} and "Showing the newest 0 of 1" in page
    summary, page = report(library, tmp_path / "report")
    assert summary.without_thumbnail == 1 and page.count('class="thumb"') == 1
    assert "no thumbnail: FileNotFoundError" in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian's chromium; scripts/setup.sh installs it)")
def test_the_report_of_a_crawl_in_headless_chromium(pixiv_site, tmp_path_factory, tmp_path):
    from playwright.sync_api import sync_playwright

    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    counts = mark_some_dropped(output)
    assert counts["dropped"] == 3 and counts["kept"] > 20 and counts["failed"] > 0
    done = subprocess.run([sys.executable, "-m", "scrapy", "report", "-s", f"OUTPUT_DIR={output}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stored = counts["kept"] + counts["dropped"]
    assert f"{stored}/{stored}" not in done.stderr  # no progress bar off a terminal (core/progress.py)
    assert f"{counts['kept']} kept, 3 dropped, {counts['failed']} failed" in done.stdout
    index = output / "report/index.html"

    messages, errors, dialogs = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(index.as_uri(), wait_until="load")
            assert page.locator("img.thumb").count() == stored
            assert page.locator("#kept img.thumb").count() == counts["kept"]
            assert page.locator("#dropped img.thumb").count() == 3
            assert page.locator("#failed .card").count() == counts["failed"]
            assert page.locator(".faces img").count() == 1
            assert page.get_by_text(HOSTILE).count() == 1  # shown as text, not run
            # Lazy images load on scroll; load them all, and every one must decode
            page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20_000)
            broken = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)")
            assert broken == []
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert messages == [] and errors == [] and dialogs == []
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.width == 1280 and image.height > 900
        assert len(image.convert("RGB").getcolors(1 << 20)) > 100  # thumbnails, not a blank page


def test_report_help_and_a_missing_catalogue(tmp_path):
    helped = subprocess.run([sys.executable, "-m", "scrapy", "report", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0
    assert "Writes DEST/index.html" in helped.stdout and "--limit N" in helped.stdout
    missing = subprocess.run([sys.executable, "-m", "scrapy", "report", "-s", f"OUTPUT_DIR={tmp_path}"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and f"no catalogue at {tmp_path}/catalog.db" in missing.stderr
    assert not (tmp_path / "report").exists()
