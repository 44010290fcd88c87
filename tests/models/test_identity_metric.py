"""The offline identity embedder: EfficientNet-Lite0 from its wheel, the metric head's training and
loading, and the shipped head as the identity stage's default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import identity_metric as metric
from models.identity import BUILTIN_VERSION, ColourEmbedder, embedder_version, load_embedder
from models.lite0 import EfficientNetLite0, Lite0Error, pretrained, weights_path
from tests.models.identity_drawings import draw_head


def test_lite0_loads_the_wheels_imagenet_weights_and_refuses_foreign_files(tmp_path):
    net = pretrained()
    assert weights_path().name == "efficientnet-lite0-57934424.pth"
    pictures = torch.stack([torch.from_numpy(np.asarray(draw_head(c, 1).convert("RGB").resize((224, 224)),
                                                        np.float32) / 255).permute(2, 0, 1) for c in ("red", "blue")])
    with torch.no_grad():
        features, logits = net.features(pictures), net(pictures)
        untrained = EfficientNetLite0().eval()(pictures)
    assert features.shape == (2, 1280) and logits.shape == (2, 1000)
    assert torch.isfinite(features).all() and not torch.allclose(features[0], features[1])
    # ImageNet weights, not random ones: a random net gives near-uniform class probabilities
    assert float(logits.softmax(1).max()) > 5 * float(untrained.softmax(1).max())

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Lite0Error, match="not the EfficientNet-Lite0 weights"):
        pretrained(tmp_path / "junk.pth")
    torch.save({"_conv_stem.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(Lite0Error, match="do not fit EfficientNet-Lite0"):
        pretrained(tmp_path / "other.pth")


def test_the_head_learns_to_gather_each_characters_views():
    """Six 'characters' whose features differ in a few directions, buried in larger noise elsewhere:
    before training their views are no nearer each other than to the others; after, they are."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1.0, (6, 1280)).astype(np.float32) * (rng.random(1280) < 0.02)
    features = centres[:, None, None, :] + rng.normal(0, 1.0, (6, 5, 8, 1280)).astype(np.float32)
    features = features.reshape(30, 8, 1280)
    labels = [f"c{i // 5}" for i in range(30)]
    head = metric.train_head(features, labels, metric.MetricConfig(steps=300, batch_classes=6, batch_views=4))
    embedded = metric.embed_features(head, features)
    plain = embedded[:, 0]
    distances = np.linalg.norm(plain[:, None] - plain[None], axis=2)
    same = np.array([[a != b and labels[a] == labels[b] for b in range(30)] for a in range(30)])
    other = np.array([[labels[a] != labels[b] for b in range(30)] for a in range(30)])
    assert distances[same].mean() < 0.6 * distances[other].mean()


def test_the_mix_with_colour_v1_is_a_unit_vector_whose_squared_distance_is_the_weighted_sum():
    rng = np.random.default_rng(2)
    colour = np.stack([v / np.linalg.norm(v) for v in rng.normal(size=(2, 40))])
    learned = np.stack([v / np.linalg.norm(v) for v in rng.normal(size=(2, 64))])
    mixed = metric.combine(colour, learned, 0.3)
    assert np.allclose(np.linalg.norm(mixed, axis=1), 1.0, atol=1e-6)
    squared = lambda a: float(np.sum((a[0] - a[1]) ** 2))  # noqa: E731
    assert squared(mixed) == pytest.approx(0.3 * squared(colour) + 0.7 * squared(learned), rel=1e-5)
    assert np.allclose(metric.combine(colour, learned, 1.0)[:, :40], colour)


def test_a_saved_head_loads_as_an_embedder_of_unit_vectors(tmp_path):
    features = np.random.default_rng(1).normal(size=(4, 2, 1280)).astype(np.float32)
    head = metric.train_head(features, ["a", "a", "b", "b"], metric.MetricConfig(steps=5, batch_classes=2))
    metric.save(head, tmp_path / "head", {"version": metric.VERSION, "threshold": 0.7, "colour_weight": 0.5})
    assert metric.is_metric_folder(tmp_path / "head") and not list((tmp_path / "head").glob(".*"))
    embedder = load_embedder(str(tmp_path / "head"))
    vectors = embedder.embed([draw_head("red", v) for v in range(3)])
    colour_size = ColourEmbedder().embed([draw_head("red", 0)]).shape[1]
    assert vectors.shape == (3, colour_size + 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.default_threshold == 0.7
    assert embedder.version == embedder_version(str(tmp_path / "head")) and embedder.version.startswith("lite0-metric-v1-")


def test_the_shipped_head_is_the_default_and_colour_v1_stays_selectable():
    assert metric.shipped_available(), "models/shipped/identity-metric/ must ship with the project"
    embedder = load_embedder(None)
    assert isinstance(embedder, metric.MetricEmbedder) and embedder_version(None) == embedder.version
    assert 0.2 <= embedder.default_threshold <= 1.6
    assert isinstance(load_embedder(BUILTIN_VERSION), ColourEmbedder) and embedder_version("colour-v1") == "colour-v1"
    assert (metric.SHIPPED_DIR / metric.HEAD_NAME).stat().st_size < 10 * 2**20
