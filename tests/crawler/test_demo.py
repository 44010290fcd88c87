"""`make demo` end to end: it trains its classifier, crawls, curates, and keeps mostly Mona.

One run of ``python -m crawler.demo`` on a small site in a temporary folder (training is most of
its minute), then a second run that must train nothing and fetch nothing.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from crawler import demo
from mocksites.pixiv import Corpus, parse_args
from mocksites.runner import REPO
from tests.conftest import crawl_env

pytestmark = pytest.mark.slow
SIZE = 90


def run_demo(output: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "crawler.demo", "--size", str(SIZE), "--output", str(output)],
        cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    output = tmp_path_factory.mktemp("demo") / "output"
    return output, run_demo(output)


def test_the_demo_trains_a_classifier_and_says_how_good_it_is(demo_run):
    output, stdout = demo_run
    card = json.loads((output / "demo-training" / "model" / "classifier.json").read_text())
    assert card["target"] == "mona" and card["classes"] == ["mona", "other"]
    assert card["metrics"]["val_accuracy"] >= 0.9, card["metrics"]
    assert f"validation accuracy {card['metrics']['val_accuracy']:.3f}" in stdout
    assert "Running: scrapy classifier train" in stdout  # the real command, in a process of its own
    for character in ("mona", "other"):
        assert len(list((output / "demo-training" / "labelled" / character).iterdir())) == demo.TRAIN_PER_CLASS


def test_the_demo_keeps_and_drops_with_reasons_and_keeps_mostly_mona(demo_run):
    output, stdout = demo_run
    with sqlite3.connect(output / "catalog.db") as conn:
        rows = conn.execute("SELECT artwork_id, path, status, reason FROM images WHERE status != 'failed'").fetchall()
    statuses = {status for _, _, status, _ in rows}
    assert statuses == {"kept", "dropped"}
    for _, path, status, reason in rows:
        if status == "dropped":
            assert re.search(r"^drop: .+ \((rule \d+|CURATE_DEFAULT)\)$", reason), reason
            assert path.startswith("dropped/") and (output / path).is_file(), path
        else:
            assert re.search(r"^keep: .+ \(rule \d+\)$", reason), reason
            assert path.startswith("images/") and (output / path).is_file(), path
    assert any("(rule 1)" in reason and "R-18" in reason for *_, reason in rows)  # the site logs in

    # The truth: the same site, built in-process from the options the demo gave it.
    truth = {work.id: work.character for work in Corpus(parse_args(demo.site_options(SIZE))).works}
    scores = demo.truth_scores([(artwork, status, reason) for artwork, _, status, reason in rows], truth)
    assert scores["precision"] >= 0.8 and scores["recall"] >= 0.5, scores
    assert f"kept precision {scores['precision']:.3f}, recall {scores['recall']:.3f}" in stdout
    assert "e.g. keep: classifier mona" in stdout and "e.g. drop: R-18" in stdout


def test_a_second_run_trains_nothing_and_fetches_nothing(demo_run):
    output, _ = demo_run
    stdout = run_demo(output)
    assert "Classifier: reusing" in stdout and "Running: scrapy classifier" not in stdout
    with sqlite3.connect(output / "catalog.db") as conn:
        fetched = conn.execute("SELECT artworks_fetched FROM crawls ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert fetched == 0


def test_the_demo_finds_faces_and_exports_head_crops_for_kohya(demo_run):
    """The demo shows every stage: faces found by the default detectors on its drawn characters, and a
    kohya export of head crops at 512 px, with captions, that the summary points to."""
    import tomllib

    from PIL import Image

    output, stdout = demo_run
    with sqlite3.connect(output / "catalog.db") as conn:
        faces, pictures = conn.execute("SELECT count(*), count(DISTINCT artwork_id || page) FROM faces").fetchone()
    assert faces > 10 and re.search(rf"faces +: {faces} on {pictures} of \d+ stored pictures", stdout), stdout
    dest = output / "demo-lora"
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["crop"]["kind"] == "head" and manifest["format"] == "kohya" and manifest["total"] > 5
    assert f"kohya export       : {manifest['total']} head crops at 512 px in {dest / 'train'}" in stdout
    crops = sorted(p for p in (dest / "train").rglob("*") if p.suffix in (".jpg", ".png"))
    assert len(crops) == manifest["total"]
    for crop in crops:
        with Image.open(crop) as image:
            assert image.size == (512, 512)
        assert crop.with_suffix(".txt").read_text(encoding="utf-8").startswith(f"{demo.TRIGGER_WORD}, ")
    config = tomllib.loads((dest / "dataset.toml").read_text(encoding="utf-8"))
    assert [Path(s["image_dir"]) for s in config["datasets"][0]["subsets"]] == [crops[0].parent]
    assert str(dest / "dataset.toml") in stdout and "distinct tags" in stdout
