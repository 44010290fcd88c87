"""CCIP (deepghs): is this the same anime character? A feature model and a metric model, run as
imgutils runs them (``imgutils/metrics/ccip.py``).

* Features: the picture (RGB, flattened on white) resized to 384x384 bilinear, scaled to 0..1 and
  normalised with CLIP's mean and std, NCHW, into ``model_feat.onnx`` (input ``input``, output
  ``output`` [N, 768]).
* Differences: the stacked features into ``model_metrics.onnx`` (input ``input`` [N, D], output
  ``output`` [N, N]); 0 is the same picture. Two pictures show one character when their difference
  is at most the threshold upstream fitted and publishes in ``metrics.json`` (``threshold``).
* Clustering: DBSCAN over those differences with ``eps`` = the threshold and ``min_samples`` 2, as
  imgutils' ``ccip_clustering`` does in its default mode.

``CcipModel(folder)`` takes the folder holding those three files: what ``scrapy models pull
ccip-caformer-24-randaug-pruned`` gives (``IDENTITY_EMBEDDER=ccip``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from core.errors import ProjectError
from models.imaging import flatten_on_white
from models.inference import file_sha256, onnx_providers

SIZE = 384
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
FILES = ("model_feat.onnx", "model_metrics.onnx", "metrics.json")
MIN_SAMPLES = 2  # imgutils' ccip_default_clustering_params for mode "dbscan"


class CcipError(ProjectError, RuntimeError):
    """The folder is not a CCIP model (the message says what is missing or wrong)."""


def is_ccip_folder(path: str | Path) -> bool:
    folder = Path(path)
    return folder.is_dir() and all((folder / name).is_file() for name in FILES)


def ccip_version(folder: str | Path) -> str:
    """"ccip-" and 12 hex over both models' sha256 and the threshold: new weights embed again."""
    folder = Path(folder)
    digest = hashlib.sha256(":".join([file_sha256(folder / FILES[0]), file_sha256(folder / FILES[1]),
                                      (folder / FILES[2]).read_text(encoding="utf-8")]).encode()).hexdigest()
    return f"ccip-{digest[:12]}"


def preprocess(image: Image.Image, size: int = SIZE) -> np.ndarray:
    """One picture as CCIP's feature model takes it: [3, size, size] float32."""
    rgb = flatten_on_white(image).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = (np.asarray(rgb, dtype=np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(array.transpose(2, 0, 1))


class CcipModel:
    """The feature and metric models of one CCIP folder, and upstream's threshold."""

    def __init__(self, folder: str | Path, threshold: float | None = None):
        import onnxruntime

        self.folder = Path(folder)
        if not is_ccip_folder(self.folder):
            raise CcipError(f"{self.folder}: not a CCIP model folder (needs {', '.join(FILES)})")
        try:
            metrics = json.loads((self.folder / "metrics.json").read_text(encoding="utf-8"))
            published = float(metrics["threshold"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CcipError(f"{self.folder / 'metrics.json'}: no numeric \"threshold\" ({exc})") from None
        self.threshold = published if threshold is None else float(threshold)
        if not 0 <= self.threshold <= 1:
            raise CcipError(f"CCIP threshold {self.threshold} is outside 0..1")
        try:
            self.features_session = onnxruntime.InferenceSession(str(self.folder / FILES[0]), providers=onnx_providers())
            self.metric_session = onnxruntime.InferenceSession(str(self.folder / FILES[1]), providers=onnx_providers())
        except Exception as exc:  # onnxruntime raises its own types for a broken file
            raise CcipError(f"{self.folder}: the CCIP models cannot be loaded: {exc}") from None
        shape = self.features_session.get_inputs()[0].shape
        self.size = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else SIZE
        self.version = ccip_version(self.folder)

    def embed(self, regions: Sequence[Image.Image]) -> np.ndarray:
        """CCIP features, one row a picture (not normalised: the metric model takes them as they are)."""
        if not regions:
            return np.zeros((0, 1), np.float32)
        batch = np.stack([preprocess(region, self.size) for region in regions])
        name = self.features_session.get_inputs()[0].name
        features = np.asarray(self.features_session.run(None, {name: batch})[0], dtype=np.float32)
        if features.ndim != 2 or len(features) != len(regions):
            raise CcipError(f"the CCIP feature model gave shape {features.shape}; expected [N, D]")
        return features

    def differences(self, features: np.ndarray) -> np.ndarray:
        """[N, N] differences between every pair of feature rows (0: identical)."""
        if len(features) == 0:
            return np.zeros((0, 0), np.float32)
        name = self.metric_session.get_inputs()[0].name
        result = np.asarray(self.metric_session.run(None, {name: np.asarray(features, dtype=np.float32)})[0],
                            dtype=np.float32)
        if result.shape != (len(features), len(features)):
            raise CcipError(f"the CCIP metric model gave shape {result.shape}; expected {(len(features),) * 2}")
        return result


def cluster(differences: np.ndarray, threshold: float, min_samples: int = MIN_SAMPLES) -> np.ndarray:
    """DBSCAN labels over precomputed differences (-1: in no cluster), as imgutils clusters."""
    if len(differences) < min_samples:
        return np.full(len(differences), -1, dtype=int)
    from sklearn.cluster import DBSCAN

    matrix = np.clip((differences + differences.T) / 2, 0, None)
    np.fill_diagonal(matrix, 0)
    labels: np.ndarray = DBSCAN(eps=threshold, min_samples=min_samples, metric="precomputed").fit_predict(matrix)
    return labels
