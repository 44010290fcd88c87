"""Danbooru-style tagging with a user-supplied WD14 tagger (SmilingWolf's wd-v1-4-* and wd-*-v3).

Such a tagger is a folder holding ``model.onnx`` and ``selected_tags.csv`` (columns tag_id, name,
category, count; one row per model output, in output order; category 9 = rating, 0 = general,
4 = character), run here with onnxruntime: the CUDA provider first when this onnxruntime has it,
else the CPU one. ``TAGGER_PROJECT`` may name the folder or the ``.onnx`` file beside the CSV.

Preprocessing is SmilingWolf's own (his wd-tagger space): transparency composited on white, padded
to a square with white (centred), resized to the model's input size (read from the ONNX input,
usually 448) with PIL's bicubic filter, channels in **BGR** order, float32 values 0..255, not
normalised, NHWC. The model's outputs are already sigmoid scores.

Tags are kept per category: general at 0.35 and character at 0.85 by default (the space's
defaults), overridable in ``category_thresholds`` by category name in any case; of the rating
tags only the best one is kept, whatever its score, as the WD14 tools do.

``features`` gives the penultimate layer instead (the labelling loop's linear model reads pictures
through it, models/label_features.py): the tensor the last dense layer (MatMul or Gemm) or 1x1 conv
head reads, found by walking back from the output through the sigmoid, bias and reshapes, added as a
second output of a copy of the graph (``onnx``), pooled over space when it is a feature map.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from models.imaging import flatten_on_white
from models.inference import batched_scores, dimension, file_sha256, onnx_providers
from models.tagger import TaggerError

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
WHITE = (255, 255, 255)
# Danbooru's category numbers, and 9 that the WD14 CSVs give the rating tags
CATEGORY_NAMES = {0: "General", 1: "Artist", 3: "Copyright", 4: "Character", 5: "Meta", 9: "Rating"}
RATING = "Rating"
DEFAULT_THRESHOLDS = {"General": 0.35, "Character": 0.85}


def wd14_files(path: str | Path) -> tuple[Path, Path] | None:
    """(model.onnx, selected_tags.csv) when ``path`` is a WD14 tagger, else None (DeepDanbooru).

    A ``.onnx`` file, or a folder holding ``model.onnx`` or ``selected_tags.csv`` but no
    ``project.json``, is a WD14 tagger; a missing half is then reported by ``WD14Tagger.load``.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return path, path.parent / TAGS_FILE
    if path.is_dir() and not (path / "project.json").exists():
        if (path / MODEL_FILE).exists() or (path / TAGS_FILE).exists():
            return path / MODEL_FILE, path / TAGS_FILE
    return None


def read_selected_tags(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tag names, category names), one per row of ``selected_tags.csv``, in output order."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise TaggerError(f"{path}: cannot be read ({error})") from error
    if not rows:
        raise TaggerError(f"{path}: no tag rows")
    missing = {"name", "category"} - set(rows[0])
    if missing:
        raise TaggerError(f"{path}: missing column(s) {', '.join(sorted(missing))} (expected tag_id,name,category,count)")
    names, categories = [], []
    for line, row in enumerate(rows, start=2):
        try:
            number = int(row["category"])
        except (TypeError, ValueError):
            raise TaggerError(f"{path}, line {line}: category {row['category']!r} is not a number") from None
        if number not in CATEGORY_NAMES or not (row["name"] or "").strip():
            raise TaggerError(f"{path}, line {line}: empty name or unknown category {number} "
                              f"(known: {', '.join(f'{k}={v}' for k, v in CATEGORY_NAMES.items())})")
        names.append(row["name"].strip())
        categories.append(CATEGORY_NAMES[number])
    return tuple(names), tuple(categories)


def wd14_version(model_path: Path, tags_path: Path) -> str:
    """"wd14-" and 12 hex of a sha256 over both files: new weights or a new tag list re-run the stage."""
    digest = hashlib.sha256(f"{file_sha256(model_path)}:{file_sha256(tags_path)}".encode()).hexdigest()
    return f"wd14-{digest[:12]}"


def wd14_project_version(path: str | Path) -> str:
    """The version ``WD14Tagger.load`` would give, without loading the model."""
    model_path, tags_path = existing_files(path)
    return wd14_version(model_path, tags_path)


