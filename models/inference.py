"""What the models share: batched inference, Keras outputs as numpy, onnxruntime's providers, hashing a
weights file. (Progress bars: core/progress.py.)"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks (weights files run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu), always the CPU one."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider",) if p in available] + ["CPUExecutionProvider"]


def dimension(value: Any) -> int | None:
    """A fixed ONNX dimension, or None for a symbolic one ("batch_size", None)."""
    return value if isinstance(value, int) and value > 0 else None


def to_numpy(output: Any) -> np.ndarray:
    """A Keras 3 model's output, whatever the backend (TensorFlow or torch tensors)."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(output), dtype=np.float32)


def batched_scores(
    model: Any,
    preprocess: Callable[[Any], np.ndarray],
    images: Sequence[Image.Image] | np.ndarray,
    batch_size: int,
    outputs: int,
    to_numpy: Callable[[Any], np.ndarray],
) -> np.ndarray:
    """(len(images), outputs) float32 scores: one model call per batch, the last batch partial."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    rows = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([preprocess(image) for image in images[start:start + batch_size]])
        rows.append(to_numpy(model(batch, training=False)))
    if not rows:
        return np.zeros((0, outputs), dtype=np.float32)
    return np.concatenate(rows).astype(np.float32, copy=False)
