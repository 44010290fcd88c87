"""models/identity.py on drawn characters: embedding, clustering, matching, and an ONNX embedder.

The ONNX embedders are tiny models built here with onnx.helper whose output is known in advance:
the mean of each colour channel over the picture (ReduceMean), so the embedding is the unit
vector of the picture's mean (normalised) RGB.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.identity import (
    BUILTIN_VERSION,
    ColourEmbedder,
    EmbedderError,
    OnnxEmbedder,
    cluster,
    embedder_version,
    head_region,
    load_embedder,
    match,
)
from tests.models.identity_drawings import draw_head

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def heads(character: str, variants: range) -> list[Image.Image]:
    return [draw_head(character, v) for v in variants]


def build_mean_colour_model(path: Path, layout: str = "NCHW", size: int = 16, tokens: bool = False) -> Path:
    """An "encoder" whose embedding is the mean R, G, B of its input (``[N, 3]``, or ``[N, 1, 3]`` tokens)."""
    shape = ["batch", 3, size, size] if layout == "NCHW" else ["batch", size, size, 3]
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    nodes = [helper.make_node("ReduceMean", ["pixels", "axes"], ["means"], keepdims=0)]
    out_shape: list = ["batch", 3]
    if tokens:
        nodes.append(helper.make_node("Unsqueeze", ["means", "token_axis"], ["tokens"]))
        out_shape = ["batch", 1, 3]
    graph = helper.make_graph(
        nodes, "mean_colour",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("tokens" if tokens else "means", TensorProto.FLOAT, out_shape)],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], axes),
                     helper.make_tensor("token_axis", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_head_region_takes_the_hair_above_a_face_else_the_upper_part_of_a_tall_picture():
    tall = Image.new("RGBA", (100, 300))
    region, source = head_region(tall, {"x": 30, "y": 100, "w": 40, "h": 40})
    # grown 35% of the width on each side, 60% of the height up, 10% down
    assert (source, region.size) == ("face 30,100,40,40", (68, 68))  # 14+40+14, 24+40+4
    region, source = head_region(tall)
    assert (source, region.size) == ("upper", (100, 135))
    region, source = head_region(Image.new("RGB", (200, 180)))
    assert (source, region.size, region.mode) == ("whole", (200, 180), "RGBA")


def test_colour_embedding_puts_one_character_closer_to_itself_than_to_others():
    embedder = ColourEmbedder()
    vectors = {c: embedder.embed(heads(c, range(4))) for c in ("red", "blue", "silver")}
    for rows in vectors.values():
        assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    for character, rows in vectors.items():
        within = max(np.linalg.norm(a - b) for a in rows for b in rows)
        between = min(np.linalg.norm(a - b) for other, others in vectors.items() if other != character
                      for a in rows for b in others)
        assert within < between, character


def test_transparent_pixels_count_for_nothing():
    head = draw_head("red", 0)
    on_black = Image.new("RGBA", head.size, (0, 0, 0, 0))
    on_black.alpha_composite(head)
    shifted_background = head.copy()
    pixels = shifted_background.load()
    for x in range(head.width):
        for y in range(head.height):
            if pixels[x, y][3] == 0:
                pixels[x, y] = (0, 255, 0, 0)  # green, but fully transparent
    embedder = ColourEmbedder()
    a, b = embedder.embed([head, shifted_background])
    assert np.allclose(a, b, atol=1e-6)


def test_references_keep_exactly_the_character_with_reasons():
    embedder = ColourEmbedder()
    pictures = heads("red", range(10, 16)) + heads("blue", range(10, 16)) + heads("silver", range(10, 16))
    references = embedder.embed(heads("red", range(3)))
    results = match(embedder.embed(pictures), references, version=embedder.version)
    assert [m.matched for m in results] == [True] * 6 + [False] * 12
    for m in results:
        assert "references' centroid" in m.reason and m.reason.endswith(f"({BUILTIN_VERSION})")
        assert math.isfinite(m.distance)
    assert max(m.distance for m in results[:6]) < min(m.distance for m in results[6:])


def test_without_references_the_dominant_cluster_is_kept():
    embedder = ColourEmbedder()
    pictures = heads("blue", range(20, 32)) + heads("red", range(20, 26)) + heads("silver", range(20, 26))
    embeddings = embedder.embed(pictures)
    labels = cluster(embeddings, min_cluster_size=5)
    assert len(set(labels[:12].tolist())) == 1 and labels[0] >= 0
    results = match(embeddings, None, min_cluster_size=5)
    assert [m.matched for m in results] == [True] * 12 + [False] * 12
    assert results[0].cluster_size == 12 and "(the dominant one)" in results[0].reason
    assert "not the dominant cluster" in results[-1].reason


def test_too_few_pictures_form_no_cluster_and_say_so():
    results = match(ColourEmbedder().embed(heads("red", range(3))), None, min_cluster_size=5)
    assert [m.matched for m in results] == [False] * 3
    assert "no cluster among 3 pictures" in results[0].reason
    assert match(np.zeros((0, 4), np.float32), None) == []


@pytest.mark.parametrize("layout, tokens", [("NCHW", False), ("NHWC", True)])
def test_an_onnx_embedder_is_loaded_and_its_output_is_the_embedding(tmp_path, layout, tokens):
    path = build_mean_colour_model(tmp_path / "encoder.onnx", layout, tokens=tokens)
    embedder = load_embedder(str(path))
    assert isinstance(embedder, OnnxEmbedder)
    assert embedder.size == (16, 16) and embedder.channels_first == (layout == "NCHW")
    assert embedder.version == embedder_version(str(path)) and embedder.version.startswith("onnx-")
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    teal = Image.new("RGB", (40, 30), (0, 128, 128))
    vectors = embedder.embed([red, teal])
    assert vectors.shape == (2, 3)
    assert np.allclose(vectors[0], [1, 0, 0], atol=1e-5)
    assert np.allclose(vectors[1], [0, 1 / math.sqrt(2), 1 / math.sqrt(2)], atol=1e-2)


def test_an_onnx_embedder_drives_the_match(tmp_path):
    embedder = OnnxEmbedder(build_mean_colour_model(tmp_path / "encoder.onnx"), normalization="0-1")
    pictures = heads("red", range(10, 14)) + heads("blue", range(10, 14))
    results = match(embedder.embed(pictures), embedder.embed(heads("red", range(3))), threshold=0.2,
                    version=embedder.version)
    assert [m.matched for m in results] == [True] * 4 + [False] * 4
    assert results[0].reason.endswith(f"({embedder.version})")


def test_a_bad_embedder_is_refused_with_the_reason(tmp_path):
    with pytest.raises(EmbedderError, match="no such embedder model file"):
        OnnxEmbedder(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(EmbedderError, match="not a loadable ONNX model"):
        OnnxEmbedder(junk)
    with pytest.raises(EmbedderError, match="unknown normalization"):
        OnnxEmbedder(build_mean_colour_model(tmp_path / "ok.onnx"), normalization="zscore")
