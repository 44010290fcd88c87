"""The character classifier, trained once on a generated two-class set ("mona" = a purple blob).

Pictures are drawn here: varied pastel backgrounds and non-purple distractor shapes in both
classes, plus a purple ellipse in "mona"; half are PNGs with a transparent border, half JPEGs.
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from models import classifier as clf
from models.classifier import CharacterClassifier, split_files, split_value, target_class

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("mona", "other")
IMAGE_SIZE = 32


def hsv(h: float, s: float, v: float, alpha: int = 255) -> tuple[int, int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255), alpha


def not_purple_hue(rng: np.random.Generator) -> float:
    """A hue in red..cyan-blue, well away from purple/magenta (0.70..0.92)."""
    return float(rng.uniform(-0.05, 0.58))


def synthetic_picture(rng: np.random.Generator, purple: bool, size: int = 56, rgba: bool = False) -> Image.Image:
    image = Image.new("RGBA", (size, size), hsv(not_purple_hue(rng), rng.uniform(0, 0.35), rng.uniform(0.75, 1)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):  # distractors in both classes
        x, y = rng.integers(0, size - 10, 2)
        w, h = rng.integers(8, size // 2, 2)
        color = hsv(not_purple_hue(rng), rng.uniform(0.4, 1), rng.uniform(0.4, 1))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x, y, x + w, y + h), fill=color)
    if purple:
        w, h = rng.integers(size * 35 // 100, size * 60 // 100, 2)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        color = hsv(rng.uniform(0.74, 0.82), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.85))
        draw.ellipse((x, y, x + w, y + h), fill=color)
    if rgba:  # transparent border: white once loaded
        alpha = Image.new("L", (size, size), 0)
        ImageDraw.Draw(alpha).rectangle((4, 4, size - 5, size - 5), fill=255)
        image.putalpha(alpha)
        return image
    return image.convert("RGB")


def write_dataset(root: Path, per_class: int, seed: int, start: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(start, start + per_class):
            rgba = index % 2 == 0
            picture = synthetic_picture(rng, purple=name == "mona", size=int(rng.integers(48, 65)), rgba=rgba)
            picture.save(root / name / (f"{index:03d}.png" if rgba else f"{index:03d}.jpg"), quality=90)
    return root


def held_out(count: int, seed: int) -> tuple[list[Image.Image], list[str]]:
    rng = np.random.default_rng(seed)
    labels = [CLASSES[i % 2] for i in range(count)]
    return [synthetic_picture(rng, label == "mona", 56, rgba=i % 3 == 0) for i, label in enumerate(labels)], labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier")
    data = write_dataset(root / "data", per_class=80, seed=1)
    result = clf.train(data, root / "out", image_size=IMAGE_SIZE, epochs=12, batch_size=16, patience=4, progress=False)
    return result


@pytest.fixture(scope="module")
def model(trained):
    return CharacterClassifier.load(trained.model_path)


def test_training_reaches_90_percent_and_writes_everything(trained):
    out = trained.model_path.parent
    for name in ("classifier.keras", "classifier.json", "history.png", "confusion.png", "confusion.json"):
        assert (out / name).is_file(), name
    card = json.loads(trained.card_path.read_text())
    assert card == trained.card
    assert card["metrics"]["val_accuracy"] >= 0.90, card["metrics"]
    assert card["classes"] == list(CLASSES) and card["target"] == "mona"
    assert card["image_size"] == IMAGE_SIZE and card["threshold"] == 0.5 and card["backbone"] is None
    for key in ("train_accuracy", "train_loss", "val_accuracy", "val_loss"):
        assert isinstance(card["metrics"][key], float)
    assert set(card["metrics"]["val_per_class"]) == set(CLASSES)
    assert {"precision", "recall", "support"} <= set(card["metrics"]["val_per_class"]["mona"])
    assert len(card["data"]["sha256"]) == 64 and card["data"]["images"] == 160
    assert card["data"]["train"] + card["data"]["val"] == 160
    assert card["keras_version"] and card["keras_backend"] == "tensorflow"
    assert card["created"].endswith("+00:00")
    assert 1 <= card["training"]["epochs_run"] <= 12
    for plot in ("history.png", "confusion.png"):
        with Image.open(out / plot) as image:
            image.verify()
    confusion = json.loads((out / "confusion.json").read_text())
    assert confusion["classes"] == list(CLASSES)
    assert sum(map(sum, confusion["matrix"])) == card["data"]["val"]
    print(f"\ntraining: {card['training']['seconds']} s, {card['training']['epochs_run']} epochs, "
          f"val accuracy {card['metrics']['val_accuracy']:.3f}")


def test_load_reads_the_card(model, trained):
    assert model.classes == CLASSES and model.target == "mona" and model.image_size == IMAGE_SIZE
    assert model.threshold == 0.5
    assert model.version == f"classifier-{clf.file_sha256(trained.model_path)[:12]}"


def test_preprocess_flattens_on_white_and_pads_to_a_square(model):
    image = Image.new("RGBA", (20, 40), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 20, 40))
    out = model.preprocess(image)
    assert out.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and out.dtype == np.float32
    assert out.max() == 255.0  # 0..255: the model rescales itself
    np.testing.assert_array_equal(out[:, 0], 255.0)  # padding columns of a tall picture are white
    np.testing.assert_allclose(out[IMAGE_SIZE // 2, IMAGE_SIZE // 2], [255, 0, 0], atol=1)
    assert model.preprocess(Image.new("LA", (8, 8), (0, 0))).min() == 255.0  # transparent gray -> white


def test_predict_held_out_pictures_in_order(model):
    images, labels = held_out(40, seed=99)
    predictions = model.predict(images, batch_size=16)
    correct = sum(p.label == label for p, label in zip(predictions, labels))
    assert correct >= 0.9 * len(labels), correct
    singles = [model.predict([image])[0] for image in images[:5]]
    for batched, single in zip(predictions, singles):  # same picture, same place
        assert batched.label == single.label
        np.testing.assert_allclose(batched.target_score, single.target_score, atol=1e-5)
    for p in predictions:
        assert set(p.scores) == set(CLASSES) and abs(sum(p.scores.values()) - 1) < 1e-4
        assert p.confidence == p.scores[p.label] and p.target_score == p.scores["mona"]


def test_one_model_call_per_batch(model):
    images, _ = held_out(70, seed=5)
    calls: list[int] = []

    def counting(batch, training=False):
        calls.append(len(batch))
        return model.model(batch, training=training)

    predictions = replace(model, model=counting).predict(images, batch_size=32)
    assert calls == [32, 32, 6] and len(predictions) == 70
    assert model.predict([]) == []


def test_threshold_applies_to_the_target(model):
    images, _ = held_out(10, seed=7)
    never = replace(model, threshold=1.01).predict(images)
    assert all(p.label == "other" for p in never)
    always = replace(model, threshold=0.0).predict(images)
    assert all(p.label == "mona" for p in always)


def test_evaluate_matches_predict(model, trained, tmp_path):
    data = write_dataset(tmp_path / "eval", per_class=12, seed=123)
    (tmp_path / "eval" / "unsorted").mkdir()  # not a class: ignored
    result = clf.evaluate(trained.model_path, data)
    files = sorted(data.glob("*/*.*"))
    predictions = model.predict([clf.load_image(p) for p in files])
    expected = np.mean([p.label == path.parent.name for p, path in zip(predictions, files)])
    assert result["images"] == 24 and result["accuracy"] == pytest.approx(expected)
    assert result["accuracy"] >= 0.9
    assert sum(map(sum, result["confusion"])) == 24 and set(result["per_class"]) == set(CLASSES)


def scrapy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scrapy", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def test_the_command_predicts_evaluates_and_refuses_a_broken_model(trained, tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    images, labels = held_out(5, seed=3)
    for index, image in enumerate(images):
        image.save(folder / f"{index}.png")
    (folder / "broken.png").write_bytes(b"not a picture")
    done = scrapy("classifier", "predict", str(trained.model_path), str(folder), "--batch-size", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(folder / f"{i}.png") for i in range(5)]
    assert all(line.split("\t")[1] in CLASSES and 0 <= float(line.split("\t")[2]) <= 1 for line in lines)
    data = write_dataset(tmp_path / "eval", per_class=3, seed=8)
    done = scrapy("classifier", "evaluate", str(trained.model_path), str(data))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["images"] == 6
    (tmp_path / "broken.keras").write_bytes(b"not a model")
    (tmp_path / "broken.json").write_bytes(trained.model_path.with_suffix(".json").read_bytes())
    done = scrapy("classifier", "evaluate", str(tmp_path / "broken.keras"), str(data))
    assert done.returncode == 2 and "broken.keras" in done.stderr, done.stderr[-2000:]


def test_split_is_deterministic_and_stable_when_files_are_added():
    files = [(f"{name}/{i:03d}.png", name) for name in CLASSES for i in range(100)]
    train, val = split_files(files)
    assert (train, val) == split_files(list(files))
    assert 20 <= len(val) <= 60 and not set(train) & set(val) and len(train) + len(val) == 200
    val_paths = {files[i][0] for i in val}
    more = files + [(f"mona/new{i}.jpg", "mona") for i in range(30)]
    _, val_more = split_files(more)
    assert {more[i][0] for i in val_more if i < len(files)} == val_paths
    reordered = list(reversed(files))
    assert {reordered[i][0] for i in split_files(reordered)[1]} == val_paths


def test_split_puts_every_class_in_validation():
    small = [name for name in (f"few/{i}.png" for i in range(200)) if split_value(name) >= clf.VAL_SHARE][:3]
    files = [(name, "few") for name in small] + [(f"many/{i}.png", "many") for i in range(50)]
    train, val = split_files(files)
    assert {files[i][1] for i in val} == {"few", "many"} and {files[i][1] for i in train} == {"few", "many"}


def test_target_class_and_data_hash(tmp_path):
    assert target_class(["mona", "other"]) == "mona"
    assert target_class(["negative", "others", "zhongli"]) == "zhongli"
    assert target_class(["other"]) == "other"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"12")
    before = clf.data_hash(tmp_path, ["a/x.png"])
    (tmp_path / "a" / "x.png").write_bytes(b"123")
    assert clf.data_hash(tmp_path, ["a/x.png"]) != before


def test_backbone_without_weights_falls_back_to_the_cnn(tmp_path, monkeypatch, caplog):
    import keras

    def offline(*args, **kwargs):  # what keras.utils.get_file raises without network
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5: None -- [Errno -3] "
            "Temporary failure in name resolution"
        )

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    data = write_dataset(tmp_path / "data", per_class=6, seed=2)
    with caplog.at_level(logging.WARNING, logger="models.classifier"):
        result = clf.train(data, tmp_path / "out", image_size=IMAGE_SIZE, epochs=1, backbone="MobileNetV2",
                           progress=False)
    lines = [r.getMessage() for r in caplog.records if "MobileNetV2" in r.getMessage()]
    assert len(lines) == 1 and "URL fetch failure" in lines[0] and "from-scratch CNN" in lines[0]
    assert result.card["backbone"] is None and result.card["backbone_requested"] == "MobileNetV2"
    with pytest.raises(ValueError, match="unsupported backbone"):
        clf.build_model(CLASSES, IMAGE_SIZE, "ResNet50")


TORCH_SCRIPT = """
import json, sys
import keras
from PIL import Image
from models.classifier import CharacterClassifier
model = CharacterClassifier.load(sys.argv[1])
predictions = model.predict([Image.open(p) for p in sys.argv[2:]], batch_size=4)
print("RESULT " + json.dumps({"backend": keras.backend.backend(),
                              "labels": [p.label for p in predictions],
                              "scores": [[p.scores[c] for c in model.classes] for p in predictions]}))
"""


def test_torch_backend_predicts_the_same(model, trained, tmp_path):
    pytest.importorskip("torch")
    images, _ = held_out(10, seed=42)
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"{index}.png")
        image.save(paths[-1])
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", TORCH_SCRIPT, str(trained.model_path), *map(str, paths)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert result["backend"] == "torch"
    tf_predictions = model.predict([Image.open(p) for p in paths])
    assert result["labels"] == [p.label for p in tf_predictions]
    tf_scores = [[p.scores[c] for c in model.classes] for p in tf_predictions]
    np.testing.assert_allclose(np.array(result["scores"]), np.array(tf_scores), atol=1e-4)
