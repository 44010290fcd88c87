"""What the models share: batched inference, Keras outputs as numpy, onnxruntime's providers, hashing a
weights file, a progress bar."""

from __future__ import annotations

import hashlib
import sys
import time
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
    preprocess: Callable[[Image.Image], np.ndarray],
    images: Sequence[Image.Image],
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


class Progress:
    """A one-line progress bar on stderr (silent when disabled)."""

    def __init__(self, label: str, total: int, enabled: bool = True, stream: Any = None) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.monotonic()

    def update(self, count: int) -> None:
        self.done = min(self.done + count, self.total)
        if self.enabled and self.total:
            filled = int(30 * self.done / self.total)
            rate = self.done / max(time.monotonic() - self.started, 1e-9)
            self.stream.write(
                f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} ({rate:.1f}/s)"
            )
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.total:
            self.stream.write("\n")
            self.stream.flush()
