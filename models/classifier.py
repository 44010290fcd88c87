"""A small character classifier ("Mona or not"), trained on the folders a curated crawl produces.

Users sort pictures into one folder per class (``mona/``, ``other/``, ...) and want a model they
can train on a laptop CPU in minutes, ship as one file with a card saying what it was trained on,
and run under either Keras backend. So:

* Training data is read whole into memory (uint8, ``image_size`` square), which suits the few
  thousand pictures such folders hold; pictures Pillow cannot read are skipped with a warning.
* The train/validation split hashes each file's path relative to the data folder, so it does not
  depend on listing order or seeds, and adding pictures never moves the others. A class the hash
  left without a validation picture gets its lowest-hash picture moved to validation.
* The model takes float32 pixels 0..255 (RGB composited on white, padded to a square on white,
  resized): rescaling and the augmentation layers (flip, rotation, zoom; active only in training)
  are inside the model, so callers need no preprocessing constants and the ``.keras`` file is
  self-contained. From scratch it is a small CNN (Conv-BN-ReLU-Pool blocks, global average
  pooling, dropout, softmax). With ``backbone`` it is a frozen ``keras.applications`` network
  with ImageNet weights under a new head; where the weights cannot be downloaded (offline) it
  logs one line and trains the from-scratch CNN instead.
* Classes are weighted inversely to their size (crawls give far more "other" than "mona").
* The *target* class is the first class folder not named other/others/negative. ``threshold``
  applies to it: a picture is labelled target when the target's score reaches the threshold, else
  the best-scoring other class. With two classes and 0.5 this is plain argmax.

Works under both Keras backends (TensorFlow, torch); ``KERAS_BACKEND`` must be set before Keras is
first imported. Keras, TensorFlow and matplotlib are imported only when needed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from core.errors import ProjectError
from core.progress import progress_bar
from models import training
from models.imaging import flatten_on_white
from models.inference import batched_scores, file_sha256, to_numpy
from models.training import split_value

log = logging.getLogger("models.classifier")

MODEL_NAME = "classifier.keras"
CARD_NAME = "classifier.json"
CARD_FORMAT = "anime-art-datasets/character-classifier"
NEGATIVE_NAMES = ("other", "others", "negative")
VAL_SHARE = 0.2
WHITE = (255, 255, 255)

# How each supported keras.applications backbone wants its 0..255 RGB input:
# "tf" = -1..1, "torch" = ImageNet mean/std, "raw" = 0..255 (the network rescales itself).
# Caffe-style networks (ResNet50, VGG16, ...) want BGR mean subtraction and are not offered.
BACKBONE_MODES = {
    **{name: "tf" for name in (
        "MobileNet", "MobileNetV2", "Xception", "InceptionV3", "InceptionResNetV2",
        "ResNet50V2", "ResNet101V2", "ResNet152V2", "NASNetMobile", "NASNetLarge",
    )},
    **{name: "torch" for name in ("DenseNet121", "DenseNet169", "DenseNet201")},
    **{name: "raw" for name in (
        "MobileNetV3Small", "MobileNetV3Large",
        *(f"EfficientNetB{i}" for i in range(8)),
        *(f"EfficientNetV2{v}" for v in ("B0", "B1", "B2", "B3", "S", "M", "L")),
        *(f"ConvNeXt{v}" for v in ("Tiny", "Small", "Base", "Large", "XLarge")),
    )},
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassifierError(ProjectError, RuntimeError):
    """The data folder or the model/card pair is unusable."""


# --------------------------------------------------------------------------- data


def load_image(path: Path) -> Image.Image:
    """The picture at ``path``, decoded, EXIF orientation applied."""
    with Image.open(path) as image:
        image.load()
        return ImageOps.exif_transpose(image)


def preprocess_image(image: Image.Image, image_size: int) -> np.ndarray:
    """(size, size, 3) float32 0..255: RGB on white, padded to a square on white, resized.

    Not scaled to 0..1: the model starts with its own Rescaling layer.
    """
    rgb = flatten_on_white(image)
    if rgb.mode != "RGB":
        rgb = rgb.convert("RGB")
    square = ImageOps.pad(rgb, (image_size, image_size), method=Image.Resampling.BILINEAR, color=WHITE)
    return np.asarray(square, dtype=np.float32)


def target_class(classes: Sequence[str]) -> str:
    """The first class not named other/others/negative, else the first class."""
    return next((name for name in classes if name.lower() not in NEGATIVE_NAMES), classes[0])


def list_labelled(data_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Class names (sorted sub-folders) and (relative posix path, class) for each file, sorted."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ClassifierError(f"{data_dir}: not a folder")
    classes = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = []
    for name in classes:
        for path in sorted((data_dir / name).rglob("*")):
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(data_dir).parts):
                files.append((path.relative_to(data_dir).as_posix(), name))
    return classes, files


def split_files(files: Sequence[tuple[str, str]], val_share: float = VAL_SHARE) -> tuple[list[int], list[int]]:
    """Indexes of ``files`` (relative path, class) for training and validation.

    A file goes to validation when its ``split_value`` is below ``val_share``. A class with at
    least two files and none in validation gets its lowest-value file moved there.
    """
    val = {i for i, (rel, _) in enumerate(files) if split_value(rel) < val_share}
    by_class: dict[str, list[int]] = {}
    for i, (_, name) in enumerate(files):
        by_class.setdefault(name, []).append(i)
    for indexes in by_class.values():
        if len(indexes) >= 2 and not val.intersection(indexes):
            val.add(min(indexes, key=lambda i: split_value(files[i][0])))
        if indexes and set(indexes) <= val:  # keep one training picture per class
            val.discard(max(indexes, key=lambda i: split_value(files[i][0])))
    train = [i for i in range(len(files)) if i not in val]
    return train, sorted(val)


def data_hash(data_dir: Path, relative_paths: Iterable[str]) -> str:
    """sha256 over the sorted relative paths and file sizes (models/training.py)."""
    return training.data_hash((rel, (Path(data_dir) / rel).stat().st_size) for rel in sorted(relative_paths))


def read_dataset(
    data_dir: Path, files: Sequence[tuple[str, str]], classes: Sequence[str], image_size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """uint8 pixels, class indexes and the indexes of ``files`` that could be read."""
    pixels, labels, kept = [], [], []
    bar = progress_bar("reading", len(files), progress)
    for i, (rel, name) in enumerate(files):
        try:
            image = load_image(Path(data_dir) / rel)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            log.warning("%s: skipped, not a readable picture (%s)", rel, error)
        else:
            pixels.append(preprocess_image(image, image_size).astype(np.uint8))
            labels.append(classes.index(name))
            kept.append(i)
        bar.update(1)
    bar.close()
    shape = (len(pixels), image_size, image_size, 3)
    return (np.stack(pixels) if pixels else np.zeros(shape, np.uint8)), np.array(labels, dtype=np.int64), kept


# --------------------------------------------------------------------------- decisions and metrics


def decide(scores: np.ndarray, target_index: int, threshold: float) -> np.ndarray:
    """Class index per row: the target when its score reaches ``threshold``, else the best other class."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[1] == 1:
        return np.zeros(len(scores), dtype=np.int64)
    others = scores.copy()
    others[:, target_index] = -np.inf
    return np.where(scores[:, target_index] >= threshold, target_index, others.argmax(axis=1)).astype(np.int64)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, class_count: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    matrix = np.zeros((class_count, class_count), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall and support per class (0.0 where undefined)."""
    result = {}
    for i, name in enumerate(classes):
        predicted, actual = matrix[:, i].sum(), matrix[i, :].sum()
        result[name] = {
            "precision": float(matrix[i, i] / predicted) if predicted else 0.0,
            "recall": float(matrix[i, i] / actual) if actual else 0.0,
            "support": int(actual),
        }
    return result


# --------------------------------------------------------------------------- model


def build_cnn(keras: Any, inputs: Any, class_count: int) -> Any:
    """Rescaling, four Conv-BN-ReLU-MaxPool blocks, global average pooling, dropout, softmax."""
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for block, filters in enumerate((32, 64, 128, 256)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        x = keras.layers.ReLU(name=f"relu{block}")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{block}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    return keras.layers.Dense(class_count, activation="softmax", name="scores")(x)


def build_backbone(keras: Any, inputs: Any, class_count: int, name: str, image_size: int) -> Any:
    """A frozen ImageNet ``keras.applications`` network under a new softmax head.

    Raises whatever the constructor raises (a download failure included).
    """
    constructor = getattr(keras.applications, name)
    base = constructor(include_top=False, weights="imagenet", input_shape=(image_size, image_size, 3))
    base.trainable = False
    mode = BACKBONE_MODES[name]
    x = inputs
    if mode == "tf":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(x)
    elif mode == "torch":
        x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
        x = keras.layers.Normalization(
            mean=list(IMAGENET_MEAN), variance=[s * s for s in IMAGENET_STD], name="imagenet_norm"
        )(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    return keras.layers.Dense(class_count, activation="softmax", name="scores")(x)


def is_weights_unavailable(error: BaseException) -> bool:
    """A failed or corrupted weights download (not a bad argument such as a too-small input)."""
    if isinstance(error, (ValueError, TypeError)):
        return "corrupted" in str(error).lower()
    return True


def build_model(classes: Sequence[str], image_size: int, backbone: str | None) -> tuple[Any, str | None]:
    """The model (inputs float32 0..255) and the backbone actually used (None: from-scratch CNN)."""
    import keras

    if backbone is not None and backbone not in BACKBONE_MODES:
        raise ValueError(f"unsupported backbone {backbone!r}; choose one of: {', '.join(sorted(BACKBONE_MODES))}")
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = keras.layers.RandomFlip("horizontal", name="aug_flip")(inputs)
    x = keras.layers.RandomRotation(0.05, fill_mode="nearest", name="aug_rotate")(x)
    x = keras.layers.RandomZoom(0.1, fill_mode="nearest", name="aug_zoom")(x)
    outputs = None
    if backbone is not None:
        try:
            outputs = build_backbone(keras, x, len(classes), backbone, image_size)
        except Exception as error:  # noqa: BLE001 - keras.utils.get_file raises a bare Exception
            if not is_weights_unavailable(error):
                raise
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            log.warning(
                "backbone %s: ImageNet weights unavailable (%s); training the from-scratch CNN instead",
                backbone, reason,
            )
            backbone = None
    if outputs is None:
        outputs = build_cnn(keras, x, len(classes))
    return keras.Model(inputs, outputs, name="character_classifier"), backbone


# --------------------------------------------------------------------------- plots


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """Accuracy and loss per epoch, training and validation."""
    panels = []
    for metric in ("accuracy", "loss"):
        train_values, val_values = history.get(metric, []), history.get(f"val_{metric}", [])
        panels.append(training.Panel(metric, [
            training.Line(range(1, len(train_values) + 1), train_values, "train", {"marker": "o"}),
            training.Line(range(1, len(val_values) + 1), val_values, "validation", {"marker": "o"}),
        ], legend=True))
    training.plot_panels(path, panels)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path) -> None:
    """The validation confusion matrix with counts."""
    from matplotlib.figure import Figure

    size = 2.5 + 0.6 * len(classes)
    figure = Figure(figsize=(size, size), dpi=100)
    axis = figure.subplots()
    axis.imshow(matrix, cmap="Blues")
    ticks = range(len(classes))
    axis.set_xticks(ticks, list(classes), rotation=45, ha="right")
    axis.set_yticks(ticks, list(classes))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("validation")
    peak = matrix.max() if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axis.text(col, row, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    figure.tight_layout()
    figure.savefig(path)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    card_path: Path
    card: dict[str, Any]


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    image_size: int = 96,
    epochs: int = 30,
    batch_size: int = 32,
    seed: int = 1337,
    patience: int = 5,
    backbone: str | None = None,
    threshold: float = 0.5,
    progress: bool = True,
) -> TrainResult:
    """Train on ``data_dir`` (one sub-folder per class); write model, card and plots to ``out_dir``.

    Sets Keras's global random seed (Python, NumPy and backend generators) to ``seed``.
    """
    import keras

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    data = _read_split(data_dir, image_size, progress)
    classes = data.classes
    keras.utils.set_random_seed(seed)
    model, used_backbone = build_model(classes, image_size, backbone)
    history, class_weight, seconds = _fit(model, data, epochs, batch_size, patience, progress)
    target = target_class(classes)
    metrics, matrix = _measure(model, data, batch_size, target, threshold)

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path, card_path = out_dir / MODEL_NAME, out_dir / CARD_NAME
    model.save(model_path)
    val_losses = history.get("val_loss", [])
    card = {
        "format": CARD_FORMAT,
        "format_version": 1,
        "model_file": MODEL_NAME,
        "classes": list(classes),
        "target": target,
        "image_size": image_size,
        "threshold": threshold,
        "input": "float32 RGB 0..255, transparency on white, padded to a square on white, resized",
        "backbone": used_backbone,
        "backbone_requested": backbone,
        "metrics": metrics,
        "data": data.card_section(data_dir),
        "training": {
            "epochs_requested": epochs,
            "epochs_run": len(history.get("loss", [])),
            "best_epoch": int(np.argmin(val_losses)) + 1 if val_losses else None,
            "batch_size": batch_size,
            "patience": patience,
            "seed": seed,
            "class_weight": {classes[i]: w for i, w in class_weight.items()},
            "seconds": round(seconds, 2),
        },
        "created": training.created_now(),
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "model_sha256": file_sha256(model_path),
    }
    training.write_card(card_path, card)
    confusion = {"classes": list(classes), "rows": "true", "columns": "predicted", "matrix": matrix.tolist()}
    training.write_card(out_dir / "confusion.json", confusion)
    plot_history(history, out_dir / "history.png")
    plot_confusion(matrix, classes, out_dir / "confusion.png")
    return TrainResult(model_path=model_path, card_path=card_path, card=card)


@dataclass
class _LabelledSplit:
    """The labelled pictures, read into memory and split into training and validation."""

    classes: list[str]
    files: list[tuple[str, str]]  # (relative path, class) of each picture that could be read
    counts: dict[str, int]  # pictures per class
    train_idx: list[int]
    val_idx: list[int]
    x_train: np.ndarray  # uint8 pixels
    y_train: np.ndarray  # class indexes
    x_val: np.ndarray
    y_val: np.ndarray

    def card_section(self, data_dir: Path) -> dict[str, Any]:
        """The card's ``data``: which pictures, how many of each class, how they were split."""
        return {
            "sha256": data_hash(data_dir, [rel for rel, _ in self.files]),
            "images": len(self.files),
            "per_class": self.counts,
            "train": len(self.train_idx),
            "val": len(self.val_idx),
            "val_share": VAL_SHARE,
        }


def _read_split(data_dir: Path, image_size: int, progress: bool) -> _LabelledSplit:
    """Read and split the class folders; refuse fewer than two classes, or a class with fewer than two
    readable pictures (the split needs one on each side)."""
    classes, files = list_labelled(data_dir)
    if len(classes) < 2:
        raise ClassifierError(f"{data_dir}: needs at least two class sub-folders, found {classes}")
    pixels, labels, kept = read_dataset(data_dir, files, classes, image_size, progress)
    files = [files[i] for i in kept]
    counts = {name: int((labels == i).sum()) for i, name in enumerate(classes)}
    if min(counts.values()) < 2:
        raise ClassifierError(f"{data_dir}: every class needs at least two readable pictures, found {counts}")
    train_idx, val_idx = split_files(files)
    return _LabelledSplit(classes, files, counts, train_idx, val_idx,
                          pixels[train_idx], labels[train_idx], pixels[val_idx], labels[val_idx])


def _fit(model: Any, data: _LabelledSplit, epochs: int, batch_size: int, patience: int,
         progress: bool) -> tuple[dict[str, list[float]], dict[int, float], float]:
    """Fit with classes weighted inversely to their size, stopping when the validation loss has not
    improved for ``patience`` epochs (keeping the best weights); the history, weights and seconds."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    train_counts = np.bincount(data.y_train, minlength=len(data.classes))
    class_weight = {i: float(len(data.y_train) / (len(data.classes) * n)) for i, n in enumerate(train_counts) if n}
    started = time.monotonic()
    history = model.fit(
        data.x_train.astype(np.float32), data.y_train,
        validation_data=(data.x_val.astype(np.float32), data.y_val),
        epochs=epochs, batch_size=batch_size, shuffle=True, class_weight=class_weight,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)],
        verbose=1 if progress else 0,
    ).history
    return history, class_weight, time.monotonic() - started


def _measure(model: Any, data: _LabelledSplit, batch_size: int, target: str,
             threshold: float) -> tuple[dict[str, Any], np.ndarray]:
    """The card's metrics (loss and accuracy on both sides of the split, precision and recall per class
    on validation at ``threshold``) and the validation confusion matrix."""
    classes = data.classes
    x_train, x_val = data.x_train.astype(np.float32), data.x_val.astype(np.float32)
    train_eval = model.evaluate(x_train, data.y_train, batch_size=batch_size, verbose=0, return_dict=True)
    val_eval = model.evaluate(x_val, data.y_val, batch_size=batch_size, verbose=0, return_dict=True)
    val_scores = batched_scores(model, lambda row: row.astype(np.float32), data.x_val, batch_size, len(classes), to_numpy)
    matrix = confusion_matrix(data.y_val, decide(val_scores, classes.index(target), threshold), len(classes))
    metrics = {
        "train_accuracy": float(train_eval["accuracy"]),
        "train_loss": float(train_eval["loss"]),
        "val_accuracy": float(val_eval["accuracy"]),
        "val_loss": float(val_eval["loss"]),
        "val_per_class": per_class_metrics(matrix, classes),
    }
    return metrics, matrix


# --------------------------------------------------------------------------- inference


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float  # the label's score
    target_score: float  # the target class's score
    scores: dict[str, float]


def model_version(model_path: str | Path) -> str:
    """The classifier's version, from its weights alone: known without loading Keras."""
    return f"classifier-{file_sha256(Path(model_path))[:12]}"


