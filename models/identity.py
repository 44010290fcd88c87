"""Character identity without labels: embed each picture's head, cluster, keep one character.

Someone crawls a broad tag (原神) and wants one character (Mona) without labelling a training set.
Three steps, plain functions over PIL images and numpy arrays:

* ``head_region``: what to embed. The face box the face stage stored (stages/faces.py), grown
  upwards and sideways so the hair is in it; without a face, the upper part of a tall picture
  (where a standing figure's head is), else the whole picture.
* An embedder turns each region into an L2-normalised vector:

  - ``ColourEmbedder`` (built in, no weights): what tells anime characters apart at a glance is
    their hair and eye colours, so it takes colour histograms in CIELAB (hue x lightness for
    coloured pixels, four grey levels for the rest) over the region's top band (hair), its middle
    band (eyes) and the whole, plus a coarse gradient-orientation histogram (texture: straight or
    curly hair, line density). Transparent pixels count for nothing. Blocks are normalised,
    square-rooted (Hellinger) and weighted, then the vector is L2-normalised.
  - ``OnnxEmbedder`` (``IDENTITY_EMBEDDER=path/model.onnx``): any image model exported to ONNX
    that maps one picture to one vector (a CLIP or DINO image encoder, an anime-face embedding
    network). One float32 input of 4 dimensions, NCHW ``[N, 3, H, W]`` or NHWC ``[N, H, W, 3]``,
    with a fixed height and width (read from the model); RGB values scaled as ``normalization``
    says (``0-1``, ``-1-1``, ``imagenet``, ``clip``). The first output is the embedding:
    ``[N, D]``, or ``[N, T, D]`` tokens of which the first (CLS) is taken.
* ``match``: with reference pictures, a picture is the character when its embedding lies within
  ``threshold`` of the references' centroid, or in the HDBSCAN cluster that holds most of the
  references and within ``CLUSTER_SLACK`` thresholds (a cluster alone lets in too much: with
  hand-made features clusters are loose, bench/identity.py); without references, when it is in
  the largest cluster (the dominant character of the crawl). Every decision carries its reason:
  distance, cluster and size, embedder version.

Distances are Euclidean between unit vectors (0 same direction, sqrt(2) orthogonal, 2 opposite),
so a threshold means the same for every picture; it depends on the embedder, though: the built-in
default (``DEFAULT_THRESHOLD``) was chosen on the shared fixtures with bench/identity.py, and an
ONNX embedder needs its own (the bench prints precision and recall over a range).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from PIL import Image

from core.errors import ProjectError
from models.inference import file_sha256, onnx_providers

log = logging.getLogger(__name__)

BUILTIN_VERSION = "colour-v1"
DEFAULT_THRESHOLD = 0.5  # on ColourEmbedder vectors; see the module docstring
REFERENCE_SHARE = 0.5  # CCIP: the same as at least this share of the references makes the character
CLUSTER_SLACK = 1.25  # a picture in the references' cluster is kept up to this many thresholds away
DEFAULT_MIN_CLUSTER_SIZE = 5
TALL_RATIO = 1.25  # height / width from which a picture without a face is embedded by its upper part
UPPER_SHARE = 0.45  # ... this share of its height (a standing figure's head and hair)
FACE_GROW_SIDES = 0.35  # the face box grown by this share of its width on each side ...
FACE_GROW_UP = 0.6  # ... and this share of its height upwards (the hair above the face) ...
FACE_GROW_DOWN = 0.1  # ... and downwards
REGION_SIZE = 64  # px: regions are resized to this square before the features
HUE_BINS, LIGHT_BINS, GREY_BINS = 12, 3, 4
CHROMA_GREY = 12.0  # Lab chroma under which a pixel counts as grey (white, silver, black hair)
ORIENTATION_BINS = 8
BLOCK_WEIGHTS = {"hair": 1.0, "eyes": 0.8, "whole": 0.6, "texture": 0.5}
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "0-1": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "-1-1": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


class EmbedderError(ProjectError, RuntimeError):
    """An embedder that cannot be loaded or used; the message says why."""


class Embedder(Protocol):
    version: str

    def embed(self, regions: Sequence[Image.Image]) -> np.ndarray:
        """(len(regions), D) float32, each row L2-normalised."""


# --- what to embed --------------------------------------------------------------------------------


def head_region(image: Image.Image, face: dict[str, Any] | None = None) -> tuple[Image.Image, str]:
    """(RGBA region, what it is: ``face x,y,w,h``, ``upper`` or ``whole``) for one picture."""
    rgba = image.convert("RGBA")
    width, height = rgba.size
    if face is not None:
        x, y, w, h = face["x"], face["y"], face["w"], face["h"]
        box = (
            max(0, round(x - FACE_GROW_SIDES * w)), max(0, round(y - FACE_GROW_UP * h)),
            min(width, round(x + w + FACE_GROW_SIDES * w)), min(height, round(y + h + FACE_GROW_DOWN * h)),
        )
        if box[2] > box[0] and box[3] > box[1]:
            return rgba.crop(box), f"face {x},{y},{w},{h}"
    if height >= TALL_RATIO * width:
        return rgba.crop((0, 0, width, max(1, round(height * UPPER_SHARE)))), "upper"
    return rgba, "whole"


# --- the built-in embedder ------------------------------------------------------------------------


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values 0..255, shape (..., 3): a space where distances follow perception."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124564, 0.2126729, 0.0193339],
                             [0.3575761, 0.7151522, 0.1191920],
                             [0.1804375, 0.0721750, 0.9503041]])
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def colour_histogram(lab: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Hue x lightness bins for coloured pixels and grey-level bins for the rest, weighted, summing to 1."""
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma = np.hypot(a, b)
    coloured = chroma >= CHROMA_GREY
    hue_bin = ((np.arctan2(b, a) + np.pi) / (2 * np.pi) * HUE_BINS).astype(int) % HUE_BINS
    light_bin = np.clip((lightness / 100 * LIGHT_BINS).astype(int), 0, LIGHT_BINS - 1)
    grey_bin = np.clip((lightness / 100 * GREY_BINS).astype(int), 0, GREY_BINS - 1)
    index = np.where(coloured, hue_bin * LIGHT_BINS + light_bin, HUE_BINS * LIGHT_BINS + grey_bin)
    histogram = np.bincount(index.ravel(), weights=weight.ravel(), minlength=HUE_BINS * LIGHT_BINS + GREY_BINS)
    total = histogram.sum()
    return histogram / total if total > 0 else histogram


