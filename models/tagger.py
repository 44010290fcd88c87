"""Danbooru-style multi-label tagging with a user-supplied DeepDanbooru project folder.

No tagger weights ship in any package (see ml-notes §0.4), so the tagger loads the folder that users
download from DeepDanbooru's releases, unchanged: ``project.json`` (input size, model name),
``tags.txt`` (output index -> tag), ``categories.json`` (or ``tags-general.txt`` /
``tags-character.txt``) and ``model-<name>.keras`` or ``model-<name>.h5``.

Loading tries Keras 3 first. The released models are Keras-2 ``.h5`` files; Keras 3 reads those
with standard layers, but refuses ones holding raw TF ops (``TFOpLambda``) or ``Lambda`` layers.
For those the tagger falls back to ``tf_keras`` (Keras 2), with one warning. A ``.h5`` is trusted
like any pickle: Keras 2 runs the Python code a ``Lambda`` layer stores.

Preprocessing follows DeepDanbooru's ``load_image_for_evaluate``: RGB, fitted inside H x W the way
``tf.image.resize(AREA, preserve_aspect_ratio=True)`` does it (TF's rounded size, exact area
averaging), centred on an H x W canvas as ``transform_and_pad_image`` warps it (bilinear, so an odd
margin shifts the picture by half a pixel; the margins repeat the edge pixels), float32 0..1, HWC.
It matches TF's own ops to float rounding. Differences: transparency is composited on white here,
where TF's decoder simply drops alpha; and a picture so thin that TF would fit it to 0 pixels (and
fail) keeps one pixel.

``features`` gives the penultimate layer (the labelling loop's linear model reads pictures through it,
models/label_features.py): what the last layer with weights reads, DeepDanbooru's last feature map
before its 1x1 conv head, averaged over space.

Works under both Keras backends (TensorFlow, torch); ``KERAS_BACKEND`` must be set before Keras is
first imported, so a process uses one. Keras and TensorFlow are imported only when a model loads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from core.errors import ProjectError
from models.imaging import flatten_on_white
from models.inference import batched_scores, file_sha256, to_numpy

log = logging.getLogger(__name__)

TF_KERAS_FIX = "pip install tf-keras==2.21.0"  # must match the TensorFlow minor version
SYSTEM = "System"


class TaggerError(ProjectError, RuntimeError):
    """The project folder is incomplete or inconsistent, or its model cannot be loaded."""


@dataclass(frozen=True)
class Category:
    """Tags ``start`` (inclusive) to ``end`` (exclusive) of ``tags.txt``."""

    name: str
    start: int
    end: int


def read_tags(path: Path) -> list[str]:
    """Non-empty stripped lines, in order (DeepDanbooru's ``load_tags``)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_categories(project_dir: Path, tag_count: int) -> tuple[Category, ...]:
    """From ``categories.json``; else from the per-category tag files (the rest is "System")."""
    path = project_dir / "categories.json"
    if path.is_file():
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            starts = sorted((int(entry["start_index"]), str(entry["name"])) for entry in entries)
        except (ValueError, TypeError, KeyError) as error:
            raise TaggerError(f"{path}: not a list of {{'name', 'start_index'}} objects ({error})") from error
        if not starts or starts[0][0] != 0 or starts[-1][0] > tag_count:
            raise TaggerError(f"{path}: start indexes must begin at 0 and stay within the {tag_count} tags")
    else:
        counts = []
        for name in ("General", "Character"):
            tag_file = project_dir / f"tags-{name.lower()}.txt"
            if tag_file.is_file():
                counts.append((name, len(read_tags(tag_file))))
        if not counts:  # only tags.txt: a single category, so a "General" threshold still applies
            return (Category("General", 0, tag_count),)
        starts, index = [], 0
        for name, count in counts:
            starts.append((index, name))
            index += count
        if index > tag_count:
            raise TaggerError(f"{project_dir}: the tags-*.txt files list {index} tags, tags.txt only {tag_count}")
        starts.append((index, SYSTEM))
    ends = [start for start, _ in starts[1:]] + [tag_count]
    return tuple(Category(name, start, end) for (start, name), end in zip(starts, ends) if end > start)


def find_model_file(project_dir: Path, model_name: str) -> Path:
    """``model-<name>.keras``, else ``model-<name>.h5``, else the folder's only ``.keras``/``.h5`` file."""
    for suffix in (".keras", ".h5"):
        path = project_dir / f"model-{model_name}{suffix}"
        if path.is_file():
            return path
    others = sorted(p for p in project_dir.iterdir() if p.suffix in (".keras", ".h5") and p.is_file())
    if len(others) == 1:
        return others[0]
    found = f"; found several: {', '.join(p.name for p in others)}" if others else ""
    raise TaggerError(f"{project_dir}: missing model file model-{model_name}.keras or model-{model_name}.h5{found}")


def read_project(project_dir: Path) -> tuple[int, int, str]:
    """(image width, image height, model name) from ``project.json``; the folder must hold ``tags.txt`` too."""
    if not project_dir.is_dir():
        raise TaggerError(
            f"{project_dir}: not a folder (expected a DeepDanbooru project folder, or a WD14 model.onnx + selected_tags.csv)"
        )
    for required in ("project.json", "tags.txt"):
        if not (project_dir / required).is_file():
            raise TaggerError(f"{project_dir}: missing {required}")
    try:
        project = json.loads((project_dir / "project.json").read_text(encoding="utf-8"))
        return int(project["image_width"]), int(project["image_height"]), str(project["model"])
    except (ValueError, TypeError, KeyError) as error:
        raise TaggerError(f"{project_dir / 'project.json'}: needs image_width, image_height, model ({error})")


def weights_version(model_name: str, model_path: Path) -> str:
    return f"{model_name}-{file_sha256(model_path)[:12]}"


def project_version(project_dir: str | Path) -> str:
    """The version ``DeepDanbooruTagger.load`` would give this project, without loading Keras."""
    project_dir = Path(project_dir)
    _, _, model_name = read_project(project_dir)
    return weights_version(model_name, find_model_file(project_dir, model_name))


def load_keras_model(path: Path, compile: bool = False) -> tuple[Any, str]:
    """The model and the library that loaded it: "keras" (Keras 3) or "tf_keras" (Keras 2 fallback)."""
    import keras

    try:
        return keras.models.load_model(path, compile=compile), "keras"
    except Exception as error:  # Keras 3 raises ValueError/TypeError/KeyError for what it cannot read
        if path.suffix != ".h5":
            raise TaggerError(f"{path}: Keras 3 cannot load it: {error}") from error
        keras3_error = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    try:
        import tf_keras
    except ImportError as error:
        raise TaggerError(
            f"{path}: Keras 3 cannot load this Keras-2 .h5 ({keras3_error}), and tf_keras (Keras 2) "
            f"is not installed; fix: {TF_KERAS_FIX}"
        ) from error
    log.warning(
        "%s: Keras 3 cannot load this Keras-2 .h5 (%s); using tf_keras (Keras 2, TensorFlow) for this model",
        path.name, keras3_error,
    )
    try:
        return tf_keras.models.load_model(path, compile=compile), "tf_keras"
    except Exception as error:
        raise TaggerError(f"{path}: neither Keras 3 ({keras3_error}) nor tf_keras ({error}) can load it") from error


def fit_size(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """The size ``tf.image.resize(preserve_aspect_ratio=True)`` gives: float32 scale, rounded half to even.

    TF would ask for a 0-pixel side (a 1x731 picture into 32x32) and fail; we keep one pixel instead.
    """
    scale = min(np.float32(box_height) / np.float32(height), np.float32(box_width) / np.float32(width))
    new_width = int(np.round(scale * np.float32(width)))
    new_height = int(np.round(scale * np.float32(height)))
    return max(1, new_width), max(1, new_height)


def area_resize_rows(array: np.ndarray, size: int) -> np.ndarray:
    """TF's AREA resize along the first axis, as float64: output row i is the mean of the input over
    [i * s, (i + 1) * s), s = length / size, with partly covered rows weighted by their overlap.

    Right for shrinking and for enlarging (where PIL's BOX filter picks whole pixels instead). Each
    span's whole rows are summed (exactly, in uint32, for uint8 input); then the covered part of the
    row at each edge is moved across that edge.
    """
    length = len(array)
    scale = length / size
    edges = np.arange(size + 1) * scale
    edges[-1] = length  # no rounding past the end
    whole = np.floor(edges).astype(np.intp)
    accumulator = np.uint32 if array.dtype == np.uint8 else np.float64
    spans = zip(whole[:-1], whole[1:])
    sums = np.stack([array[start:stop].sum(axis=0, dtype=accumulator) for start, stop in spans])
    # of row ``whole``, the part before the edge
    covered = (edges - whole).reshape(-1, *[1] * (array.ndim - 1))
    parts = covered * array[np.minimum(whole, length - 1)]
    return (sums + parts[1:] - parts[:-1]) / scale


def centre_rows(array: np.ndarray, size: int) -> np.ndarray:
    """``transform_and_pad_image``'s centring along the first axis: row i samples the input at
    ``i - (size - length) / 2``, bilinear, edge rows repeated (skimage ``mode="edge"``). An odd margin
    puts the picture half a pixel off the grid, so each output row is then the mean of two."""
    length = len(array)
    position = np.arange(size) - (size - length) / 2
    below = np.floor(position)
    weight = (position - below).reshape(-1, *[1] * (array.ndim - 1))
    first = array[np.clip(below, 0, length - 1).astype(np.intp)]
    second = array[np.clip(below + 1, 0, length - 1).astype(np.intp)]
    return (1 - weight) * first + weight * second


def preprocess_image(image: Image.Image, width: int, height: int) -> np.ndarray:
    """(height, width, 3) float32 in 0..1, as DeepDanbooru's ``load_image_for_evaluate`` makes it."""
    pixels = np.asarray(flatten_on_white(image).convert("RGB"), dtype=np.uint8)
    new_width, new_height = fit_size(pixels.shape[1], pixels.shape[0], width, height)
    fitted = area_resize_rows(area_resize_rows(pixels, new_height).swapaxes(0, 1), new_width)
    centred = centre_rows(centre_rows(fitted, width).swapaxes(0, 1), height)  # back to (height, width)
    return (centred / 255.0).astype(np.float32)


@dataclass(eq=False)
class DeepDanbooruTagger:
    """A loaded project; ``predict`` gives each picture's tags at or above their thresholds."""

    model: Any
    tags: tuple[str, ...]
    categories: tuple[Category, ...]
    width: int
    height: int
    version: str  # "<model name>-<first 12 hex of the weights file's sha256>"
    model_path: Path
    loaded_with: str = "keras"  # or "tf_keras"
    threshold: float = 0.5
    category_thresholds: dict[str, float] = field(default_factory=dict)
    _feature_model: Any = field(default=None, repr=False)  # built by the first ``features`` call

    def __post_init__(self) -> None:
        unknown = set(self.category_thresholds) - {category.name for category in self.categories}
        if unknown:
            names = ", ".join(category.name for category in self.categories)
            raise TaggerError(f"category_thresholds names unknown categories {sorted(unknown)}; known: {names}")

    @classmethod
    def load(
        cls,
        project_dir: str | Path,
        *,
        threshold: float = 0.5,
        category_thresholds: dict[str, float] | None = None,
        compile: bool = False,
    ) -> DeepDanbooruTagger:
        """Load a DeepDanbooru project folder as downloaded (see the module docstring)."""
        project_dir = Path(project_dir)
        width, height, model_name = read_project(project_dir)
        tags = tuple(read_tags(project_dir / "tags.txt"))
        if not tags:
            raise TaggerError(f"{project_dir / 'tags.txt'}: no tags")
        categories = read_categories(project_dir, len(tags))
        model_path = find_model_file(project_dir, model_name)
        model, loaded_with = load_keras_model(model_path, compile=compile)
        outputs = tuple(model.output_shape)[-1]
        if outputs != len(tags):
            raise TaggerError(f"{model_path.name} has {outputs} outputs but tags.txt lists {len(tags)} tags")
        input_hw = tuple(model.input_shape)[1:3]
        if None not in input_hw and input_hw != (height, width):
            raise TaggerError(f"{model_path.name} takes {input_hw} pictures; project.json says {(height, width)}")
        return cls(
            model=model, tags=tags, categories=categories, width=width, height=height,
            version=weights_version(model_name, model_path), model_path=model_path,
            loaded_with=loaded_with, threshold=threshold, category_thresholds=dict(category_thresholds or {}),
        )

    def category_of(self, index: int) -> str:
        return next(category.name for category in self.categories if category.start <= index < category.end)

    def thresholds(self) -> np.ndarray:
        """Per-tag threshold: its category's from ``category_thresholds``, else ``threshold``."""
        result = np.full(len(self.tags), self.threshold, dtype=np.float32)
        for category in self.categories:
            if category.name in self.category_thresholds:
                result[category.start:category.end] = self.category_thresholds[category.name]
        return result

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """(height, width, 3) float32 0..1, as the model takes it."""
        return preprocess_image(image, self.width, self.height)

    def predict_scores(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """All scores, (len(images), len(tags)) float32; one model call per batch."""
        return batched_scores(self.model, self.preprocess, images, batch_size, len(self.tags), self._to_numpy)

    def predict(self, images: Sequence[Image.Image], batch_size: int = 32) -> list[dict[str, float]]:
        """Per picture, {tag: score} for the tags at or above their threshold, in tags.txt order."""
        scores = self.predict_scores(images, batch_size=batch_size)
        keep = scores >= self.thresholds()
        return [
            {self.tags[i]: float(row[i]) for i in np.flatnonzero(mask)} for row, mask in zip(scores, keep)
        ]

    def features(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(len(images), D) float32: the penultimate layer (module docstring); one model call per batch."""
        if self._feature_model is None:
            self._feature_model = penultimate_model(self.model, self.loaded_with)
        width = int(self._feature_model.output_shape[-1])
        return batched_scores(self._feature_model, self.preprocess, images, batch_size, width, self._to_numpy)

    def _to_numpy(self, output: Any) -> np.ndarray:
        if self.loaded_with == "keras":
            return to_numpy(output)
        return np.asarray(output.numpy() if hasattr(output, "numpy") else output)


def penultimate_model(model: Any, loaded_with: str = "keras") -> Any:
    """A model from ``model``'s input to what its last layer with weights (the tag head) reads,
    averaged over space when that is a feature map."""
    if loaded_with == "tf_keras":
        import tf_keras as k
    else:
        import keras as k
    head = next((layer for layer in reversed(model.layers) if getattr(layer, "kernel", None) is not None), None)
    if head is None:
        raise TaggerError(f"{model.name}: no layer with weights before the scores; cannot read its features")
    tap = head.input
    if len(tap.shape) == 4:
        tap = k.layers.GlobalAveragePooling2D(name="penultimate_pool")(tap)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a list would make Keras warn per call
    return k.Model(inputs, tap, name=f"{model.name}_penultimate")
