"""Which network the labelling loop's linear model reads pictures through (models/label_features.py):
a tagger's penultimate layer (WD14 ONNX and DeepDanbooru Keras, on tiny models built here whose
penultimate values are known: the channel means their heads read), CCIP's features, Lite0; how
``LABEL_FEATURES=auto`` chooses; and a model learned on tagger features classifying through the same
tagger in the crawl's classify stage, refused once the tagger's weights change."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from PIL import Image
from scrapy.settings import Settings

from models.ccip import CcipModel
from models.label_features import CcipFeatures, FeaturesError, Lite0Features, TaggerFeatures, describe, extractor_for
from models.label_learner import LinearClassifier
from models.tagger import TaggerError, preprocess_image
from models.wd14 import penultimate_output
from stages.classify import Classify
from tests.models.hub_fixtures import _save, build_ccip_folder
from tests.models.tagger_fixtures import build_project
from tests.models.test_wd14 import build_model, build_tagger_folder


def noisy(colour: tuple[int, int, int], seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(colour, np.float32) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


PICTURES = [noisy((200, 40, 40) if n % 2 else (40, 40, 200), n) for n in range(12)]  # red ones odd, blue even


def test_the_penultimate_layer_is_what_each_taggers_head_reads(tmp_path):
    wd14 = TaggerFeatures(build_tagger_folder(tmp_path / "wd14"))
    # tiny WD14: mean over the picture of each BGR channel (0..255), then MatMul: its input is the means
    expected = np.stack([np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC), np.float32)[:, :, ::-1]
                         .mean(axis=(0, 1)) for image in PICTURES])
    assert wd14.kind == "tagger" and wd14.version.startswith("wd14-") and wd14.version.endswith("/penultimate-whole-head")
    assert np.allclose(wd14(PICTURES), np.concatenate([expected, expected], axis=1), atol=1e-3)  # square: head = whole
    tall = Image.new("RGB", (20, 60), (255, 0, 0))
    tall.paste((0, 0, 255), (0, 30, 20, 60))  # red above, blue below: the head region is the red top
    whole, head = wd14([tall])[0].reshape(2, 3)
    assert head[2] > whole[2] + 20 and head[0] < whole[0] - 20  # BGR: more red, less blue in the head

    # tiny DeepDanbooru: a stem conv passes R, G, B and a constant 1; the 1x1 head reads it, averaged;
    # as Keras 3 loads it, and as tf_keras loads a Keras-2 .h5 with raw TF ops (the released models' kind)
    means = np.stack([preprocess_image(image, 32, 32).mean(axis=(0, 1)) for image in PICTURES])
    for fmt in ("keras", "keras2-h5"):
        deepdanbooru = TaggerFeatures(build_project(tmp_path / fmt, size=32, fmt=fmt))
        read = np.concatenate([means, np.ones((12, 1))], axis=1)
        assert np.allclose(deepdanbooru(PICTURES), np.concatenate([read, read], axis=1), atol=1e-4), fmt

    no_head = helper.make_graph(  # scores straight from a mean: nothing dense to read before them
        [helper.make_node("ReduceMean", ["input_1"], ["means"], axes=[1, 2], keepdims=0),
         helper.make_node("Sigmoid", ["means"], ["scores"])], "no_head",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["n", 32, 32, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3])])
    path = _save(helper.make_model(no_head, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "x.onnx")
    with pytest.raises(TaggerError, match="no dense layer or 1x1 conv"):
        penultimate_output(path)


def test_ccip_reads_the_whole_picture_and_its_head_region(tmp_path):
    folder = build_ccip_folder(tmp_path / "ccip")
    extractor = CcipFeatures(folder)
    features = extractor(PICTURES[:3])
    assert features.shape == (3, 16) and extractor.version.endswith("/whole-head")
    assert np.allclose(features[:, :8], CcipModel(folder).embed(PICTURES[:3]), atol=1e-5)


def test_auto_takes_ccip_then_the_tagger_then_lite0(tmp_path):
    tagger = str(build_tagger_folder(tmp_path / "wd14"))
    ccip = str(build_ccip_folder(tmp_path / "ccip"))
    assert isinstance(extractor_for(Settings({})), Lite0Features)
    assert isinstance(extractor_for(Settings({"TAGGER_PROJECT": tagger})), TaggerFeatures)
    assert isinstance(extractor_for(Settings({"TAGGER_PROJECT": tagger, "IDENTITY_EMBEDDER": ccip})), CcipFeatures)
    assert isinstance(extractor_for(Settings({"TAGGER_PROJECT": tagger, "LABEL_FEATURES": "lite0"})), Lite0Features)
    assert isinstance(extractor_for(Settings({"TAGGER_PROJECT": tagger, "IDENTITY_EMBEDDER": ccip,
                                              "LABEL_FEATURES": "tagger"})), TaggerFeatures)
    with pytest.raises(FeaturesError, match="LABEL_FEATURES=ccip needs IDENTITY_EMBEDDER"):
        extractor_for(Settings({"LABEL_FEATURES": "ccip"}))
    with pytest.raises(FeaturesError, match="known are auto, ccip, tagger, lite0"):
        extractor_for(Settings({"LABEL_FEATURES": "clip"}))


def test_a_model_learned_on_tagger_features_classifies_through_that_tagger_and_no_other(tmp_path):
    folder = build_tagger_folder(tmp_path / "wd14")
    extractor = TaggerFeatures(folder)
    red = [n % 2 == 1 for n in range(12)]
    model = LinearClassifier.fit(extractor(PICTURES[:8]), red[:8], ("red", "other"))
    model.save(tmp_path / "m.npz", {"features": extractor.description, "extractor": describe(extractor)})
    for n, image in enumerate(PICTURES):
        image.save(tmp_path / f"{n}.png")
    stage = Classify(tmp_path / "m.npz")  # as the crawl and `scrapy curate` run it: the card names the tagger
    results = stage.results(tmp_path, [f"{n}.png" for n in range(8, 12)])
    assert [r["label"] for r in results] == ["other", "red", "other", "red"] and stage.model.extractor.kind == "tagger"

    build_model(folder / "model.onnx", size=24)  # other weights in the tagger's place
    with pytest.raises(FeaturesError, match="now holds .* retrain it"):
        Classify(tmp_path / "m.npz").results(tmp_path, ["8.png"])
