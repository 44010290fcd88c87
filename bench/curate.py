"""Benchmark: the tagger stage's batched inference against the original per-image predict loop.

The model has DeepDanbooru's shape (bottleneck ResNet blocks of conv-BN-ReLU, a 1x1 conv to one
output per tag, global average pooling, sigmoid) at a reduced input and width, saved as a real
DeepDanbooru project folder and loaded by ``DeepDanbooruTagger`` as a user's would be. Both ways
preprocess the same way; the naive one calls ``model.predict`` once per image, as the original
workflow did. Peak memory is this process's ru_maxrss.

    .venv/bin/python bench/curate.py [--images 256] [--size 128] [--tags 2000] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sample_pictures import sample_pictures  # noqa: E402  (after the path is set)


def build_model(size: int, tags: int):
    import keras
    from keras import layers

    def conv_bn_relu(x, filters, kernel, strides=1):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
        x = layers.BatchNormalization()(x)
        return layers.Activation("relu")(x)

    def bottleneck(x, filters, strides):
        shortcut = x
        if strides != 1 or x.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x)
            shortcut = layers.BatchNormalization()(shortcut)
        y = conv_bn_relu(x, filters // 4, 1)
        y = conv_bn_relu(y, filters // 4, 3, strides)
        y = layers.Conv2D(filters, 1, use_bias=False)(y)
        y = layers.BatchNormalization(gamma_initializer="zeros")(y)
        return layers.Activation("relu")(layers.Add()([shortcut, y]))

    inputs = keras.Input((size, size, 3))
    x = conv_bn_relu(inputs, 32, 7, 2)
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    for stage, (filters, repeat) in enumerate([(64, 2), (128, 2), (256, 2), (512, 1)]):
        for i in range(repeat):
            x = bottleneck(x, filters, 2 if (i == 0 and stage > 0) else 1)
    x = layers.Conv2D(tags, 1, use_bias=False)(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Activation("sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def write_project(directory: Path, size: int, tags: int) -> Path:
    names = [f"tag_{i:05d}" for i in range(tags)]
    general = names[: tags * 3 // 4]  # the rest are Character tags
    (directory / "project.json").write_text(json.dumps({"image_width": size, "image_height": size, "model": "bench"}))
    (directory / "tags.txt").write_text("\n".join(names) + "\n")
    (directory / "categories.json").write_text(json.dumps(
        [{"name": "General", "start_index": 0}, {"name": "Character", "start_index": len(general)}]))
    build_model(size, tags).save(directory / "model-bench.keras")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--naive-images", type=int, default=64, help="the per-image loop's rate is flat; fewer suffice")
    parser.add_argument("--size", type=int, default=128, help="reduced from DeepDanbooru's 512")
    parser.add_argument("--tags", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    import keras
    import numpy as np

    from models.tagger import DeepDanbooruTagger

    with tempfile.TemporaryDirectory() as tmp:
        tagger = DeepDanbooruTagger.load(write_project(Path(tmp), args.size, args.tags))
        images = sample_pictures(args.images)
        tagger.predict(images[:2], batch_size=2)  # warm up both paths once
        tagger.model.predict(tagger.preprocess(images[0])[None], verbose=0)

        started = time.perf_counter()
        cpu = time.process_time()
        batched = tagger.predict(images, batch_size=args.batch)
        ours = (time.perf_counter() - started, time.process_time() - cpu)

        started = time.perf_counter()
        cpu = time.process_time()
        naive = []
        for image in images[: args.naive_images]:
            scores = tagger.model.predict(tagger.preprocess(image)[None], verbose=0)[0]
            naive.append({t: float(s) for t, s in zip(tagger.tags, scores) if s >= tagger.threshold})
        theirs = (time.perf_counter() - started, time.process_time() - cpu)

    same = all(set(a) == set(b) for a, b in zip(batched, naive))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ours_rate, naive_rate = args.images / ours[0], args.naive_images / theirs[0]
    print(f"\nTagger benchmark: DeepDanbooru-shaped model, {args.size}x{args.size} input, {args.tags} tags, "
          f"keras {keras.__version__} ({keras.backend.backend()}), {os.cpu_count()} cores; same tags both ways: {same}\n")
    print(f"{'way':<34} {'images':>6} {'wall s':>7} {'images/s':>9} {'CPU s/image':>12}")
    for way, count, (wall, cpu), rate in (
        (f"batched ({args.batch}), DeepDanbooruTagger", args.images, ours, ours_rate),
        ("per-image model.predict (naive)", args.naive_images, theirs, naive_rate),
    ):
        print(f"{way:<34} {count:>6} {wall:>7.2f} {rate:>9.1f} {cpu / count:>12.3f}")
    print(f"\nratio {ours_rate / naive_rate:.1f}x; peak memory {peak:.0f} MB")
    assert np.isfinite(ours_rate)


if __name__ == "__main__":
    main()
