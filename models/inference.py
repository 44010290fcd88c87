"""Batched inference shared by the models: one model call per batch, the last batch partial."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image


def batched_scores(
    model: Any,
    preprocess: Callable[[Image.Image], np.ndarray],
    images: Sequence[Image.Image],
    batch_size: int,
    outputs: int,
    to_numpy: Callable[[Any], np.ndarray],
) -> np.ndarray:
    """(len(images), outputs) float32 scores."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    rows = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([preprocess(image) for image in images[start:start + batch_size]])
        rows.append(to_numpy(model(batch, training=False)))
    if not rows:
        return np.zeros((0, outputs), dtype=np.float32)
    return np.concatenate(rows).astype(np.float32, copy=False)