def orientation_histogram(lightness: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Gradient orientations (magnitude-weighted) on a 2x2 grid: a coarse texture signature."""
    gy, gx = np.gradient(lightness)
    magnitude = np.hypot(gx, gy) * weight
    orientation = ((np.arctan2(gy, gx) % np.pi) / np.pi * ORIENTATION_BINS).astype(int) % ORIENTATION_BINS
    half = lightness.shape[0] // 2
    cells = []
    for rows in (slice(0, half), slice(half, None)):
        for cols in (slice(0, half), slice(half, None)):
            cells.append(np.bincount(orientation[rows, cols].ravel(), weights=magnitude[rows, cols].ravel(),
                                     minlength=ORIENTATION_BINS))
    histogram = np.concatenate(cells)
    total = histogram.sum()
    return histogram / total if total > 0 else histogram


def colour_features(region: Image.Image) -> np.ndarray:
    """The built-in embedding of one region (see the module docstring)."""
    rgba = np.asarray(region.convert("RGBA").resize((REGION_SIZE, REGION_SIZE), Image.Resampling.BILINEAR),
                      dtype=np.float64)
    lab = srgb_to_lab(rgba[..., :3])
    weight = rgba[..., 3] / 255.0
    top, eyes_from, eyes_to = int(REGION_SIZE * 0.4), int(REGION_SIZE * 0.35), int(REGION_SIZE * 0.7)
    blocks = {
        "hair": colour_histogram(lab[:top], weight[:top]),
        "eyes": colour_histogram(lab[eyes_from:eyes_to], weight[eyes_from:eyes_to]),
        "whole": colour_histogram(lab, weight),
        "texture": orientation_histogram(lab[..., 0], weight),
    }
    vector = np.concatenate([np.sqrt(block) * BLOCK_WEIGHTS[name] for name, block in blocks.items()])
    return unit(vector)


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)


class ColourEmbedder:
    """The built-in, dependency-free embedder: hair and eye colours plus coarse texture."""

    version = BUILTIN_VERSION

    def embed(self, regions: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([colour_features(r) for r in regions]) if regions else np.zeros((0, 1), np.float32)


# --- a user-supplied ONNX embedder ----------------------------------------------------------------


def onnx_version(path: str | Path, normalization: str) -> str:
    """"onnx-" and 12 hex of the model's sha256 (and the normalisation): new weights embed again."""
    digest = hashlib.sha256(f"{file_sha256(Path(path))}:{normalization}".encode()).hexdigest()
    return f"onnx-{digest[:12]}"


class OnnxEmbedder:
    """An image encoder exported to ONNX, run with onnxruntime (formats in the module docstring)."""

    def __init__(self, path: str | Path, normalization: str = "0-1"):
        import onnxruntime  # only when a user embedder is configured

        self.path = Path(path)
        if normalization not in NORMALIZATIONS:
            raise EmbedderError(f"unknown normalization {normalization!r}; known: {', '.join(NORMALIZATIONS)}")
        if not self.path.is_file():
            raise EmbedderError(f"{self.path}: no such embedder model file")
        self.mean, self.std = (np.array(v, dtype=np.float32) for v in NORMALIZATIONS[normalization])
        self.version = onnx_version(self.path, normalization)
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), providers=onnx_providers())
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise EmbedderError(f"{self.path}: not a loadable ONNX model: {exc}") from None
        inputs = self.session.get_inputs()
        shape = list(inputs[0].shape) if inputs else []
        if len(inputs) != 1 or len(shape) != 4 or inputs[0].type != "tensor(float)":
            raise EmbedderError(f"{self.path}: expected one float32 input of 4 dimensions (NCHW or NHWC), got "
                                f"{[(i.name, i.shape, i.type) for i in inputs]}")
        self.channels_first = shape[1] == 3
        if not self.channels_first and shape[3] != 3:
            raise EmbedderError(f"{self.path}: the input {shape} has no axis of 3 colour channels at 1 or 3")
        height, width = (shape[2], shape[3]) if self.channels_first else (shape[1], shape[2])
        if not (isinstance(height, int) and isinstance(width, int)):
            raise EmbedderError(f"{self.path}: the input's height and width must be fixed, got {shape}")
        self.size = (width, height)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.input_name = inputs[0].name

    def embed(self, regions: Sequence[Image.Image]) -> np.ndarray:
        from models.imaging import flatten_on_white

        if not regions:
            return np.zeros((0, 1), np.float32)
        arrays = [
            (np.asarray(flatten_on_white(r).convert("RGB").resize(self.size, Image.Resampling.BICUBIC),
                        dtype=np.float32) / 255.0 - self.mean) / self.std
            for r in regions
        ]
        batch = np.stack(arrays)
        if self.channels_first:
            batch = batch.transpose(0, 3, 1, 2)
        step = self.fixed_batch or len(batch)
        outputs = [self.session.run(None, {self.input_name: np.ascontiguousarray(batch[i:i + step])})[0]
                   for i in range(0, len(batch), step)]
        vectors = np.concatenate(outputs).astype(np.float32)
        if vectors.ndim == 3:  # tokens: the first one (CLS) stands for the picture
            vectors = vectors[:, 0, :]
        if vectors.ndim != 2 or len(vectors) != len(regions):
            raise EmbedderError(f"{self.path.name} gave an output of shape {vectors.shape}; expected [N, D] or [N, T, D]")
        return np.stack([unit(v) for v in vectors])


