"""The labelling loop's fast learner (models/label_learner.py): frozen EfficientNet-Lite0 features
and a logistic regression learn a class from a few dozen pictures and score pictures they never saw;
the file round-trips and answers as the Keras classifier does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from mocksites.images import TARGET_CHARACTER, write_labelled
from models.label_features import Lite0Features
from models.label_learner import LinearClassifier, LinearClassifierError, cross_validated


@pytest.fixture(scope="module")
def features():
    return Lite0Features()


def pictures(folder, per_class: int, seed: int):
    """The demo site's own labelled pictures (mocksites/images.py): its target character (a purple witch
    hat with a gold star on a night sky) and the others, decoys included; upright, as the crawl stores them."""
    write_labelled(folder, per_class, image_size=256, seed=seed)
    images, wanted = [], []
    for path in sorted(folder.rglob("*.*")):
        with Image.open(path) as image:
            images.append(ImageOps.exif_transpose(image).convert("RGBA"))
        wanted.append(path.parent.name == TARGET_CHARACTER)
    return images, wanted


def test_it_learns_from_forty_labels_and_scores_pictures_it_has_not_seen(features, tmp_path):
    images, wanted = pictures(tmp_path / "labelled", 20, seed=1)
    vectors = features(images)
    assert vectors.shape == (40, 2560) and np.isfinite(vectors).all()
    model = LinearClassifier.fit(vectors, wanted, ("mona", "other"))
    unseen, truth = pictures(tmp_path / "unseen", 20, seed=2)
    said = [p.label == "mona" for p in model.predict(unseen)]
    assert sum(s == t for s, t in zip(said, truth)) >= 32, (said, truth)  # 0.8 of 40
    untrained = LinearClassifier(model.mean, model.std, np.zeros_like(model.coef), 0.0, ("mona", "other"))
    assert set(untrained.scores(vectors)) == {0.5}  # the scores come from what was learned

    figures = cross_validated(vectors, wanted)
    assert figures["folds"] == 5 and figures["labels"] == 40 and figures["recall"] >= 0.7 and figures["precision"] >= 0.7

    model.save(tmp_path / "m.npz", {"data": {"images": 40}})
    loaded = LinearClassifier.load(tmp_path / "m.npz")
    assert loaded.version.startswith("classifier-") and loaded.target == "mona" and loaded.card["data"] == {"images": 40}
    assert np.allclose(loaded.scores(vectors), model.scores(vectors), atol=1e-6)
    first = loaded.predict(unseen[:1])[0]
    assert first.scores["mona"] == pytest.approx(1 - first.scores["other"]) and first.target_score == first.scores["mona"]
    assert LinearClassifier.load(tmp_path / "m.npz", threshold=1.01).predict(unseen[:1])[0].label == "other"


def test_too_few_labels_and_foreign_files_are_refused(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    with pytest.raises(LinearClassifierError, match="both classes"):
        LinearClassifier.fit(vectors, [True] * 6)
    assert cross_validated(vectors, [True] * 5 + [False]) is None  # one "other": nothing to hold out
    (tmp_path / "x.npz").write_bytes(b"not numpy")
    (tmp_path / "x.json").write_text(json.dumps({"classes": ["a", "b"]}))
    with pytest.raises(LinearClassifierError, match="not a linear classifier"):
        LinearClassifier.load(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", mean=np.zeros(3), std=np.ones(3), coef=np.zeros(3), intercept=np.zeros(1))
    (tmp_path / "y.json").write_text(json.dumps({"classes": ["a", "b"], "format": "something-else"}))
    with pytest.raises(LinearClassifierError, match="not a anime-art-datasets/linear-classifier model"):
        LinearClassifier.load(tmp_path / "y.npz")
