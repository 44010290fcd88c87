"""docs/lora-recipe.md, run as a user runs it: every ``bash`` block, in order, as written, in a fresh
folder, against the local Pixiv-style site and a local Hugging Face Hub. Docs that cannot rot.

What the test changes, and only this: ``.venv/bin/scrapy`` in that folder is a small script that runs
this project's scrapy and points a crawl at the local site (``-s PIXIV_BASE_URL``); the cookie
placeholder becomes the local site's session; the ``bash interactive`` block (``scrapy review``) is
started, a simulated person labels pictures through the page's JSON API from the site's truth, and
it is stopped. Then the results are checked: faces, tags, labels, a classifier, decisions that match
the truth, a report and a kohya export of head crops.
"""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import subprocess
import sys
import tomllib
from contextlib import closing
from pathlib import Path

import pytest
import requests
from PIL import Image

from mocksites.pixiv import SiteConfig
from mocksites.runner import REPO, LocalSite
from models.classifier import model_version
from tests.conftest import crawl_env
from tests.models.hub_fixtures import hub_repos

PAGE = REPO / "docs" / "lora-recipe.md"
BLOCK = re.compile(r"^```bash( interactive)?\n(.*?)^```$", re.S | re.M)
COOKIE_PLACEHOLDER = "paste-yours-here"
LABELS = 40  # pictures the simulated person labels in the review page
# Sixty works with characters at 320 px: faces big enough for the default detectors, a crawl of seconds.
SITE = ("--size", "70", "--image-size", "320", "--characters", "--broken-every", "0")

pytestmark = pytest.mark.slow


def blocks() -> list[tuple[bool, str]]:
    """(interactive?, text) of every bash block of the page, in order."""
    return [(bool(interactive), text) for interactive, text in BLOCK.findall(PAGE.read_text(encoding="utf-8"))]


def write_scrapy(folder: Path, site: LocalSite) -> None:
    """``folder/.venv/bin/scrapy``: this project's scrapy, a crawl pointed at the local site; the
    review page on any free port and without background retrains (tests/jobs/test_review_learning.py
    has those)."""
    script = folder / ".venv" / "bin" / "scrapy"
    script.parent.mkdir(parents=True)
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  crawl) exec "{sys.executable}" -m scrapy "$@" -s PIXIV_BASE_URL={site.api} ;;\n'
        f'  review) exec "{sys.executable}" -m scrapy "$@" --port 0 -s REVIEW_RETRAIN_EVERY=0 ;;\n'
        f'  *) exec "{sys.executable}" -m scrapy "$@" ;;\n'
        "esac\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def label_like_a_person(process: subprocess.Popen, truth: dict[str, str | None]) -> int:
    """Label the review page's queue from the truth through its JSON API, as its keyboard page does."""
    line = process.stdout.readline()
    assert line.startswith("Review page: http://127.0.0.1:"), line
    url = line.split()[2]
    token = requests.get(url, timeout=30).text.split('name="token" value="')[1].split('"')[0]
    queue = requests.get(url + "api/queue", params={"order": "uncertain", "n": LABELS}, timeout=30).json()
    labelled = 0
    for picture in queue["pictures"]:
        decision = "keep" if truth.get(picture["artwork_id"]) == "mona" else "drop"
        answer = requests.post(url + "api/decide", timeout=30, json={
            "artwork_id": picture["artwork_id"], "page": picture["page"], "decision": decision, "token": token})
        assert answer.status_code == 200, answer.text
        labelled += 1
    return labelled