def existing_files(path: str | Path) -> tuple[Path, Path]:
    files = wd14_files(path)
    if files is None:
        raise TaggerError(f"{path}: not a WD14 tagger (expected {MODEL_FILE} and {TAGS_FILE})")
    for required in files:
        if not required.is_file():
            raise TaggerError(f"{path}: missing {required.name} (a WD14 tagger is {MODEL_FILE} + {TAGS_FILE})")
    return files


def preprocess_image(image: Image.Image, width: int, height: int) -> np.ndarray:
    """(height, width, 3) float32 0..255 BGR: on white, padded square with white, bicubic resize."""
    rgb = flatten_on_white(image).convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), WHITE)
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    if square.size != (width, height):
        square = square.resize((width, height), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(square, dtype=np.float32)[:, :, ::-1])


@dataclass(eq=False)
class WD14Tagger:
    """A loaded WD14 tagger; ``predict`` gives each picture's kept tags, as ``DeepDanbooruTagger`` does."""

    session: Any  # onnxruntime.InferenceSession
    tags: tuple[str, ...]
    tag_categories: tuple[str, ...]  # per tag: General, Character, Rating, ...
    width: int
    height: int
    version: str
    model_path: Path
    fixed_batch: int | None = None  # the model's batch dimension when it is not dynamic
    threshold: float = 0.5  # for categories with no WD14 default (artist, copyright, meta)
    category_thresholds: dict[str, float] = field(default_factory=dict)
    _penultimate: Any = field(default=None, repr=False)  # (session, output name, pooled) once ``features`` ran

    def __post_init__(self) -> None:
        present = set(self.tag_categories) - {RATING}
        by_lower = {name.lower(): name for name in present}
        chosen = {name: value for name, value in DEFAULT_THRESHOLDS.items() if name in present}
        for name, value in self.category_thresholds.items():
            if name.lower() == RATING.lower():
                raise TaggerError("category_thresholds: WD14 rating tags take no threshold (the best one is kept)")
            if name.lower() not in by_lower:
                raise TaggerError(f"category_thresholds names unknown category {name!r}; "
                                  f"known: {', '.join(sorted(present))} (any case)")
            chosen[by_lower[name.lower()]] = float(value)
        self.category_thresholds = chosen
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        threshold: float = 0.5,
        category_thresholds: dict[str, float] | None = None,
        providers: Sequence[str] | None = None,
    ) -> WD14Tagger:
        """Load ``model.onnx`` + ``selected_tags.csv`` (a folder, or the ``.onnx`` file beside the CSV)."""
        import onnxruntime

        model_path, tags_path = existing_files(path)
        tags, categories = read_selected_tags(tags_path)
        try:
            session = onnxruntime.InferenceSession(str(model_path), providers=list(providers or onnx_providers()))
        except Exception as error:  # onnxruntime raises its own Fail / InvalidProtobuf / RuntimeError
            raise TaggerError(f"{model_path}: onnxruntime cannot load it: {error}") from error
        inputs, outputs = session.get_inputs(), session.get_outputs()
        shape = list(inputs[0].shape)
        if len(inputs) != 1 or len(shape) != 4 or shape[3] != 3 or inputs[0].type != "tensor(float)":
            raise TaggerError(f"{model_path}: expected one float32 NHWC input (batch, height, width, 3), "
                              f"got {[(i.name, i.shape, i.type) for i in inputs]}")
        height, width = dimension(shape[1]), dimension(shape[2])
        if height is None or width is None:
            raise TaggerError(f"{model_path}: the input's height and width must be fixed, got {shape}")
        output_count = dimension(list(outputs[0].shape)[-1])
        if output_count is not None and output_count != len(tags):
            raise TaggerError(f"{model_path.name} has {output_count} outputs but {tags_path} lists {len(tags)} tags")
        tagger = cls(
            session=session, tags=tags, tag_categories=categories, width=width, height=height,
            version=wd14_version(model_path, tags_path), model_path=model_path,
            fixed_batch=dimension(shape[0]), threshold=threshold,
            category_thresholds=dict(category_thresholds or {}),
        )
        log.info("WD14 tagger %s: %d tags, %dx%d input, on %s", tagger.version, len(tags), width, height,
                 session.get_providers()[0])
        return tagger

    def category_of(self, index: int) -> str:
        return self.tag_categories[index]

    def thresholds(self) -> np.ndarray:
        """Per-tag threshold: its category's, else ``threshold``; rating tags are chosen apart (inf here)."""
        values = [np.inf if c == RATING else self.category_thresholds.get(c, self.threshold) for c in self.tag_categories]
        return np.asarray(values, dtype=np.float32)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return preprocess_image(image, self.width, self.height)

    def predict_scores(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(len(images), len(tags)) float32; one model call per batch (per picture for a batch-1 model)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        return batched_scores(self._run, self.preprocess, images, self.fixed_batch or batch_size, len(self.tags),
                              np.asarray)

    def _run(self, batch: np.ndarray, training: bool = False) -> np.ndarray:
        """The scores of one batch (``_filled_run``), checked against the tag list."""
        scores = self._filled_run(self.session, None, batch)
        if scores.ndim != 2 or scores.shape[1] != len(self.tags):
            raise TaggerError(f"{self.model_path.name} gave scores of shape {scores.shape}; "
                              f"{TAGS_FILE} lists {len(self.tags)} tags")
        return scores

    def _filled_run(self, session: Any, outputs: list[str] | None, batch: np.ndarray) -> np.ndarray:
        """One ``session.run``'s first output: a model with a fixed batch > 1 gets the batch filled up,
        the extra rows dropped."""
        count = len(batch)
        if self.fixed_batch and count < self.fixed_batch:
            batch = np.concatenate([batch, np.repeat(batch[-1:], self.fixed_batch - count, axis=0)])
        return np.asarray(session.run(outputs, {self.input_name: batch})[0], dtype=np.float32)[:count]

    def features(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(len(images), D) float32: the penultimate layer (module docstring), one run per batch."""
        if self._penultimate is None:
            self._penultimate = penultimate_session(self.model_path)
        session, name, pooled = self._penultimate

        def run(batch: np.ndarray, training: bool = False) -> np.ndarray:
            out = self._filled_run(session, [name], batch)
            return out.mean(axis=(2, 3)) if pooled and out.ndim == 4 else out.reshape(len(out), -1)

        return batched_scores(run, self.preprocess, images, self.fixed_batch or batch_size, 0, np.asarray)

    def predict(self, images: Sequence[Image.Image], batch_size: int = 32) -> list[dict[str, float]]:
        """Per picture, {tag: score}: the best rating tag, then the others at or above their threshold."""
        scores = self.predict_scores(images, batch_size=batch_size)
        keep = scores >= self.thresholds()
        ratings = np.flatnonzero(np.asarray(self.tag_categories) == RATING)
        if len(ratings):
            best = ratings[np.argmax(scores[:, ratings], axis=1)]
            keep[np.arange(len(scores)), best] = True
        return [{self.tags[i]: float(row[i]) for i in np.flatnonzero(mask)} for row, mask in zip(scores, keep)]


# walking back from the scores to the last dense layer passes these (they keep the features' meaning)
PASS_THROUGH = {"Sigmoid", "Add", "Identity", "Flatten", "Reshape", "Squeeze", "Cast", "GlobalAveragePool",
                "ReduceMean"}


def penultimate_output(model_path: Path) -> tuple[Any, str, bool]:
    """(the model with its penultimate tensor as a second output, that tensor's name, whether it is a
    feature map to pool): the input of the MatMul / Gemm / Conv that makes the scores."""
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    name = graph.output[0].name
    for _ in range(32):
        node = producers.get(name)
        if node is None or node.op_type not in PASS_THROUGH | {"MatMul", "Gemm", "Conv"}:
            break
        if node.op_type in ("MatMul", "Gemm", "Conv"):
            feature = node.input[0]
            if feature not in {output.name for output in graph.output}:
                graph.output.append(onnx.helper.make_tensor_value_info(feature, onnx.TensorProto.FLOAT, None))
            return model, feature, node.op_type == "Conv"
        computed = [i for i in node.input if i in producers]  # not a weight, a bias or the graph's input
        if not computed:
            break
        name = computed[0]
    stopped = producers[name].op_type if name in producers else name
    raise TaggerError(f"{model_path}: no dense layer or 1x1 conv found before the scores (stopped at {stopped!r}); "
                      "cannot read its features")


def penultimate_session(model_path: Path) -> tuple[Any, str, bool]:
    """An onnxruntime session of ``penultimate_output``'s model: (session, feature name, pooled)."""
    import onnxruntime

    model, name, pooled = penultimate_output(model_path)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=onnx_providers())
    return session, name, pooled
