"""Benchmark: training throughput (images/s) of the two torch trainers, for a fixed budget of epochs.

Generates its own data (the tests' coloured-shapes labelme set for segmentation, recoloured
synthetic faces for the DCGAN) in a temporary folder, trains each with the real ``train``
functions on the default device (CUDA with bf16 autocast when there is one), and prints the
images/s of each epoch after the first (which pays for cuDNN's autotuning) as JSON.

    .venv/bin/python bench/trainers.py [--size 256] [--pictures 400] [--faces 2000] [--epochs 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_faces(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    from models.faces import synthetic_face

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    base = np.asarray(synthetic_face(96), dtype=np.int16)
    for index in range(count):
        shifted = (base + rng.integers(-50, 50, 3)).clip(0, 255).astype(np.uint8)
        Image.fromarray(shifted).save(folder / f"face_{index:05d}.jpg", quality=92)


def steady(history: list[dict], key: str) -> float:
    rates = [row[key] for row in history[1:]] or [row[key] for row in history]
    return round(statistics.median(rates), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="segmentation pictures and crops (px)")
    parser.add_argument("--pictures", type=int, default=400, help="segmentation pictures")
    parser.add_argument("--faces", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import torch

    from models import gan, segment
    from models.labelme import convert_folder
    from tests.models.segment_fixtures import write_labelme_folder

    device = segment.choose_device(args.device)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": str(torch.__version__), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.monotonic()
        write_labelme_folder(root / "labelme", args.pictures, seed=1, size=args.size)
        convert_folder(root / "labelme", root / "seg-data")
        write_faces(root / "faces", args.faces)
        results["data_seconds"] = round(time.monotonic() - started, 1)

        trained = segment.train(root / "seg-data", root / "seg", epochs=args.epochs, image_size=args.size,
                                batch_size=16, device=args.device, progress=False)
        results["segmentation"] = {
            "encoder": "unet width 32 depth 4", "image_size": args.size, "batch_size": 16,
            "images_per_second": steady(trained.card["history"], "images_per_second"),
            "test_mean_iou": trained.test["mean_iou"] if trained.test else None,
            "seconds": trained.card["training"]["seconds"],
        }
        result = gan.train(root / "faces", root / "gan", epochs=args.epochs, checkpoint_every=args.epochs,
                           config=gan.GanConfig(batch_size=128), device=args.device, progress=False)
        results["dcgan"] = {
            "image_size": 96, "width": 64, "batch_size": 128,
            "images_per_second": steady(result.card["history"], "images_per_second"),
            "seconds": round(sum(row["seconds"] for row in result.card["history"]), 1),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
