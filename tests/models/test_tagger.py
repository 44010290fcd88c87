"""The DeepDanbooru-format tagger, on tiny project folders whose scores are known in advance."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.tagger import DeepDanbooruTagger, TaggerError, fit_size, preprocess_image
from tests.models.tagger_fixtures import (
    CHARACTER,
    GENERAL,
    SYSTEM_TAGS,
    build_project,
    deepdanbooru_preprocess,
    expected_scores,
)

REPO = Path(__file__).resolve().parents[2]
TAGS = [*GENERAL, *CHARACTER, *SYSTEM_TAGS]
RED, BLUE = (255, 0, 0), (0, 0, 255)


def solid(color, size=(40, 40), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def half_red_half_blue() -> Image.Image:
    """64x64, left half red, right half blue: mean R = mean B = 0.5 after the 2x area reduction."""
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[:, :32] = RED
    array[:, 32:] = BLUE
    return Image.fromarray(array)


@pytest.fixture(scope="module")
def keras_project(tmp_path_factory) -> Path:
    return build_project(tmp_path_factory.mktemp("keras") / "project", fmt="keras")


@pytest.fixture(scope="module")
def tagger(keras_project) -> DeepDanbooruTagger:
    return DeepDanbooruTagger.load(keras_project)


def test_load_reads_the_project_folder(tagger):
    assert tagger.tags == tuple(TAGS)
    assert [(c.name, c.start, c.end) for c in tagger.categories] == [
        ("General", 0, 3), ("Character", 3, 5), ("System", 5, 8)]
    assert (tagger.width, tagger.height, tagger.loaded_with) == (32, 32, "keras")
    assert tagger.version.startswith("resnet_custom_v3-") and len(tagger.version.split("-")[-1]) == 12


def test_exact_tags_for_red_blue_and_mixed_pictures(tagger):
    red, blue, mixed = tagger.predict([solid(RED), solid(BLUE), half_red_half_blue()])
    assert set(red) == {"red", "char_red", "rating:safe"}
    assert set(blue) == {"blue", "char_blue", "rating:safe"}
    assert set(mixed) == {"red", "blue", "char_red", "char_blue", "rating:safe"}
    # the scores are the hand-set formula's, in tags.txt order
    np.testing.assert_allclose(list(red.values()), expected_scores((1, 0, 0), TAGS)[[0, 3, 5]], atol=1e-5)
    np.testing.assert_allclose(
        tagger.predict_scores([half_red_half_blue()])[0], expected_scores((0.5, 0, 0.5), TAGS), atol=1e-5)
    assert list(mixed) == ["red", "blue", "char_red", "char_blue", "rating:safe"]


def test_category_thresholds(tagger):
    images = [solid(RED), half_red_half_blue()]
    # mixed: red/blue 0.73, char_* 0.77; questionable 0.27 (System) always
    strict = replace(tagger, category_thresholds={"Character": 0.85})
    red, mixed = strict.predict(images)
    assert set(red) == {"red", "char_red", "rating:safe"}  # char_red 0.985 >= 0.85
    assert set(mixed) == {"red", "blue", "rating:safe"}  # char_* 0.77 < 0.85
    loose = replace(tagger, category_thresholds={"General": 0.75, "System": 0.25})
    red, mixed = loose.predict(images)
    assert set(red) == {"red", "char_red", "rating:safe", "rating:questionable"}
    assert set(mixed) == {"char_red", "char_blue", "rating:safe", "rating:questionable"}  # red/blue 0.73 < 0.75
    low = replace(tagger, threshold=0.02)  # global threshold, no per-category one
    assert set(low.predict([solid(RED)])[0]) == set(TAGS) - {"green", "blue"}  # 0.018 each; explicit 0.047
    with pytest.raises(TaggerError, match="Copyright"):
        DeepDanbooruTagger.load(Path(tagger.model_path).parent, category_thresholds={"Copyright": 0.5})


def test_preprocess_wide_picture_is_fitted_centred_and_edge_padded(tagger):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (16, 64, 3), dtype=np.uint8)  # 4:1 -> 32x8 inside 32x32
    out = tagger.preprocess(Image.fromarray(pixels))
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # area averaging: each output pixel is the mean of a 2x2 block
    expected = pixels.reshape(8, 2, 32, 2, 3).astype(np.float64).mean(axis=(1, 3)) / 255.0
    np.testing.assert_allclose(out[12:20], expected, atol=1e-6)
    for row in range(12):  # rows above and below repeat the picture's first and last rows exactly
        np.testing.assert_array_equal(out[row], out[12])
    for row in range(20, 32):
        np.testing.assert_array_equal(out[row], out[19])
    assert not np.array_equal(out[12], out[19])


def test_preprocess_tall_picture_pads_the_columns(tagger):
    pixels = np.random.default_rng(4).integers(0, 256, (64, 16, 3), dtype=np.uint8)
    out = tagger.preprocess(Image.fromarray(pixels))
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out[:, :12], np.repeat(out[:, 12:13], 12, axis=1))
    np.testing.assert_array_equal(out[:, 20:], np.repeat(out[:, 19:20], 12, axis=1))


# (width, height). TF rounds the fitted size where floor would lose a pixel (401x199 -> 32x16 in 32x32,
# 731x257 -> 48x17 in 48x32, 13x7 -> 512x276); smaller than the box means AREA enlarging; an odd
# margin puts the picture half a pixel off the grid
ODD_SIZES = [(257, 731), (401, 199), (731, 257), (199, 401), (13, 7), (3, 5), (1, 40), (40, 1), (33, 32), (32, 32)]


def size_id(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def tf_fitted_size(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    import tensorflow as tf

    fitted = tf.image.resize(np.zeros((height, width, 3), np.uint8), (box_height, box_width), method="area",
                             preserve_aspect_ratio=True)
    return fitted.shape[1], fitted.shape[0]


@pytest.mark.parametrize("box", [(32, 32), (299, 299), (512, 512), (48, 32)], ids=size_id)
@pytest.mark.parametrize("size", ODD_SIZES + [(1, 1), (1000, 999), (999, 1000)], ids=size_id)
def test_fit_size_is_tf_resize_preserve_aspect_ratio(size, box):
    assert fit_size(*size, *box) == tf_fitted_size(*size, *box)


def test_fit_size_rounds_where_tf_would_ask_for_zero_pixels():
    """TF fails on a 1x731 picture (a 0-pixel side); we keep one pixel row or column."""
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError):
        tf_fitted_size(1, 731, 32, 32)
    assert fit_size(1, 731, 32, 32) == (1, 32) and fit_size(731, 1, 32, 32) == (32, 1)
    assert fit_size(1, 63, 32, 32) == (1, 32)  # 0.508 rounds up, like TF


@pytest.mark.parametrize("box", [(32, 32), (48, 32)], ids=size_id)
@pytest.mark.parametrize("size", ODD_SIZES, ids=size_id)
def test_preprocess_matches_deepdanbooru_load_image_for_evaluate(size, box):
    pixels = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    ours = preprocess_image(Image.fromarray(pixels), *box)
    assert ours.shape == (box[1], box[0], 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, deepdanbooru_preprocess(pixels, *box), atol=2e-5)


def test_scores_match_deepdanbooru_on_odd_sizes(tagger):
    rng = np.random.default_rng(7)
    pixels = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in ODD_SIZES]
    # a bright top-left corner: where the picture lands and how the margins repeat it moves the mean
    for array in pixels:
        array[: max(1, array.shape[0] // 3), : max(1, array.shape[1] // 3)] = (255, 40, 0)
    reference = tagger.model.predict(np.stack([deepdanbooru_preprocess(p, 32, 32) for p in pixels]), verbose=0)
    ours = tagger.predict_scores([Image.fromarray(p) for p in pixels])
    np.testing.assert_allclose(ours, reference, atol=1e-3)


def test_transparent_pixels_become_white(tagger):
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 0, 255, 255), (0, 0, 16, 32))  # left half opaque blue
    out = tagger.preprocess(image)
    np.testing.assert_array_equal(out[:, 16:], np.ones((32, 16, 3), dtype=np.float32))
    np.testing.assert_array_equal(out[:, :16], np.broadcast_to(np.float32([0, 0, 1]), (32, 16, 3)))
    assert tagger.preprocess(Image.new("LA", (8, 8), (0, 0))).min() == 1.0  # gray + alpha too


def test_batching_keeps_order_and_calls_the_model_once_per_batch(tagger):
    colors = [(int(i * 255 / 69), 0, 255 - int(i * 255 / 69)) for i in range(70)]  # red ramps up, blue down
    images = [solid(color, (20, 20)) for color in colors]
    calls: list[int] = []
    model = tagger.model

    def counting(batch, training=False):
        calls.append(len(batch))
        return model(batch, training=training)

    counted = replace(tagger, model=counting)
    scores = counted.predict_scores(images, batch_size=32)
    assert calls == [32, 32, 6]
    results = counted.predict(images, batch_size=32)
    assert len(results) == 70 and calls[3:] == [32, 32, 6]
    for (r, _, b), row, result in zip(colors, scores, results):
        np.testing.assert_allclose(row, expected_scores((r / 255, 0, b / 255), TAGS), atol=1e-5)
        assert ("red" in result) == (row[0] >= 0.5) and ("blue" in result) == (row[2] >= 0.5)
    assert "red" not in results[0] and "blue" in results[0] and "red" in results[-1] and "blue" not in results[-1]
    assert counted.predict([]) == [] and counted.predict_scores([]).shape == (0, len(TAGS))


def test_keras2_h5_with_tfoplambda_loads_through_tf_keras(tmp_path, tagger, caplog):
    pytest.importorskip("tf_keras")
    project = build_project(tmp_path / "k2", fmt="keras2-h5")
    with caplog.at_level(logging.WARNING, logger="models.tagger"):
        old = DeepDanbooruTagger.load(project)
    warnings = [r for r in caplog.records if r.name == "models.tagger"]
    assert len(warnings) == 1
    assert "TFOpLambda" in warnings[0].getMessage() and "tf_keras (Keras 2" in warnings[0].getMessage()
    assert old.loaded_with == "tf_keras"
    images = [solid(RED), solid(BLUE), half_red_half_blue(), solid((30, 200, 90), (50, 20))]
    assert [set(r) for r in old.predict(images)] == [set(r) for r in tagger.predict(images)]
    np.testing.assert_allclose(old.predict_scores(images), tagger.predict_scores(images), atol=1e-5)


def test_keras2_h5_without_tf_keras_names_the_fix(tmp_path, monkeypatch):
    project = build_project(tmp_path / "k2", fmt="keras2-h5")
    monkeypatch.setitem(sys.modules, "tf_keras", None)  # import tf_keras -> ImportError
    with pytest.raises(TaggerError, match=r"TFOpLambda.*pip install tf-keras==2\.21\.0"):
        DeepDanbooruTagger.load(project)


def test_keras3_h5_and_a_lone_model_file_load_without_fallback(tmp_path, caplog):
    project = build_project(tmp_path / "h5", fmt="h5")
    (project / "model-resnet_custom_v3.h5").rename(project / "weights-e28.h5")  # not the name project.json gives
    with caplog.at_level(logging.WARNING, logger="models.tagger"):
        tagger = DeepDanbooruTagger.load(project)
    assert tagger.loaded_with == "keras" and tagger.model_path.name == "weights-e28.h5"
    assert not [r for r in caplog.records if r.name == "models.tagger"]
    assert set(tagger.predict([solid(BLUE)])[0]) == {"blue", "char_blue", "rating:safe"}


@pytest.mark.parametrize("missing", ["project.json", "tags.txt", "model-resnet_custom_v3.keras"])
def test_missing_files_name_the_file(keras_project, tmp_path, missing):
    project = tmp_path / "p"
    project.mkdir()
    for path in keras_project.iterdir():
        if path.name != missing:
            (project / path.name).write_bytes(path.read_bytes())
    with pytest.raises(TaggerError, match=missing.replace(".", r"\.")):
        DeepDanbooruTagger.load(project)
    with pytest.raises(TaggerError, match="not a folder"):
        DeepDanbooruTagger.load(tmp_path / "nowhere")


def test_categories_without_categories_json(keras_project, tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    for path in keras_project.iterdir():
        if path.name != "categories.json":
            (project / path.name).write_bytes(path.read_bytes())
    tagger = DeepDanbooruTagger.load(project)
    assert [(c.name, c.start, c.end) for c in tagger.categories] == [
        ("General", 0, 3), ("Character", 3, 5), ("System", 5, 8)]
    (project / "tags-general.txt").unlink()
    (project / "tags-character.txt").unlink()
    assert [(c.name, c.start, c.end) for c in DeepDanbooruTagger.load(project).categories] == [("General", 0, 8)]


def test_mismatched_tags_and_outputs_are_refused(keras_project, tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    for path in keras_project.iterdir():
        (project / path.name).write_bytes(path.read_bytes())
    (project / "tags.txt").write_text("\n".join(TAGS[:-1]) + "\n\n   \n")  # blank lines do not count
    with pytest.raises(TaggerError, match="8 outputs but tags.txt lists 7"):
        DeepDanbooruTagger.load(project)


def test_version_changes_with_the_weights_file(tmp_path, tagger, keras_project):
    assert DeepDanbooruTagger.load(keras_project).version == tagger.version  # same file, same version
    other = DeepDanbooruTagger.load(build_project(tmp_path / "other", fmt="keras", scale=2.0))
    assert other.version != tagger.version and other.version.startswith("resnet_custom_v3-")
    assert set(other.predict([solid(RED)])[0]) == {"red", "char_red", "rating:safe"}


TORCH_SCRIPT = """
import json, os, sys
import keras
from PIL import Image
from models.tagger import DeepDanbooruTagger
project, paths = sys.argv[1], sys.argv[2:]
tagger = DeepDanbooruTagger.load(project)
scores = tagger.predict_scores([Image.open(p) for p in paths], batch_size=2)
print("RESULT " + json.dumps({"backend": keras.backend.backend(), "scores": scores.tolist()}))
"""


def test_torch_backend_gives_the_same_scores(tmp_path, tagger, keras_project):
    pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    paths = []
    for index, size in enumerate([(40, 40), (64, 16), (16, 50)]):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", TORCH_SCRIPT, str(keras_project), *map(str, paths)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["backend"] == "torch"
    tf_scores = tagger.predict_scores([Image.open(p) for p in paths])
    np.testing.assert_allclose(np.array(result["scores"]), tf_scores, atol=1e-5)
