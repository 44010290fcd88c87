"""`scrapy crawl isaac_wiki` against the local Isaac wiki: every way in gives the same sprites.

Each test runs the real command in a subprocess (see tests/conftest.py) against
``mocksites/mediawiki.py``, built from the captured fixtures in ../shared/fixtures/isaac.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from mocksites.runner import REPO, LocalSite
from tests.conftest import ISAAC_FIXTURES, CrawlRun, crawl_env

pytestmark = pytest.mark.slow

SHEET_FILES = {"collectible": "Collectibles_sprite.png", "trinket": "Trinket_sprite.png"}
# Everything but the sheet's URL (each local site has its own port) and when it was cut.
COLUMNS = ("key, kind, game_id, css_id, labelled, name_en, name_zh, quality, charge, description, sheet_sha1, "
           "x, y, w, h, sha256, blank, duplicate_of, path, upscale_path")


def crawl_wiki(site: LocalSite, output: Path, *args: str, timeout: float = 180, failed: bool = False) -> CrawlRun:
    """A crawl as users run it; it must exit 0, or 1 when it is expected to end ``failed``."""
    command = [sys.executable, "-m", "scrapy", "crawl", "isaac_wiki", "-s", f"ISAAC_WIKI_URL={site.api}",
               "-s", f"OUTPUT_DIR={output}", "-s", "LOG_LEVEL=INFO", *args]
    done = subprocess.run(command, cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=timeout)
    run = CrawlRun(done.returncode, done.stdout + done.stderr, output)
    assert run.returncode == (1 if failed else 0) and "Traceback" not in run.log, run.log[-3000:]
    return run


def sprites(run: CrawlRun, kind: str | None = None) -> list[tuple]:
    where = " WHERE kind = ?" if kind else ""
    return run.query(f"SELECT {COLUMNS} FROM sprites{where} ORDER BY key", (kind,) if kind else ())


def wiki_pages(run: CrawlRun) -> dict[str, dict]:
    with sqlite3.connect(run.catalog) as conn:
        conn.row_factory = sqlite3.Row
        return {row["kind"]: dict(row) for row in conn.execute("SELECT * FROM wiki_pages")}


def crawls(run: CrawlRun) -> list[tuple]:
    return run.query("SELECT status, reason FROM crawls ORDER BY id")


def needs_browser() -> None:
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("/usr/bin/chromium is absent: render=browser drives Debian's chromium (apt-get install chromium)")
    pytest.importorskip("scrapy_playwright", reason="render=browser needs scrapy-playwright (the browser extras)")


def fixture_offsets() -> dict[str, tuple[int, int]]:
    """CSS id -> (x, y) as the original scraper read them (id_mapping_dict.json), trinkets re-keyed."""
    mapping = json.loads((ISAAC_FIXTURES / "id_mapping_dict.json").read_text(encoding="utf-8"))
    offsets = {}
    for key, entry in mapping.items():
        number = int(key.split("_")[1])
        css_id = f"trinket_{number - 732:03d}" if number > 732 else key
        offsets[css_id] = (entry["x"], entry["y"])
    return offsets


@pytest.fixture(scope="module")
def real_crawl(tmp_path_factory) -> Iterator[tuple[LocalSite, CrawlRun]]:
    """Both kinds through the API from the wiki as captured: what every other way is compared with."""
    if not (ISAAC_FIXTURES / "id_mapping_dict.json").is_file():
        pytest.skip(f"{ISAAC_FIXTURES} is missing: the local Isaac wiki is built from those captured files")
    with LocalSite("mocksites.mediawiki") as site:
        yield site, crawl_wiki(site, tmp_path_factory.mktemp("wiki-real"))


def test_api_path_gives_exact_counts_and_pixel_exact_slices(real_crawl):
    site, run = real_crawl
    card = json.loads((run.output / "sprites" / "card.json").read_text(encoding="utf-8"))
    assert card["counts"]["collectible"] == {"labelled": 719, "unlabelled": 2, "blank": 0, "duplicates": 2, "files": 719}
    assert card["counts"]["trinket"] == {"labelled": 188, "unlabelled": 1, "blank": 0, "duplicates": 0, "files": 189}
    assert card["problems"] == {} and len(card["sheets"]) == 2
    offsets = fixture_offsets()
    rows = run.query("SELECT kind, css_id, x, y, w, h, path, upscale_path, duplicate_of, sha256 FROM sprites")
    assert len(rows) == 910 and {r[1] for r in rows} == set(offsets)
    sheets = {kind: Image.open(ISAAC_FIXTURES / name).convert("RGBA") for kind, name in SHEET_FILES.items()}
    by_sha = {}
    for kind, css_id, x, y, w, h, path, upscale_path, duplicate_of, sha256 in rows:
        assert (x, y, w, h) == (*offsets[css_id], 32, 32), css_id
        if path is None:
            assert duplicate_of is not None
            continue
        by_sha[sha256] = css_id
        cell = sheets[kind].crop((x, y, x + 32, y + 32))
        sliced = Image.open(run.output / path)
        assert sliced.mode == "RGBA" and sliced.tobytes() == cell.tobytes(), css_id
        upscale = Image.open(run.output / upscale_path)
        assert upscale.tobytes() == cell.resize((64, 64), Image.Resampling.NEAREST).tobytes(), css_id
    assert {r[1] for r in rows if r[8]} == {"collectibles_059", "collectibles_656"}
    assert all(r[9] in by_sha for r in rows if r[8])
    pages = wiki_pages(run)
    assert {kind: (p["status"], p["source"], p["revid"]) for kind, p in pages.items()} == {
        "collectible": ("ok", "api", 318402), "trinket": ("ok", "api", 318377)}
    assert crawls(run) == [("finished", None)]
    # Etiquette: a User-Agent that says who and how to reach them, maxlag on every API call.
    requests = site.stats()["requests"]
    assert all("anime-art-datasets" in r["user_agent"] and "contact" in r["user_agent"] for r in requests)
    api_calls = [r["path"] for r in requests if r["route"] == "api"]
    assert len(api_calls) == 4 and all("maxlag=5" in path for path in api_calls)
    assert site.stats()["counts"]["upload"] == 2


def test_html_fallback_when_the_api_is_disabled(real_crawl, make_wiki, tmp_path):
    site = make_wiki("--no-api")
    run = crawl_wiki(site, tmp_path)
    assert "the API is not usable (HTTP 404); reading the page's HTML instead" in run.log
    assert sprites(run) == sprites(real_crawl[1])
    assert {kind: (p["source"], p["revid"]) for kind, p in wiki_pages(run).items()} == {
        "collectible": ("html", 318402), "trinket": ("html", 318377)}


def test_every_css_form_gives_the_same_sprites(real_crawl, make_wiki, tmp_path):
    run = crawl_wiki(make_wiki("--css-form", "variants"), tmp_path)
    assert sprites(run) == sprites(real_crawl[1])


def test_a_2x_sheet_shown_at_half_size(real_crawl, make_wiki, tmp_path):
    run = crawl_wiki(make_wiki("--css-form", "2x"), tmp_path, "-a", "kinds=trinkets")
    real = {row[0]: row for row in sprites(real_crawl[1], "trinket")}
    doubled = sprites(run)
    assert len(doubled) == len(real) == 189
    for row in doubled:
        key, x, y, w, h, path = row[0], *row[11:15], row[18]
        assert (x, y, w, h) == tuple(2 * v for v in real[key][11:15]), key
        native = Image.open(real_crawl[1].output / real[key][18])
        expected = native.resize((64, 64), Image.Resampling.NEAREST)
        assert Image.open(run.output / path).tobytes() == expected.tobytes(), key


def test_maxlag_waits_retry_after_then_goes_on(real_crawl, make_wiki, tmp_path):
    site = make_wiki("--maxlag-every", "2", "--retry-after", "2")
    run = crawl_wiki(site, tmp_path, "-a", "kinds=trinkets")
    assert "seconds lagged. (maxlag=5); resting 2.0 s (Retry-After: 2), then retry 1/10" in run.log
    assert "'isaac_wiki/maxlag': 1" in run.log
    api_calls = [r for r in site.stats()["requests"] if r["route"] == "api"]
    lagged, retried = api_calls[1], api_calls[2]  # parse, imageinfo (answered maxlag), imageinfo again
    assert lagged["path"] == retried["path"] and retried["time"] - lagged["time"] >= 1.95
    assert sprites(run) == sprites(real_crawl[1], "trinket")


def test_reruns_are_incremental_and_follow_the_wiki_changing(make_wiki, tmp_path):
    site = make_wiki("--state", str(tmp_path / "wiki-state.json"))
    output = tmp_path / "out"
    first = crawl_wiki(site, output, "-a", "kinds=trinkets")
    files = {p: p.stat().st_mtime_ns for p in (output / "sprites").rglob("*") if p.is_file()}
    sliced_at = dict(first.query("SELECT key, sliced_at FROM sprites"))

    site.reset_stats()
    second = crawl_wiki(site, output, "-a", "kinds=trinkets")
    assert "饰品 (unchanged): revision 318377" in second.log and "'sprite_sheets/unchanged': 1" in second.log
    assert "upload" not in site.stats()["counts"]  # the sheet is not even downloaded
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert dict(second.query("SELECT key, sliced_at FROM sprites")) == sliced_at

    changed = site.control("/_mock/change", "POST")
    old_001 = (output / "sprites/trinket/001.png").read_bytes()
    third = crawl_wiki(site, output, "-a", "kinds=trinkets")
    assert f"revision {changed['revid']}, 189 rows" in third.log
    new = dict(zip(("key", "name_en", "x", "y", "path"), third.query(
        "SELECT key, name_en, x, y, path FROM sprites WHERE key = 'trinket:190'")[0]))
    assert new == {"key": "trinket:190", "name_en": "Mock Pebble", "x": 288, "y": 288, "path": "sprites/trinket/190.png"}
    assert (output / "sprites/trinket/001.png").read_bytes() != old_001  # the redrawn icon is cut again
    after = dict(third.query("SELECT key, sliced_at FROM sprites"))
    assert after["trinket:001"] != sliced_at["trinket:001"] and after["trinket:002"] == sliced_at["trinket:002"]
    assert (output / "sprites/trinket/002.png").stat().st_mtime_ns == files[output / "sprites/trinket/002.png"]
    assert wiki_pages(third)["trinket"]["sheet_sha1"] == changed["sha1"]
    card = json.loads((output / "sprites/card.json").read_text(encoding="utf-8"))
    assert card["counts"]["trinket"]["labelled"] == 189
    assert [status for status, _ in crawls(third)] == ["finished"] * 3


def test_browser_path_agrees_with_the_css_path_item_for_item(real_crawl, make_wiki, tmp_path):
    needs_browser()
    run = crawl_wiki(make_wiki("--css-form", "variants"), tmp_path, "-a", "render=browser")
    assert sprites(run) == sprites(real_crawl[1])
    assert {p["source"] for p in wiki_pages(run).values()} == {"browser"}


def test_script_injected_css_fails_the_css_path_clearly_and_only_the_browser_succeeds(real_crawl, make_wiki, tmp_path):
    needs_browser()
    site = make_wiki("--inject-script")
    css = crawl_wiki(site, tmp_path, "-a", "kinds=trinkets", failed=True)
    assert "Sprites trinket (failed): not one of the 188 icons got a rectangle from the api path" in css.log
    assert "only -a render=browser sees" in css.log
    assert sprites(css) == [] and wiki_pages(css)["trinket"]["status"] == "failed"
    assert crawls(css)[0][0] == "failed" and "render=browser" in crawls(css)[0][1]

    browser = crawl_wiki(site, tmp_path, "-a", "kinds=trinkets", "-a", "render=browser")
    assert sprites(browser) == sprites(real_crawl[1], "trinket")
    page = wiki_pages(browser)["trinket"]
    assert (page["status"], page["source"], page["reason"]) == ("ok", "browser", None)
    assert [status for status, _ in crawls(browser)] == ["failed", "finished"]


def test_bad_arguments_stop_the_crawl_at_once(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "isaac_wiki", "-a", "kinds=bosses", "-s", f"OUTPUT_DIR={tmp_path}"],
        cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=60,
    )
    assert "kinds must be a comma-separated list of collectibles, trinkets, not 'bosses'" in done.stdout + done.stderr
