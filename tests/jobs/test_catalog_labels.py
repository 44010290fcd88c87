"""`scrapy classifier train --from-catalog`: the pictures kept and dropped by hand in `scrapy review`
become the classifier's two classes, trained by the folder trainer, with a card that says so."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from catalog.store import Catalog
from jobs.catalog_labels import NotEnoughLabels, embed_stored, lay_out, sortable_pictures, train_linear, weak_positives
from mocksites.runner import REPO
from models.label_features import FeatureCache, Lite0Features
from models.label_learner import LinearClassifier
from stages.classify import Classify
from tests.conftest import crawl_env
from tests.crawler.small_crawl import crawled_copy
from tests.jobs.test_review import kept_ids


def label(output, keep, drop):
    catalog = Catalog(output / "catalog.db")
    with catalog.batch():
        for n, artwork_id in enumerate(keep):
            catalog.set_manual_decision(artwork_id, 0, "keep", f"2026-12-07T10:00:{n:02d}+00:00")
        for n, artwork_id in enumerate(drop):
            catalog.set_manual_decision(artwork_id, 0, "drop", f"2026-12-07T11:00:{n:02d}+00:00")
    catalog.close()


def train(output, *args):
    return subprocess.run([sys.executable, "-m", "scrapy", "classifier", "train", "--from-catalog", *args,
                           "-s", f"OUTPUT_DIR={output}"], cwd=REPO, env=crawl_env(), capture_output=True, text=True,
                          timeout=300)


def test_the_labels_are_laid_out_as_class_folders_and_trained_on(pixiv_site, tmp_path_factory, tmp_path):
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    ids = kept_ids(output)
    label(output, ids[:1], ids[1:4])
    too_few = train(output, "--weak-tag", "no_such_tag", str(tmp_path / "model"))  # no weak positives either
    assert too_few.returncode == 1 and "1 pictures kept and 3 dropped by hand" in too_few.stderr
    assert "usage:" not in too_few.stderr.casefold()  # the data's fault: no usage banner
    assert "label more in scrapy review" in too_few.stderr and not (tmp_path / "model").exists()

    label(output, ids[4:8], ids[8:12])
    (output / f"images/{ids[7]}_p0.jpg").unlink()  # a decided picture whose file is gone is counted, not used
    laid = lay_out(output / "catalog.db", output, tmp_path / "folders", "mona")
    assert laid.per_class == {"mona": 4, "other": 7} and laid.missing == 1
    linked = tmp_path / "folders" / "mona" / f"{ids[4]}_p0.jpg"
    assert linked.read_bytes() == (output / f"images/{ids[4]}_p0.jpg").read_bytes()
    assert os.stat(linked).st_ino == os.stat(output / f"images/{ids[4]}_p0.jpg").st_ino  # a link, not a copy
    with pytest.raises(NotEnoughLabels, match="cannot name"):
        lay_out(output / "catalog.db", output, tmp_path / "x", "other")

    done = train(output, "--learner", "cnn", "--class-name", "mona", "--epochs", "2", "--image-size", "32",
                 str(tmp_path / "model"))
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)  # the result alone: Keras's epoch bars go to stderr
    assert printed["labels"] == {"mona": 4, "other": 7}, done.stdout[-2000:]
    card = json.loads((tmp_path / "model" / "classifier.json").read_text(encoding="utf-8"))
    assert card["classes"] == ["mona", "other"] and card["target"] == "mona"
    assert card["data"]["images"] == 11 and card["data"]["labels"] == {"mona": 4, "other": 7}
    assert card["data"]["source"].startswith("catalogue manual decisions") and card["data"]["labels_without_a_file"] == 1
    assert (tmp_path / "model" / "classifier.keras").is_file()

    wrong = subprocess.run([sys.executable, "-m", "scrapy", "classifier", "predict", "--from-catalog", "m.keras", "x.jpg"],
                           cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "--from-catalog goes with train only" in wrong.stderr
    weak_cnn = train(output, "--learner", "cnn", "--weak-tag", "x", str(tmp_path / "m2"))
    assert weak_cnn.returncode == 2 and "--weak-tag and --weak-weight go with the linear learner" in weak_cnn.stderr


def test_the_fast_learner_embeds_each_picture_once_and_learns_from_weak_positives(pixiv_site, tmp_path_factory,
                                                                                  tmp_path, monkeypatch):
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    catalog = output / "catalog.db"
    ids = kept_ids(output)
    tag = "モナ(原神)"  # on 14 of the 64 stored stills
    with sqlite3.connect(catalog) as conn:
        tagged_ids = {r[0] for r in conn.execute("SELECT artwork_id FROM artwork_tags WHERE tag = ?", [tag])}
    untagged = [i for i in ids if i not in tagged_ids]
    label(output, [], untagged[:3])  # drops only: without weak positives there is nothing to learn from
    cache = FeatureCache(tmp_path / "features.sqlite")
    embedded: list[int] = []
    real_call = Lite0Features.__call__
    monkeypatch.setattr(Lite0Features, "__call__", lambda self, images: embedded.append(len(images)) or real_call(self, images))
    with pytest.raises(NotEnoughLabels, match="0 pictures kept and 3 dropped by hand"):
        train_linear(catalog, output, tmp_path / "none", "mona", cache=cache)

    path, card = train_linear(catalog, output, tmp_path / "weak", "mona", cache=cache, weak_tag=tag, weak_weight=0.5)
    sortable = sortable_pictures(catalog)
    weak = weak_positives(catalog, tag, set())
    assert 2 <= len(weak) < len(sortable) and all(a in tagged_ids for a, _, _ in weak)
    assert card["data"]["weak_positives"] == {"tag": tag, "pictures": len(weak), "weight": 0.5}
    assert card["data"]["labels"] == {"mona": 0, "other": 3} and card["metrics"]["cross_validated"] is None
    assert sum(embedded) == len(sortable) == card["data"]["standardised_over"]  # each picture once: the cache
    model = LinearClassifier.load(path)
    pool = embed_stored(output, sortable, cache)
    scores = dict(zip(pool.keys, model.scores(pool.features)))
    weak_keys = {(a, p) for a, p, _ in weak}
    assert np.mean([v for k, v in scores.items() if k in weak_keys]) > np.mean([v for k, v in scores.items() if k not in weak_keys])

    embedded.clear()  # a hand label outranks the tag: a tagged picture dropped by hand is no weak positive
    tagged_kept = [i for i in ids if i in tagged_ids]
    label(output, tagged_kept[:2], tagged_kept[2:4])
    path, card = train_linear(catalog, output, tmp_path / "again", "mona", cache=cache, weak_tag=tag)
    assert embedded == [] and card["data"]["weak_positives"]["pictures"] == len(weak) - 4
    assert card["data"]["labels"] == {"mona": 2, "other": 5}
    assert not {(a, 0) for a in tagged_kept[:4]} & {(a, p) for a, p, _ in weak_positives(catalog, tag, {(a, 0) for a in tagged_kept[:4]})}

    # read back from the cache, a picture scores as the crawl's classify stage scores it afresh
    stage = Classify(path)
    fresh = stage.results(output, [stored for *_, stored in sortable[:8]])
    cached = stage.results_from_features(embed_stored(output, sortable[:8], cache).features)
    assert [r["score"] for r in fresh] == pytest.approx([r["score"] for r in cached], abs=1e-6)
    assert [r["label"] for r in fresh] == [r["label"] for r in cached]
    cache.close()


# The fast learner from the command line (--learner linear --weak-tag) and curate scoring every picture
# with it: tests/test_recipe_page.py, which runs both as docs/lora-recipe.md writes them.
