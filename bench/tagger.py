"""Benchmark: the WD14 tagger's batched inference against one picture per ``session.run``.

The model has a WD14 tagger's interface (NHWC float32 BGR input, one sigmoid score per tag) and a
small convolutional body (strided 3x3 convs with ReLU, global average pooling, a dense layer to the
tags), with random weights, saved as a real ``model.onnx`` + ``selected_tags.csv`` folder and loaded
by ``WD14Tagger`` as a user's would be, on onnxruntime's CPU provider. Both ways preprocess the same
way; the naive one calls the model once per picture, as SmilingWolf's space and most scripts do.

    .venv/bin/python bench/tagger.py [--images 128] [--size 224] [--tags 2000] [--batch 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sample_pictures import sample_pictures  # noqa: E402  (after the path is set)


def build_model(path: Path, size: int, tags: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    nodes, weights = [helper.make_node("Transpose", ["input_1"], ["x0"], perm=[0, 3, 1, 2])], []
    channels = [3, 32, 64, 128, 256]
    for i, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        kernel = rng.normal(0, (2 / (9 * c_in)) ** 0.5, (c_out, c_in, 3, 3)).astype(np.float32)
        if i == 0:
            kernel /= 255.0  # the input is 0..255
        weights += [numpy_helper.from_array(kernel, f"w{i}"), numpy_helper.from_array(np.zeros(c_out, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [f"x{i}", f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"x{i + 1}"])]
    last = f"x{len(channels) - 1}"
    dense = rng.normal(0, 0.05, (channels[-1], tags)).astype(np.float32)
    weights += [numpy_helper.from_array(dense, "dense"), numpy_helper.from_array(np.full(tags, -2.0, np.float32), "dense_bias")]
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("Gemm", ["features", "dense", "dense_bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes, "bench_wd14",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch_size", size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch_size", tags])],
        initializer=weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def write_folder(folder: Path, size: int, tags: int) -> Path:
    build_model(folder / "model.onnx", size, tags)
    categories = [9] * 4 + [0] * (tags * 3 // 4 - 4) + [4] * (tags - tags * 3 // 4)
    rows = [f"{i},tag_{i:05d},{category},{tags - i}" for i, category in enumerate(categories)]
    (folder / "selected_tags.csv").write_text("tag_id,name,category,count\n" + "\n".join(rows) + "\n")
    return folder


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--tags", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    from models.wd14 import WD14Tagger

    images = sample_pictures(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        tagger = WD14Tagger.load(write_folder(Path(tmp), args.size, args.tags), providers=["CPUExecutionProvider"])
        tagger.predict(images[:2], batch_size=2)  # warm-up: first-run allocations
        ours, batched = timed(lambda: tagger.predict(images, batch_size=args.batch))
        naive, one_by_one = timed(lambda: [tagger.predict([image])[0] for image in images])
    same = sum(b.keys() == o.keys() for b, o in zip(batched, one_by_one))

    print(f"WD14 tagger, {args.size} px input, {args.tags} tags, {args.images} pictures, onnxruntime CPU\n")
    print(f"{'way':<36} {'seconds':>8} {'images/s':>9} {'speed-up':>9}")
    print(f"{'batched (' + str(args.batch) + '), WD14Tagger.predict':<36} {ours:>8.2f} {args.images / ours:>9.1f} {naive / ours:>8.1f}x")
    print(f"{'one picture per session.run':<36} {naive:>8.2f} {args.images / naive:>9.1f} {1:>8.1f}x")
    print(f"\nsame tags both ways: {same}/{args.images} pictures")


if __name__ == "__main__":
    main()
