"""Benchmark: images/s of the three model stages on the CPU and on CUDA, batched and one at a time.

* tagger: a WD14-shaped ONNX model (448 px NHWC BGR input, 2,000 sigmoid tags, a convolutional body:
  bench/tagger.py's) on onnxruntime, with the CPU provider and, when this onnxruntime build has it
  (the ``gpu`` extra: onnxruntime-gpu), the CUDA provider;
* face stage: the learned face detector's network (models/face_heatmap.py, ``FaceHeatmapNet`` with
  its default width) on 512 px pictures, plain torch, on ``cpu`` and ``cuda``;
* classifier: the character classifier (models/classifier.py, the from-scratch CNN at 224 px) in
  Keras 3 on the torch backend (``KERAS_BACKEND=torch``, as the ``gpu`` extra runs it), in a child
  process per device (Keras picks its device when imported).

Our way is batches (``--batch``); the naive way is one picture per call. Weights are random:
throughput does not depend on them. A device that is not there prints "n/a" with the reason.

    .venv/bin/python bench/gpu.py [--images 64] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tagger import build_model as build_tagger_model  # noqa: E402  (after the path is set)


def rate(count: int, run: Callable[[], Any], repeat: int = 1) -> float:
    """Images per second of ``run`` (which handles ``count`` images), after one warm-up call."""
    run()
    started = time.perf_counter()
    for _ in range(repeat):
        run()
    return count * repeat / (time.perf_counter() - started)


def batched(count: int, batch: int, step: Callable[[int], Any]) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, count, batch):
            step(min(batch, count - start))
    return run


def tagger_rates(images: int, batch: int) -> dict[str, Any]:
    import onnxruntime

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        build_tagger_model(path, 448, 2000)
        pixels = np.random.default_rng(0).uniform(0, 255, (batch, 448, 448, 3)).astype(np.float32)
        for device, provider in (("cpu", "CPUExecutionProvider"), ("cuda", "CUDAExecutionProvider")):
            if provider not in onnxruntime.get_available_providers():
                results[device] = "n/a: onnxruntime has no CUDA provider (pip install the gpu extra)"
                continue
            session = onnxruntime.InferenceSession(str(path), providers=[provider])
            name = session.get_inputs()[0].name
            results[device] = (
                rate(images, batched(images, batch, lambda n: session.run(None, {name: pixels[:n]}))),
                rate(images, batched(images, 1, lambda n: session.run(None, {name: pixels[:1]}))),
            )
    return results


def face_rates(images: int, batch: int) -> dict[str, Any]:
    import torch

    from models.face_heatmap import FaceHeatmapNet

    results: dict[str, Any] = {}
    for device in ("cpu", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            results[device] = "n/a: torch sees no CUDA device"
            continue
        net = FaceHeatmapNet().to(device).eval()
        pictures = torch.rand(batch, 3, 512, 512, device=device)

        def step(n: int) -> None:
            with torch.inference_mode():
                net(pictures[:n])
            if device == "cuda":
                torch.cuda.synchronize()

        results[device] = (rate(images, batched(images, batch, step)), rate(images, batched(images, 1, step)))
    return results


CLASSIFIER_CHILD = """
import json, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
import keras
from models.classifier import build_model
images, batch = {images}, {batch}
model, _ = build_model(["mona", "not_mona"], 224, None)
pixels = np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
def run(size):
    for start in range(0, images, size):
        model.predict_on_batch(pixels[:min(size, images - start)])
out = []
for size in (batch, 1):
    run(size)
    started = time.perf_counter()
    run(size)
    out.append(images / (time.perf_counter() - started))
print(json.dumps(out))
"""


def classifier_rates(images: int, batch: int) -> dict[str, Any]:
    import torch

    results: dict[str, Any] = {}
    for device in ("cpu", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            results[device] = "n/a: torch sees no CUDA device"
            continue
        env = {**os.environ, "KERAS_BACKEND": "torch"}
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        child = subprocess.run([sys.executable, "-c", CLASSIFIER_CHILD.format(repo=str(REPO), images=images, batch=batch)],
                               capture_output=True, text=True, env=env, timeout=1800)
        if child.returncode != 0:
            results[device] = f"n/a: {child.stderr.strip().splitlines()[-1] if child.stderr.strip() else 'failed'}"
        else:
            results[device] = tuple(json.loads(child.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"{args.images} pictures a run, batches of {args.batch}; torch {torch.__version__}, CUDA device: {gpu}; "
          f"{os.cpu_count()} CPU cores\n")
    rows = [("tagger (WD14-shaped ONNX, 448 px)", tagger_rates(args.images, args.batch)),
            ("face stage (FaceHeatmapNet, 512 px)", face_rates(args.images, args.batch)),
            ("classifier (Keras on torch, 224 px)", classifier_rates(args.images, args.batch))]
    print(f"{'stage':<38} {'device':<6} {'batched img/s':>14} {'one-by-one img/s':>17} {'speed-up':>9}")
    for stage, results in rows:
        for device, value in results.items():
            if isinstance(value, str):
                print(f"{stage:<38} {device:<6} {value}")
            else:
                ours, naive = value
                print(f"{stage:<38} {device:<6} {ours:>14.1f} {naive:>17.1f} {ours / naive:>8.1f}x")


if __name__ == "__main__":
    main()
