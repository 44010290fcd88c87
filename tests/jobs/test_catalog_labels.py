"""`scrapy classifier train --from-catalog`: the pictures kept and dropped by hand in `scrapy review`
become the classifier's two classes, trained by the folder trainer, with a card that says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from catalog.store import Catalog
from jobs.catalog_labels import NotEnoughLabels, lay_out
from mocksites.runner import REPO
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
    too_few = train(output, str(tmp_path / "model"))
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


# The fast learner (--learner linear) and curate scoring every picture with it: tests/test_recipe_page.py,
# which runs both as docs/lora-recipe.md writes them.
