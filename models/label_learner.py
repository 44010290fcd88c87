"""The labelling loop's fast learner: a logistic regression over a frozen pretrained network's features.

Why: a person who labels a few dozen pictures in ``scrapy review`` wants the rest sorted in seconds,
not after a CNN's epochs, and a CNN trained from scratch on 40 pictures learns colours, not a
character. Features of a network pretrained on millions of pictures, with a linear model on top, is
what works with few labels (the "linear probe"). Which network (CCIP, the configured tagger's
penultimate layer, or ImageNet EfficientNet-Lite0 offline) is models/label_features.py's choice; the
card records it, and ``predict`` reads pictures through the same one.

The model is scikit-learn's ``LogisticRegression`` (L2, classes weighted by their size) on
standardised features. The mean and spread come from the pool the model will sort (every catalogued
picture) where the caller has its features, not from the few labelled ones: 2,560 spreads estimated
from 20 pictures are mostly noise (with regularisation C 0.1 instead of 0.05, it took the labels
needed on the demo site from 110, 50, 50 on three draws to 50, 50, 50; bench/labelling.py --naive).
Labels may carry weights (weak positives: a picture tagged with the character's name, which nobody
looked at, counts less than a click). Its weights are kept as plain arrays in a ``.npz`` with a card
beside it (the same stem, ``.json``), as ``classifier.keras`` has one. ``LinearClassifier.predict``
answers like ``models.classifier.CharacterClassifier.predict``, so ``CLASSIFIER_MODEL`` may name
either file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from core.errors import ProjectError
from models.classifier import Prediction, model_version
from models.label_features import Extractor, extractor_from_card

VERSION = "linear-v2"
REGULARISATION = 0.1  # scikit-learn's C: strong, as there are far fewer labels than features
THRESHOLD = 0.5
CARD_FORMAT = "anime-art-datasets/linear-classifier"


class LinearClassifierError(ProjectError, ValueError):
    """A linear classifier file that cannot be used, or labels it cannot learn from."""


@dataclass
class LinearClassifier:
    """Standardise, then a logistic regression; ``classes`` = (target, other)."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float
    classes: tuple[str, str]
    threshold: float = THRESHOLD
    version: str = VERSION
    card: dict[str, Any] = field(default_factory=dict, repr=False)
    extractor: Extractor | None = field(default=None, repr=False)  # from the card on first use

    @property
    def target(self) -> str:
        return self.classes[0]

    @classmethod
    def fit(cls, features: np.ndarray, wanted: Sequence[bool] | np.ndarray, classes: tuple[str, str] = ("wanted", "other"),
            regularisation: float = REGULARISATION, pool: np.ndarray | None = None,
            weak: tuple[np.ndarray, float] | None = None) -> LinearClassifier:
        """Learn from ``features`` (N, D) and whether each picture is the target, standardised over
        ``pool`` (the features of the pictures to be sorted) when given, else over ``features``;
        ``weak``: (features, weight) of weak positives, learnt as the target at that weight (a label's is 1)."""
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(wanted, dtype=bool)
        weights = np.ones(len(y))
        if weak is not None and len(weak[0]):
            features = np.concatenate([features, weak[0]])
            y = np.concatenate([y, np.ones(len(weak[0]), bool)])
            weights = np.concatenate([weights, np.full(len(weak[0]), weak[1])])
        if y.all() or not y.any():
            raise LinearClassifierError(f"needs pictures of both classes, got {int(y.sum())} wanted of {len(y)}")
        spread_over = features if pool is None or len(pool) < 2 else pool
        mean = spread_over.mean(axis=0)
        std = spread_over.std(axis=0) + 1e-6
        model = LogisticRegression(C=regularisation, class_weight="balanced", max_iter=5000)
        model.fit((features - mean) / std, y, sample_weight=weights)
        return cls(mean.astype(np.float32), std.astype(np.float32), model.coef_[0].astype(np.float32),
                   float(model.intercept_[0]), classes)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The target's probability for each row of ``features``."""
        logits = ((features - self.mean) / self.std) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0))), dtype=np.float64)

    def predict(self, images: Sequence[Image.Image], batch_size: int = 16) -> list[Prediction]:
        """One Prediction per picture, as ``CharacterClassifier.predict`` gives, through the network the
        card names (models.label_features.extractor_from_card)."""
        if self.extractor is None:
            self.extractor = extractor_from_card(self.card)
        features = self.extractor(images)
        if features.shape[1:] != self.coef.shape:
            raise LinearClassifierError(f"{self.extractor.version} gives {features.shape[1]} features; the model "
                                        f"learned on {self.coef.shape[0]}")
        return self.predictions(self.scores(features))

    def predictions(self, target_scores: np.ndarray) -> list[Prediction]:
        """A Prediction per target score (``scores``'s answers), labelled by the threshold."""
        predictions = []
        for score in target_scores:
            scores = {self.classes[0]: float(score), self.classes[1]: float(1.0 - score)}
            label = self.classes[0] if score >= self.threshold else self.classes[1]
            predictions.append(Prediction(label, scores[label], float(score), scores))
        return predictions

    def save(self, path: str | Path, card: dict[str, Any]) -> None:
        """The arrays to ``path`` (.npz) and ``card`` beside it (.json), each written whole or not at all."""
        from core.storage import atomic_write
        from models import training

        path = Path(path)
        atomic_write(path, self._npz_bytes())
        self.version = model_version(path)
        self.card = {"format": CARD_FORMAT, "format_version": 1, "learner": VERSION, "classes": list(self.classes),
                     "target": self.target, "threshold": self.threshold, "model_file": path.name, **card}
        training.write_card(path.with_suffix(".json"), self.card, ensure_ascii=False)

    def _npz_bytes(self) -> bytes:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, std=self.std, coef=self.coef, intercept=np.array([self.intercept]))
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | Path, threshold: float | None = None) -> LinearClassifier:
        path = Path(path)
        card_path = path.with_suffix(".json")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
            with np.load(path, allow_pickle=False) as arrays:
                mean, std, coef, intercept = (arrays[k] for k in ("mean", "std", "coef", "intercept"))
            classes = (str(card["classes"][0]), str(card["classes"][1]))
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise LinearClassifierError(f"{path}: not a linear classifier with its card ({exc})") from None
        if card.get("format") != CARD_FORMAT or not (mean.shape == std.shape == coef.shape):
            raise LinearClassifierError(f"{path}: not a {CARD_FORMAT} model")
        return cls(mean, std, coef, float(intercept[0]), classes,
                   float(card.get("threshold", THRESHOLD) if threshold is None else threshold),
                   model_version(path), card)


