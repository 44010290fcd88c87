"""`scrapy models` and catalogue names in model settings, as users run them: real subprocesses,
``HF_ENDPOINT`` pointed at the local Hub (mocksites/hub.py), a real `scrapy curate` on the pulled
model."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.jobs.test_identity import write_heads
from tests.models.hub_fixtures import hub_repos
from tests.models.test_wd14 import solid

REPO = Path(__file__).resolve().parents[2]
TAGGER = "wd-swinv2-tagger-v3"


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> Path:
    return hub_repos(tmp_path_factory.mktemp("repos"))


def environment(tmp_path: Path, hub, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=hub.api if hub else "http://127.0.0.1:9",
               HF_HUB_DISABLE_PROGRESS_BARS="1", **extra)
    return env


def scrapy(tmp_path: Path, hub, *args: str, **env: str) -> subprocess.CompletedProcess:
    settings = ["-s", f"MODELS_LOCK_FILE={tmp_path / 'models.lock.json'}", "-s", f"MODELS_DIR={tmp_path / 'releases'}",
                "-s", f"MODELS_GITHUB_ENDPOINT={hub.api if hub else 'http://127.0.0.1:9'}"]
    return subprocess.run([sys.executable, "-m", "scrapy", *args, *settings], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=environment(tmp_path, hub, **env))


def hub_downloads(hub) -> list[dict]:
    return [r for r in hub.stats()["requests"] if not r["path"].startswith("/api/")]


def test_list_pull_verify_path_remove(tmp_path, make_hub, repos):
    hub = make_hub(repos)
    listed = scrapy(tmp_path, hub, "models", "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    for name in ("wd-v1-4-convnext-tagger-v2", "wd-swinv2-tagger-v3", "wd-vit-tagger-v3", "wd-eva02-large-tagger-v3",
                 "face-detect-v1.4-s", "head-detect-v2.0-s", "ccip-caformer-24-randaug-pruned (ccip)",
                 "deepdanbooru-v3-20211112-sgd-e28"):
        assert name in listed.stdout
    assert f"{TAGGER}" in listed.stdout and "not pulled" in listed.stdout

    pulled = scrapy(tmp_path, hub, "models", "pull", TAGGER)
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    path = Path(pulled.stdout.strip().split(": ", 1)[1])
    assert (path / "model.onnx").is_file() and str(path).startswith(str(tmp_path / "hf-home"))
    assert scrapy(tmp_path, hub, "models", "path", TAGGER).stdout.strip() == str(path)
    verified = scrapy(tmp_path, hub, "models", "verify")
    assert verified.returncode == 0 and f"{TAGGER}: ok" in verified.stdout
    assert f"pulled at {hub.stats()['repos']['SmilingWolf/' + TAGGER][:10]}" in \
        scrapy(tmp_path, hub, "models", "list").stdout

    (path / "selected_tags.csv").resolve().write_text("tag_id,name,category,count\n")
    broken = scrapy(tmp_path, hub, "models", "verify", TAGGER)
    assert broken.returncode == 1
    assert broken.stderr.strip().splitlines() == [line for line in broken.stderr.strip().splitlines()
                                                   if line.startswith("scrapy models: error: ")]
    assert "selected_tags.csv does not match the lock" in broken.stderr

    removed = scrapy(tmp_path, hub, "models", "remove", TAGGER, "--forget")
    assert removed.returncode == 0 and "its lock entry is gone" in removed.stdout
    assert not (path / "model.onnx").exists()
    unknown = scrapy(tmp_path, hub, "models", "pull", "no-such-model")
    assert unknown.returncode == 2 and "not in the model catalogue" in unknown.stderr


def test_offline_pull_is_one_line(tmp_path):
    run = scrapy(tmp_path, None, "models", "pull", TAGGER, HF_HUB_OFFLINE="1")
    assert run.returncode == 1
    assert run.stderr.strip() == (f"scrapy models: error: cannot download {TAGGER} (SmilingWolf/{TAGGER}/model.onnx): "
                                  "HF_HUB_OFFLINE is set")
    unreachable = scrapy(tmp_path, None, "models", "pull", TAGGER)
    assert unreachable.returncode == 1
    assert unreachable.stderr.strip() == (f"scrapy models: error: cannot download {TAGGER} (SmilingWolf/{TAGGER}): "
                                          "the Hub at http://127.0.0.1:9 cannot be reached")


def query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def test_a_catalogue_name_in_a_setting_pulls_once_and_curate_runs_on_it(tmp_path, make_hub, repos):
    hub = make_hub(repos)
    library = tmp_path / "library"
    library.mkdir()
    solid((255, 0, 0)).save(library / "red.png")
    solid((0, 0, 255)).save(library / "blue.png")
    out = tmp_path / "out"
    args = ("curate", str(library), "--stages", "tag", "-s", f"TAGGER_PROJECT={TAGGER}", "-s", f"OUTPUT_DIR={out}",
            "-s", "IMAGE_WORKERS=0", "--no-progress")
    offline = scrapy(tmp_path, hub, *args, HF_HUB_OFFLINE="1")
    assert offline.returncode == 1
    assert offline.stderr.strip().splitlines()[-1] == (
        f"scrapy curate: error: TAGGER_PROJECT={TAGGER}: not downloaded and HF_HUB_OFFLINE is set; run "
        f"`scrapy models pull {TAGGER}` where the network allows")
    assert hub_downloads(hub) == []

    first = scrapy(tmp_path, hub, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert any(r["path"].endswith("/model.onnx") for r in hub_downloads(hub))
    tags = dict(query(out / "catalog.db", "SELECT i.path, group_concat(t.tag) FROM images i JOIN image_tags t "
                                          "USING (artwork_id, page) GROUP BY i.path"))
    assert {Path(k).name: v for k, v in tags.items()}["red.png"].count("char_red") == 1
    lock = json.loads((tmp_path / "models.lock.json").read_text())
    assert list(lock["models"]) == [TAGGER]

    hub.control("/_mock/reset-stats", "POST")
    again = scrapy(tmp_path, hub, *args, "--force")
    assert again.returncode == 0, again.stderr[-3000:]
    assert hub_downloads(hub) == []  # pulled once: the lock's commit is in the cache


def test_identity_with_ccip_uses_its_metric_and_threshold(tmp_path, make_hub, repos):
    hub = make_hub(repos)
    library, reference = tmp_path / "library", tmp_path / "reference"
    write_heads(library, "red", range(10, 14))
    write_heads(library, "blue", range(10, 14))
    write_heads(reference, "red", range(3))
    out = tmp_path / "out"
    rules = json.dumps([{"action": "keep", "if": "identity"}])
    run = scrapy(tmp_path, hub, "curate", str(library), "--stages", "identity", "--reference", str(reference),
                 "-s", "IDENTITY_EMBEDDER=ccip", "-s", f"CURATE_RULES={rules}", "-s", "CURATE_DEFAULT=drop",
                 "-s", f"OUTPUT_DIR={out}", "-s", "IMAGE_WORKERS=0", "--no-progress")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "identity: 4 of 8 pictures are the character (3 references from" in run.stdout
    assert "threshold 0.02)" in run.stdout  # upstream's, from metrics.json
    rows = query(out / "catalog.db", "SELECT i.path, i.status, d.source, d.embedder, d.reason FROM images i "
                                     "JOIN identity d USING (artwork_id, page)")
    for path, status, source, embedder, reason in rows:
        assert status == ("kept" if Path(path).name.startswith("red-") else "dropped"), (path, reason)
        assert source == "whole" and embedder.startswith("ccip-") and "references" in reason
