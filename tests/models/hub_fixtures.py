"""Repositories for the local Hub (mocksites/hub.py): tiny models in the real ones' layout and
input/output signatures, under the real repo ids of the catalogue (models/known_models.toml)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.models.test_wd14 import build_tagger_folder

CCIP_NAME = "ccip-caformer-24-randaug-pruned"
CCIP_THRESHOLD = 0.02
FEATURES = 8


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_ccip_folder(folder: Path, threshold: float = CCIP_THRESHOLD) -> Path:
    """CCIP's three files: a feature model (``input`` [N, 3, 384, 384] -> ``output`` [N, 8], the
    picture's mean normalised colour spread over 8 features) and a metric model (``input`` [N, 8] ->
    ``output`` [N, N] = clip(0.5 * (1 - cosine), 0, 1), what the real metric head computes)."""
    spread = np.array([[1, 0, 0, 1, 0, 1, 0, 0.5], [0, 1, 0, 1, 1, 0, 0.5, 0], [0, 0, 1, 0, 1, 1, 0.5, 0.5]],
                      dtype=np.float32)
    features = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["means"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["means", "spread"], ["output"])],
        "tiny_ccip_feat",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 384, 384])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", FEATURES])],
        initializer=[helper.make_tensor("spread", TensorProto.FLOAT, spread.shape, spread.flatten().tolist())],
    )
    _save(helper.make_model(features, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
          folder / "model_feat.onnx")
    metric = helper.make_graph(
        [helper.make_node("Mul", ["input", "input"], ["squared"]),
         helper.make_node("ReduceSum", ["squared", "last_axis"], ["norm2"], keepdims=1),
         helper.make_node("Sqrt", ["norm2"], ["norm"]),
         helper.make_node("Div", ["input", "norm"], ["unit"]),
         helper.make_node("Transpose", ["unit"], ["unit_t"], perm=[1, 0]),
         helper.make_node("MatMul", ["unit", "unit_t"], ["cosine"]),
         helper.make_node("Sub", ["one", "cosine"], ["gap"]),
         helper.make_node("Mul", ["gap", "half"], ["scaled"]),
         helper.make_node("Clip", ["scaled", "zero", "one"], ["output"])],
        "tiny_ccip_metrics",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", "batch"])],
        initializer=[helper.make_tensor("last_axis", TensorProto.INT64, [1], [1]),
                     helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
                     helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
                     helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    _save(helper.make_model(metric, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
          folder / "model_metrics.onnx")
    (folder / "metrics.json").write_text(json.dumps({"threshold": threshold, "f1": 0.9}), encoding="utf-8")
    return folder


def ddb_release_zip(path: Path, model_bytes: int = 3_000_000) -> Path:
    """A DeepDanbooru release zip's layout (files at its root); the weights are random bytes: a pull
    does not load them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("project.json", json.dumps({"image_width": 512, "image_height": 512,
                                                    "model": "resnet_custom_v3"}, indent=4))
        zipped.writestr("tags.txt", "1girl\nsolo\nrating:safe\n")
        zipped.writestr("model-resnet_custom_v3.h5", np.random.default_rng(0).bytes(model_bytes))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def hub_repos(root: Path, big_model_bytes: int = 0) -> Path:
    """``root/hub/OWNER/REPO/...`` and ``root/github/...``: a tiny WD14 tagger as
    SmilingWolf/wd-swinv2-tagger-v3, CCIP as deepghs/ccip_onnx, the DeepDanbooru release zip; with
    ``big_model_bytes``, SmilingWolf/wd-vit-tagger-v3 holds a model.onnx of that many random bytes
    (bigger than huggingface_hub's 10 MB download chunk: what a resumed download needs)."""
    build_tagger_folder(root / "hub" / "SmilingWolf" / "wd-swinv2-tagger-v3")
    build_ccip_folder(root / "hub" / "deepghs" / "ccip_onnx" / CCIP_NAME)
    ddb_release_zip(root / "github" / "KichangKim" / "DeepDanbooru" / "v3-20211112-sgd-e28" /
                    "deepdanbooru-v3-20211112-sgd-e28.zip")
    if big_model_bytes:
        vit = root / "hub" / "SmilingWolf" / "wd-vit-tagger-v3"
        vit.mkdir(parents=True, exist_ok=True)
        (vit / "model.onnx").write_bytes(np.random.default_rng(1).bytes(big_model_bytes))
        (vit / "selected_tags.csv").write_text("tag_id,name,category,count\n1,general,9,1\n", encoding="utf-8")
    return root