def test_every_command_of_the_recipe_page_works_on_the_local_site(tmp_path, make_hub):
    hub = make_hub(hub_repos(tmp_path / "repos"))
    folder = tmp_path / "user"
    folder.mkdir()
    env = {k: v for k, v in crawl_env().items() if not k.startswith("HF_")} | {
        "SCRAPY_SETTINGS_MODULE": "crawler.settings", "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
        "HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": hub.api, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    found = blocks()
    assert sum(interactive for interactive, _ in found) == 1 and len(found) >= 8
    assert sum(COOKIE_PLACEHOLDER in text for _, text in found) == 1
    with LocalSite("mocksites.pixiv", *SITE) as site:
        write_scrapy(folder, site)
        truth = {work["id"]: work["character"] for work in site.truth()}
        shell = ""  # what the blocks before set (the cookie's export), for the blocks after
        for interactive, text in found:
            text = text.replace(COOKIE_PLACEHOLDER, SiteConfig.session)
            if interactive:
                command = text.strip()
                with open(tmp_path / "review-server.log", "ab") as log:  # a pipe nobody reads would fill
                    review = subprocess.Popen(["bash", "-c", shell + "exec " + command], cwd=folder, env=env,
                                              stdout=subprocess.PIPE, stderr=log, text=True)
                try:
                    assert label_like_a_person(review, truth) == LABELS
                finally:
                    review.terminate()
                    review.wait(timeout=60)
                continue
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", shell + text], cwd=folder, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{text}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
            if text.startswith("export "):
                shell += text
            if "tags show" in text:
                assert "莫娜 → mona_(genshin_impact)" in done.stdout and "not in the catalogue" not in done.stdout

    output = folder / "output"
    with closing(sqlite3.connect(output / "catalog.db")) as conn:
        faces = conn.execute("SELECT count(*) FROM faces").fetchone()[0]
        tagged = conn.execute("SELECT count(DISTINCT artwork_id || page) FROM image_tags").fetchone()[0]
        manual = conn.execute("SELECT count(*) FROM manual_decisions").fetchone()[0]
        decided = conn.execute("SELECT artwork_id, status, reason FROM images WHERE status IN ('kept', 'dropped')").fetchall()
        r18 = conn.execute("SELECT count(*) FROM artworks WHERE x_restrict > 0").fetchone()[0]
    assert faces > 10 and tagged > 10 and manual == LABELS and r18 > 0  # the cookie logged in: R-18 seen
    # The fast learner trained on the labels, and curate scored every still picture with it.
    model = folder / "models" / "mona" / "classifier-linear.npz"
    card = json.loads(model.with_suffix(".json").read_text(encoding="utf-8"))
    assert card["learner"] == "linear-v2" and card["target"] == "mona" and card["extractor"]["kind"] == "lite0"
    assert sum(card["data"]["labels"].values()) == LABELS and card["metrics"]["cross_validated"]["folds"] == 5
    weak = card["data"]["weak_positives"]  # her tagged works nobody labelled, through the aliases
    assert weak["tag"] == "mona_(genshin_impact)" and 0 < weak["pictures"] and weak["weight"] == 0.3, weak
    assert (output / "label-features.sqlite").is_file()  # the features the training read, kept
    with closing(sqlite3.connect(output / "catalog.db")) as conn:
        scored = conn.execute("SELECT classifier_model, classifier_score, classifier_label FROM images "
                              "WHERE status IN ('kept', 'dropped') AND path LIKE '%.jpg'").fetchall()
    assert scored and {row[0] for row in scored} == {model_version(model)}
    assert all(0.0 <= score <= 1.0 and label in ("mona", "other") for _, score, label in scored)
    kept = [artwork for artwork, status, _ in decided if status == "kept"]
    assert kept and sum(truth[a] == "mona" for a in kept) / len(kept) >= 0.75, [(a, truth[a], r) for a, s, r in decided if s == "kept"]
    assert (output / "report" / "index.html").is_file()

    dest = folder / "data" / "mona-lora"
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["crop"]["kind"] == "head" and manifest["total"] > 3 and manifest["totals"] == {
        "train": manifest["total"], "val": 0}
    config = tomllib.loads((dest / "dataset.toml").read_text(encoding="utf-8"))
    [subset] = config["datasets"][0]["subsets"]
    assert Path(subset["image_dir"]) == dest / "train" / "10_mona_xyz"
    crops = sorted(p for p in Path(subset["image_dir"]).iterdir() if p.suffix in (".jpg", ".png"))
    assert len(crops) == manifest["total"]
    for crop in crops:
        with Image.open(crop) as image:
            assert image.size == (512, 512)
        assert crop.with_suffix(".txt").read_text(encoding="utf-8").startswith("mona_xyz, ")