def cross_validated(features: np.ndarray, wanted: Sequence[bool], folds: int = 5,
                    threshold: float = THRESHOLD, pool: np.ndarray | None = None,
                    weak: tuple[np.ndarray, float] | None = None) -> dict[str, Any] | None:
    """Held-out figures from the labels alone: each label scored by a model fitted on the others'
    folds (stratified), precision / recall / accuracy of "wanted" at ``threshold``; None with fewer
    than two labels of a class. ``pool`` and ``weak`` as ``LinearClassifier.fit``'s: the weak positives
    are in every fold's training and never held out (they are no truth to score)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(wanted, dtype=bool)
    smallest = int(min(y.sum(), (~y).sum()))
    if smallest < 2:
        return None
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=0)
    held_out = np.zeros(len(y))
    for train, test in splitter.split(features, y):
        held_out[test] = LinearClassifier.fit(features[train], y[train], pool=pool, weak=weak).scores(features[test])
    said = held_out >= threshold
    true_positive = int((said & y).sum())
    return {
        "folds": splitter.get_n_splits(),
        "labels": len(y),
        "precision": round(true_positive / said.sum(), 4) if said.any() else None,
        "recall": round(true_positive / y.sum(), 4),
        "accuracy": round(float((said == y).mean()), 4),
        "threshold": threshold,
    }