@dataclass(frozen=True)
class CharacterClassifier:
    model: Any  # called as model(batch, training=False)
    classes: tuple[str, ...]
    target: str
    image_size: int
    threshold: float
    version: str
    card: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, model_path: str | Path, threshold: float | None = None) -> CharacterClassifier:
        """The ``.keras`` model (not compiled) and its card (same stem, ``.json``)."""
        import keras

        model_path = Path(model_path)
        card_path = model_path.with_suffix(".json")
        for path in (model_path, card_path):
            if not path.is_file():
                raise ClassifierError(f"{path}: missing")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        try:
            classes = tuple(card["classes"])
            image_size = int(card["image_size"])
        except (KeyError, TypeError, ValueError) as error:
            raise ClassifierError(f"{card_path}: not a classifier card ({error})") from error
        try:
            model = keras.models.load_model(model_path, compile=False)
        except (OSError, ValueError) as error:  # not a Keras file, or a truncated one
            raise ClassifierError(f"{model_path}: not a Keras model ({error})") from error
        outputs = model.outputs[0].shape[-1]
        if outputs != len(classes):
            raise ClassifierError(f"{model_path}: {outputs} outputs but the card lists {len(classes)} classes")
        return cls(
            model=model,
            classes=classes,
            target=str(card.get("target") or target_class(classes)),
            image_size=image_size,
            threshold=float(card.get("threshold", 0.5) if threshold is None else threshold),
            version=model_version(model_path),
            card=card,
        )

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """(size, size, 3) float32 0..255 (the model rescales itself), RGB on white, square-padded."""
        return preprocess_image(image, self.image_size)

    def predict_scores(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(len(images), len(classes)) float32 scores; one model call per batch."""
        return batched_scores(self.model, self.preprocess, images, batch_size, len(self.classes), to_numpy)

    def labels_for(self, scores: np.ndarray) -> np.ndarray:
        """Class index per row of scores (see ``decide``)."""
        return decide(scores, self.classes.index(self.target), self.threshold)

    def predict(self, images: Sequence[Image.Image], batch_size: int = 32) -> list[Prediction]:
        """One Prediction per picture, in input order."""
        scores = self.predict_scores(images, batch_size=batch_size)
        target_index = self.classes.index(self.target)
        return [
            Prediction(
                label=self.classes[label],
                confidence=float(row[label]),
                target_score=float(row[target_index]),
                scores={name: float(score) for name, score in zip(self.classes, row)},
            )
            for row, label in zip(scores, self.labels_for(scores))
        ]


def iter_batches(paths: Sequence[Path], batch_size: int) -> Iterator[tuple[list[Path], list[Image.Image]]]:
    """Readable pictures in batches (unreadable ones are logged and left out)."""
    for start in range(0, len(paths), batch_size):
        kept, images = [], []
        for path in paths[start:start + batch_size]:
            try:
                images.append(load_image(path))
                kept.append(path)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                log.warning("%s: skipped, not a readable picture (%s)", path, error)
        yield kept, images


def evaluate(model_path: str | Path, data_dir: str | Path, *, batch_size: int = 32, progress: bool = False) -> dict[str, Any]:
    """Accuracy, per-class precision/recall and confusion matrix over every picture in ``data_dir``.

    Sub-folders that are not classes of the model are ignored with a warning.
    """
    classifier = CharacterClassifier.load(model_path)
    data_dir = Path(data_dir)
    folders, files = list_labelled(data_dir)
    unknown = [name for name in folders if name not in classifier.classes]
    if unknown:
        log.warning("%s: ignoring folders that are not classes of the model: %s", data_dir, ", ".join(unknown))
    files = [(rel, name) for rel, name in files if name in classifier.classes]
    if not files:
        raise ClassifierError(f"{data_dir}: no pictures in folders named after the classes {classifier.classes}")
    label_of = dict(files)
    true: list[int] = []
    predicted: list[int] = []
    bar = progress_bar("evaluating", len(files), progress)
    for kept, images in iter_batches([data_dir / rel for rel, _ in files], batch_size):
        if images:
            scores = classifier.predict_scores(images, batch_size=batch_size)
            predicted.extend(classifier.labels_for(scores).tolist())
            true.extend(classifier.classes.index(label_of[p.relative_to(data_dir).as_posix()]) for p in kept)
        bar.update(batch_size)
    bar.close()
    matrix = confusion_matrix(np.array(true), np.array(predicted), len(classifier.classes))
    return {
        "model": classifier.version,
        "images": len(true),
        "classes": list(classifier.classes),
        "accuracy": float(np.trace(matrix) / matrix.sum()) if matrix.sum() else 0.0,
        "per_class": per_class_metrics(matrix, classifier.classes),
        "confusion": matrix.tolist(),  # rows: true class, columns: predicted class
    }


# --------------------------------------------------------------------------- command line


def expand_paths(arguments: Iterable[str]) -> list[Path]:
    """Files as given; folders expanded to their files (recursively, sorted, hidden ones left out)."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            paths.extend(
                p for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            paths.append(path)
    return paths