def default_embedder() -> str:
    """What an empty IDENTITY_EMBEDDER means: the shipped lite0-metric-v1 when its head and the
    backbone's wheel are there (models/identity_metric.py), else colour-v1."""
    from models import identity_metric

    return str(identity_metric.SHIPPED_DIR) if identity_metric.shipped_available() else BUILTIN_VERSION


def embedder_version(path: str | None, normalization: str = "0-1") -> str:
    """The version ``load_embedder`` would give, without loading a model."""
    from models.ccip import ccip_version, is_ccip_folder
    from models.identity_metric import is_metric_folder, metric_version

    path = path or default_embedder()
    if path == BUILTIN_VERSION:
        return BUILTIN_VERSION
    if is_metric_folder(path):
        return metric_version(path)
    return ccip_version(path) if is_ccip_folder(path) else onnx_version(path, normalization)


def load_embedder(path: str | None, normalization: str = "0-1", threshold: float | None = None) -> Any:
    """The default (``default_embedder``), colour-v1, a lite0-metric folder (``MetricEmbedder``: it
    has its own ``default_threshold``), a CCIP folder (``models.ccip.CcipModel``: it also has
    ``differences`` and its own ``threshold``), or any ONNX image encoder."""
    from models.ccip import CcipModel, is_ccip_folder
    from models.identity_metric import MetricEmbedder, is_metric_folder

    path = path or default_embedder()
    if path == BUILTIN_VERSION:
        return ColourEmbedder()
    if is_metric_folder(path):
        return MetricEmbedder(path)
    if is_ccip_folder(path):
        return CcipModel(path, threshold)
    return OnnxEmbedder(path, normalization)


# --- cluster and match ----------------------------------------------------------------------------


def cluster(embeddings: np.ndarray, min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE) -> np.ndarray:
    """HDBSCAN labels (-1: noise, in no cluster); every point is noise when there are too few."""
    if len(embeddings) < max(2, min_cluster_size):
        return np.full(len(embeddings), -1, dtype=int)
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(min_cluster_size=min_cluster_size, metric="euclidean", copy=True).fit_predict(embeddings)


@dataclass(frozen=True)
class Match:
    """Whether one picture is the wanted character, and why."""

    matched: bool
    distance: float  # to the references' centroid, or to the dominant cluster's centroid
    cluster: int  # -1: noise
    cluster_size: int
    reason: str


