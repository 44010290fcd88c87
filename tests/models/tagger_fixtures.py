"""Tiny DeepDanbooru project folders for the tagger tests, with hand-set, predictable weights.

The model has DeepDanbooru's output head (1x1 conv to the tags without bias, global average
pooling, sigmoid) after a 1x1 conv that passes R, G, B through and adds a constant-1 channel. So
tag t's score is exactly ``sigmoid(w_t . mean_rgb + b_t)`` over the preprocessed picture, and
``expected_scores`` computes it in numpy. ``deepdanbooru_preprocess`` is DeepDanbooru's own
preprocessing, rebuilt from TF ops, to compare the tagger's against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MODEL_NAME = "resnet_custom_v3"
SYSTEM_TAGS = ("rating:safe", "rating:questionable", "rating:explicit")
GENERAL = ("red", "green", "blue")
CHARACTER = ("char_red", "char_blue")

# tag -> (weights on the mean R, G, B in 0..1, bias); unknown tags get a weak red-minus-blue weight
SCORING: dict[str, tuple[tuple[float, float, float], float]] = {
    "red": ((10.0, 0.0, 0.0), -4.0),  # R=1: 0.998, R=0.5: 0.73, R=0: 0.018
    "green": ((0.0, 10.0, 0.0), -4.0),
    "blue": ((0.0, 0.0, 10.0), -4.0),
    "char_red": ((6.0, 0.0, 0.0), -1.8),  # R=1: 0.985, R=0.5: 0.77, R=0: 0.14
    "char_blue": ((0.0, 0.0, 6.0), -1.8),
    "rating:safe": ((0.0, 0.0, 0.0), 2.0),  # 0.88 always
    "rating:questionable": ((0.0, 0.0, 0.0), -1.0),  # 0.27 always
    "rating:explicit": ((0.0, 0.0, 0.0), -3.0),  # 0.047 always
}

# DeepDanbooru's DEFAULT_PROJECT_CONTEXT (ml-notes §1.1), sizes and model name overridden
DEFAULT_PROJECT = {
    "image_width": 299, "image_height": 299, "database_path": None, "minimum_tag_count": 20,
    "model": "resnet_custom_v2", "minibatch_size": 32, "epoch_count": 10, "export_model_per_epoch": 10,
    "checkpoint_frequency_mb": 200, "console_logging_frequency_mb": 10, "loss": "binary_crossentropy",
    "optimizer": "adam", "learning_rate": 0.001, "rotation_range": [0.0, 360.0], "scale_range": [0.9, 1.1],
    "shift_range": [-0.1, 0.1], "mixed_precision": False,
}


def head_weights(tags: list[str], scale: float = 1.0) -> tuple[list[np.ndarray], np.ndarray]:
    """(first conv kernel, bias) and the 1x1 head kernel (4, len(tags))."""
    kernel = np.zeros((1, 1, 3, 4), dtype=np.float32)
    for channel in range(3):
        kernel[0, 0, channel, channel] = 1.0
    bias = np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32)  # channel 3 is a constant 1
    head = np.zeros((1, 1, 4, len(tags)), dtype=np.float32)
    for index, tag in enumerate(tags):
        weights, offset = SCORING.get(tag, ((1.0, 0.0, -1.0), 0.0))
        head[0, 0, :3, index] = np.asarray(weights) * scale
        head[0, 0, 3, index] = offset * scale
    return [kernel, bias], head


def expected_scores(mean_rgb: tuple[float, float, float], tags: list[str], scale: float = 1.0) -> np.ndarray:
    _, head = head_weights(tags, scale)
    logits = np.asarray(mean_rgb, dtype=np.float64) @ head[0, 0, :3] + head[0, 0, 3]
    return 1.0 / (1.0 + np.exp(-logits))


def build_model(size: int, tags: list[str], flavour: str = "keras", scale: float = 1.0):
    """Keras 3 model, or (flavour "tf_keras") a Keras-2 model with raw TF ops saved as TFOpLambda."""
    if flavour == "tf_keras":
        import tensorflow as tf
        import tf_keras as k
    else:
        import keras as k
    inputs = k.Input(shape=(size, size, 3))
    x = inputs
    if flavour == "tf_keras":  # x * 255 / 255: identity, but two raw TF ops that Keras 3 cannot read
        x = tf.math.divide(tf.math.multiply(x, 255.0), 255.0)
    x = k.layers.Conv2D(4, 1, use_bias=True, name="stem")(x)
    x = k.layers.Conv2D(len(tags), 1, use_bias=False, name="head")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    outputs = k.layers.Activation("sigmoid", dtype="float32")(x)
    model = k.Model(inputs, outputs, name=MODEL_NAME)
    stem, head = head_weights(tags, scale)
    model.get_layer("stem").set_weights(stem)
    model.get_layer("head").set_weights([head])
    return model


def build_project(
    directory: str | Path,
    size: int = 32,
    general: list[str] | tuple[str, ...] = GENERAL,
    character: list[str] | tuple[str, ...] = CHARACTER,
    fmt: str = "keras",
    scale: float = 1.0,
) -> Path:
    """A project folder as DeepDanbooru writes it; ``fmt`` is "keras", "h5" (Keras 3) or "keras2-h5"."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tags = [*general, *character, *SYSTEM_TAGS]
    project = dict(DEFAULT_PROJECT, image_width=size, image_height=size, model=MODEL_NAME)
    (directory / "project.json").write_text(json.dumps(project, indent=4))
    (directory / "tags.txt").write_text("\n".join(tags) + "\n")
    (directory / "tags-general.txt").write_text("\n".join(general) + "\n")
    (directory / "tags-character.txt").write_text("\n".join(character) + "\n")
    categories = [
        {"name": "General", "start_index": 0},
        {"name": "Character", "start_index": len(general)},
        {"name": "System", "start_index": len(general) + len(character)},
    ]
    (directory / "categories.json").write_text(json.dumps(categories))
    if fmt == "keras":
        build_model(size, tags, scale=scale).save(directory / f"model-{MODEL_NAME}.keras")
    elif fmt == "h5":
        build_model(size, tags, scale=scale).save(directory / f"model-{MODEL_NAME}.h5")
    elif fmt == "keras2-h5":
        build_model(size, tags, "tf_keras", scale).save(directory / f"model-{MODEL_NAME}.h5")
    else:
        raise ValueError(f"unknown fmt {fmt!r}")
    return directory


def deepdanbooru_preprocess(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """DeepDanbooru's ``load_image_for_evaluate`` on decoded RGB pixels, rebuilt from TF ops.

    ``tf.image.resize(AREA, preserve_aspect_ratio=True)``; then ``transform_and_pad_image``'s centring
    warp (skimage, bilinear, mode "edge"), which is TF's projective transform with a translation,
    bilinear sampling and nearest (edge) fill; then / 255.
    """
    import tensorflow as tf

    fitted = tf.image.resize(pixels, (height, width), method="area", preserve_aspect_ratio=True)
    fitted_height, fitted_width = fitted.shape[:2]
    # output (x, y) samples the fitted picture at (x - (W - w) / 2, y - (H - h) / 2): half a pixel when odd
    shift = [[1.0, 0.0, -(width - fitted_width) / 2, 0.0, 1.0, -(height - fitted_height) / 2, 0.0, 0.0]]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=fitted[None], transforms=tf.constant(shift, tf.float32), output_shape=[height, width],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST",
    )
    return warped[0].numpy() / 255.0