def centroid(embeddings: np.ndarray) -> np.ndarray:
    return unit(np.asarray(embeddings, dtype=np.float64).mean(axis=0))


def match(
    embeddings: np.ndarray,
    references: np.ndarray | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
    version: str = BUILTIN_VERSION,
) -> list[Match]:
    """One ``Match`` per row of ``embeddings`` (see the module docstring for the two modes)."""
    n = len(embeddings)
    if n == 0:
        return []
    with_references = references is not None and len(references) > 0
    points = np.concatenate([embeddings, references]) if with_references else embeddings
    labels = cluster(points, min_cluster_size)
    sizes = Counter(int(label) for label in labels[:n] if label >= 0)
    if references is not None and with_references:
        target = centroid(references)
        reference_labels = Counter(int(label) for label in labels[n:] if label >= 0)
        wanted, held = reference_labels.most_common(1)[0] if reference_labels else (None, 0)
        if wanted is not None and held * 2 < len(references):  # the references are scattered
            wanted = None
    else:
        if not sizes:
            return [Match(False, float("nan"), -1, 0,
                          f"no cluster among {n} pictures (min_cluster_size {min_cluster_size}; {version})")] * n
        wanted = max(sizes, key=lambda label: (sizes[label], -label))
        target = centroid(embeddings[labels[:n] == wanted])
    distances = np.linalg.norm(embeddings - target, axis=1)
    results = []
    for distance, label in zip(distances.tolist(), labels[:n].tolist()):
        size = sizes.get(label, 0) if label >= 0 else 0
        where = f"cluster {label} of {size}" if label >= 0 else "no cluster"
        if with_references:
            near = distance <= threshold
            in_cluster = wanted is not None and label == wanted and distance <= threshold * CLUSTER_SLACK
            matched = near or in_cluster
            why = [f"distance {distance:.3f} {'<=' if near else '>'} {threshold:g} to the references' centroid"]
            if in_cluster:
                why.append(f"in the references' cluster {label} of {size}")
            else:
                why.append(where)
        else:
            matched = label == wanted
            why = [f"{where}" + (" (the dominant one)" if matched else f", not the dominant cluster {wanted} of "
                                 f"{sizes.get(wanted or 0, 0)}"),
                   f"distance {distance:.3f} to its centroid"]
        results.append(Match(matched, float(distance), int(label), size, f"{'; '.join(why)} ({version})"))
    return results


def match_pairwise(
    differences: np.ndarray,
    count: int,
    *,
    threshold: float,
    min_samples: int = 2,
    version: str = BUILTIN_VERSION,
) -> list[Match]:
    """``match`` for a model that scores pairs (CCIP): ``differences`` is [N+R, N+R] over the ``count``
    pictures then R references. With references, a picture is the character when it is the same
    (difference <= threshold) as at least ``REFERENCE_SHARE`` of them; without, when it is in the
    largest DBSCAN cluster (eps = threshold), as upstream clusters."""
    from models.ccip import cluster as dbscan

    references = len(differences) - count
    labels = dbscan(differences, threshold, min_samples)
    sizes = Counter(int(label) for label in labels[:count] if label >= 0)
    results = []
    if references > 0:
        to_references = differences[:count, count:]
        for row, label in zip(to_references, labels[:count].tolist()):
            same = float(np.mean(row <= threshold))
            median = float(np.median(row))
            matched = same >= REFERENCE_SHARE
            where = f"cluster {label} of {sizes.get(label, 0)}" if label >= 0 else "no cluster"
            results.append(Match(matched, median, int(label), sizes.get(label, 0) if label >= 0 else 0,
                                 f"the same as {same:.0%} of {references} references (difference <= {threshold:g}; "
                                 f"median {median:.3f}); {where} ({version})"))
        return results
    if not sizes:
        return [Match(False, float("nan"), -1, 0,
                      f"no cluster among {count} pictures (eps {threshold:g}, min_samples {min_samples}; {version})")] * count
    wanted = max(sizes, key=lambda label: (sizes[label], -label))
    members = np.flatnonzero(labels[:count] == wanted)
    for index, label in enumerate(labels[:count].tolist()):
        median = float(np.median(differences[index, members]))
        matched = label == wanted
        where = f"cluster {label} of {sizes.get(label, 0)}" if label >= 0 else "no cluster"
        results.append(Match(matched, median, int(label), sizes.get(label, 0) if label >= 0 else 0,
                             f"{where}" + (" (the dominant one)" if matched else f", not the dominant cluster {wanted} "
                                           f"of {sizes[wanted]}") + f"; median difference {median:.3f} to it ({version})"))
    return results


# --- storage helpers ------------------------------------------------------------------------------


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").copy()
