"""The WD14-format tagger, on tiny ONNX models built here whose scores are known in advance.

The model averages each input channel over the picture (ReduceMean), multiplies by a fixed weight
matrix and adds a bias (MatMul, Add), then Sigmoid: tag t's score is exactly
``sigmoid(w_t . mean_bgr / 255 + b_t)`` over the preprocessed picture, so ``expected_scores``
computes it in numpy. The weights read the channels in BGR order, as WD14 models do.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.tagger import TaggerError
from models.taggers import load_tagger, tagger_version
from models.wd14 import WD14Tagger, preprocess_image, wd14_files

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
RED, BLUE, DIM_RED = (255, 0, 0), (0, 0, 255), (128, 0, 0)

# (name, WD14 category, weights on the mean R, G, B in 0..1, bias), in selected_tags.csv order
TAG_ROWS = [
    ("general", 9, (0.0, 0.0, 3.0), -1.0),  # blue: 0.88, red: 0.27
    ("sensitive", 9, (0.0, 0.0, 0.0), 0.0),  # 0.5 always: above 0.35, kept only when it is the best rating
    ("questionable", 9, (3.0, 0.0, 0.0), -1.0),  # red: 0.88
    ("explicit", 9, (0.0, 0.0, 0.0), -3.0),
    ("red_hair", 0, (10.0, 0.0, 0.0), -4.0),  # R=1: 0.998, R=0.5: 0.73, R=0: 0.018
    ("blue_hair", 0, (0.0, 0.0, 10.0), -4.0),
    ("green_hair", 0, (0.0, 10.0, 0.0), -4.0),
    ("char_red", 4, (6.0, 0.0, 0.0), -1.8),  # R=1: 0.985, R=0.5: 0.77 (between 0.35 and 0.85), R=0: 0.14
    ("char_blue", 4, (0.0, 0.0, 6.0), -1.8),
]
NAMES = [row[0] for row in TAG_ROWS]


def weight_matrix() -> tuple[np.ndarray, np.ndarray]:
    """(3 BGR channels x tags) weights on 0..255 means, and the biases."""
    rgb = np.array([row[2] for row in TAG_ROWS], dtype=np.float32).T  # (3 RGB, tags)
    return np.ascontiguousarray(rgb[::-1] / 255.0), np.array([row[3] for row in TAG_ROWS], dtype=np.float32)


def build_model(path: Path, batch: int | str = "batch_size", size: int = SIZE, outputs: int | None = None) -> Path:
    weights, bias = weight_matrix()
    if outputs is not None:  # a model whose output count differs from the CSV's rows
        weights, bias = np.resize(weights, (3, outputs)), np.resize(bias, outputs)
    count = weights.shape[1]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_1"], ["means"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["means", "weights"], ["logits_no_bias"]),
            helper.make_node("Add", ["logits_no_bias", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
        ],
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, count])],
        initializer=[
            helper.make_tensor("weights", TensorProto.FLOAT, weights.shape, weights.flatten().tolist()),
            helper.make_tensor("bias", TensorProto.FLOAT, bias.shape, bias.tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_tags(path: Path, rows=TAG_ROWS) -> Path:
    lines = ["tag_id,name,category,count"] + [f"{100 + i},{name},{category},{1000 - i}"
                                               for i, (name, category, *_) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_tagger_folder(folder: Path, **model_options) -> Path:
    build_model(folder / "model.onnx", **model_options)
    write_tags(folder / "selected_tags.csv")
    return folder


def expected_scores(mean_rgb: tuple[float, float, float]) -> dict[str, float]:
    logits = {name: float(np.dot(w, mean_rgb) + b) for name, _, w, b in TAG_ROWS}
    return {name: 1.0 / (1.0 + np.exp(-logit)) for name, logit in logits.items()}


def solid(color, size=(40, 40)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_tagger_folder(tmp_path_factory.mktemp("wd14") / "wd-tiny-tagger-v3")


@pytest.fixture(scope="module")
def tagger(folder) -> WD14Tagger:
    return WD14Tagger.load(folder)


class CountingSession:
    """The real session, counting its ``run`` calls and the batch sizes it was given."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, outputs, feeds):
        self.batches.append(len(next(iter(feeds.values()))))
        return self.session.run(outputs, feeds)


def test_load_reads_the_folder(tagger, folder):
    assert tagger.tags == tuple(NAMES)
    assert tagger.tag_categories == ("Rating",) * 4 + ("General",) * 3 + ("Character",) * 2
    assert (tagger.width, tagger.height, tagger.fixed_batch) == (SIZE, SIZE, None)
    assert tagger.version.startswith("wd14-") and len(tagger.version) == len("wd14-") + 12
    assert tagger.category_thresholds == {"General": 0.35, "Character": 0.85}
    assert tagger.session.get_providers()[-1] == "CPUExecutionProvider"
    assert tagger_version(folder) == tagger.version  # what scrapy curate compares, without loading


def test_exact_tags_for_red_and_blue_pictures(tagger):
    red, blue = tagger.predict([solid(RED), solid(BLUE)])
    assert list(red) == ["questionable", "red_hair", "char_red"]  # CSV order
    assert list(blue) == ["general", "blue_hair", "char_blue"]
    expected = expected_scores((1.0, 0.0, 0.0))
    assert red == pytest.approx({tag: expected[tag] for tag in red}, abs=1e-6)


def test_general_at_0_35_and_character_at_0_85(tagger):
    (dim,) = tagger.predict([solid(DIM_RED)])
    scores = expected_scores((128 / 255, 0.0, 0.0))
    assert 0.35 <= scores["red_hair"] < 0.85 and 0.35 <= scores["char_red"] < 0.85
    assert "red_hair" in dim and "char_red" not in dim  # same range, different categories
    looser = WD14Tagger.load(tagger.model_path, category_thresholds={"character": scores["char_red"] - 1e-4})
    assert "char_red" in looser.predict([solid(DIM_RED)])[0]
    stricter = WD14Tagger.load(tagger.model_path, category_thresholds={"General": scores["red_hair"] + 1e-4})
    assert "red_hair" not in stricter.predict([solid(DIM_RED)])[0]


def test_only_the_best_rating_is_kept(tagger):
    red, blue, green = tagger.predict([solid(RED), solid(BLUE), solid((0, 255, 0))])
    ratings = {"general", "sensitive", "questionable", "explicit"}
    assert ratings & set(red) == {"questionable"}  # sensitive (0.5) clears 0.35 but is not the best
    assert ratings & set(blue) == {"general"}
    assert ratings & set(green) == {"sensitive"}  # the best, whatever its score
    assert green["sensitive"] == pytest.approx(0.5)


def test_rating_thresholds_and_unknown_categories_are_refused(folder):
    with pytest.raises(TaggerError, match="rating"):
        WD14Tagger.load(folder, category_thresholds={"Rating": 0.5})
    with pytest.raises(TaggerError, match="'System'.*Character, General"):
        WD14Tagger.load(folder, category_thresholds={"System": 0.5})


def test_channels_are_bgr(tagger):
    pixels = tagger.preprocess(solid(RED))
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.float32
    assert pixels[0, 0].tolist() == [0.0, 0.0, 255.0]  # B, G, R; 0..255, not normalised
    # the model reads R from channel 2: fed RGB, a red picture would come out blue
    rgb = np.stack([np.asarray(solid(RED).resize((SIZE, SIZE)), dtype=np.float32)])
    as_rgb = tagger.session.run(None, {tagger.input_name: rgb})[0][0]
    assert as_rgb[NAMES.index("blue_hair")] > 0.99 and as_rgb[NAMES.index("red_hair")] < 0.02
    assert "red_hair" in tagger.predict([solid(RED)])[0]


def test_non_square_transparent_picture_is_padded_with_white():
    """40x20: left half transparent, right half opaque red; padded to 40x40 (10 white rows above and below)."""
    rgba = np.zeros((20, 40, 4), dtype=np.uint8)
    rgba[:, 20:] = (255, 0, 0, 255)
    pixels = preprocess_image(Image.fromarray(rgba), SIZE, SIZE)
    white, red_bgr = [255.0] * 3, [0.0, 0.0, 255.0]
    assert pixels[:6].reshape(-1, 3).tolist() == [white] * (6 * SIZE)  # padding rows, top
    assert pixels[-6:].reshape(-1, 3).tolist() == [white] * (6 * SIZE)  # bottom
    assert pixels[16, :14].tolist() == [white] * 14  # transparent: white, not black
    assert pixels[16, 18:].tolist() == [red_bgr] * (SIZE - 18)
    # a tall picture pads the columns the same way
    tall = preprocess_image(solid(BLUE, size=(20, 40)), SIZE, SIZE)
    assert tall[:, :6].reshape(-1, 3).tolist() == [white] * (6 * SIZE)
    assert tall[16, 16].tolist() == [255.0, 0.0, 0.0]


def test_batches_one_call_per_batch_and_keep_order(folder):
    tagger = WD14Tagger.load(folder)
    tagger.session = CountingSession(tagger.session)
    pictures = [solid(RED), solid(BLUE), solid(DIM_RED), solid((0, 255, 0)), solid(BLUE, size=(30, 50))]
    batched = tagger.predict_scores(pictures, batch_size=2)
    assert tagger.session.batches == [2, 2, 1]
    one_by_one = np.concatenate([tagger.predict_scores([p]) for p in pictures])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6)
    hair = [NAMES.index(name) for name in ("red_hair", "blue_hair", "green_hair")]
    assert [NAMES[hair[i]] for i in batched[:, hair].argmax(axis=1)] == [
        "red_hair", "blue_hair", "red_hair", "green_hair", "blue_hair"]


@pytest.mark.parametrize("batch", [1, 4])
def test_a_fixed_batch_model_still_works(tmp_path, tagger, batch):
    fixed = WD14Tagger.load(build_tagger_folder(tmp_path / "fixed", batch=batch))
    fixed.session = CountingSession(fixed.session)
    pictures = [solid(RED), solid(BLUE), solid(DIM_RED), solid((0, 255, 0)), solid(RED)]
    assert fixed.fixed_batch == batch
    assert fixed.predict(pictures, batch_size=32) == tagger.predict(pictures)
    assert fixed.session.batches == ([1] * 5 if batch == 1 else [4, 4])  # the last batch filled up


def test_a_model_onnx_path_beside_its_csv_loads(folder):
    assert wd14_files(folder / "model.onnx") == (folder / "model.onnx", folder / "selected_tags.csv")
    assert load_tagger(folder / "model.onnx").version == load_tagger(folder).version


def test_broken_model_names_the_file(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"this is not a protobuf" * 10)
    write_tags(folder / "selected_tags.csv")
    with pytest.raises(TaggerError, match=r"broken/model\.onnx: onnxruntime cannot load it"):
        load_tagger(folder)


def test_csv_rows_must_match_the_outputs(tmp_path):
    folder = tmp_path / "short"
    build_model(folder / "model.onnx", outputs=len(TAG_ROWS) + 2)
    write_tags(folder / "selected_tags.csv")
    with pytest.raises(TaggerError, match=r"11 outputs but .*short/selected_tags\.csv lists 9 tags"):
        load_tagger(folder)


@pytest.mark.parametrize("missing", ["model.onnx", "selected_tags.csv"])
def test_missing_half_names_the_file(folder, tmp_path, missing):
    other = "selected_tags.csv" if missing == "model.onnx" else "model.onnx"
    (tmp_path / other).write_bytes((folder / other).read_bytes())
    with pytest.raises(TaggerError, match=f"missing {missing}"):
        load_tagger(tmp_path)


def test_bad_csv_rows_name_the_file_and_line(folder, tmp_path):
    (tmp_path / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
    (tmp_path / "selected_tags.csv").write_text("tag_id,name,category,count\n1,red_hair,0,5\n2,odd,7,5\n")
    with pytest.raises(TaggerError, match=r"selected_tags\.csv, line 3: .*unknown category 7"):
        load_tagger(tmp_path)


def test_version_changes_with_either_file(tmp_path, folder, tagger):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.onnx", "selected_tags.csv"):
        (copy / name).write_bytes((folder / name).read_bytes())
    assert tagger_version(copy) == tagger.version  # the content, not the folder's name
    write_tags(copy / "selected_tags.csv", [(f"x_{n}", c, w, b) for n, c, w, b in TAG_ROWS])
    assert tagger_version(copy) != tagger.version


def test_the_crawl_stage_gives_tag_rows(folder):
    """pipelines/tagger.py picks the WD14 loader from TAGGER_PROJECT and gives the catalogue's rows."""
    from scrapy.utils.test import get_crawler

    from pipelines.tagger import TaggerPipeline
    from tests.conftest import project_settings

    stage = TaggerPipeline(get_crawler(settings_dict=project_settings(TAGGER_PROJECT=str(folder))))
    (red,) = stage.stage.predict([solid(RED)])
    assert [(t["tag"], t["category"], t["model"]) for t in red] == [
        ("red_hair", "General", stage.model.version), ("char_red", "Character", stage.model.version),
        ("questionable", "Rating", stage.model.version)]  # by score
    stage.thread.shutdown()


def test_scrapy_curate_writes_image_tags(folder, tmp_path):
    library, output = tmp_path / "library", tmp_path / "out"
    library.mkdir()
    solid(RED, size=(48, 40)).save(library / "red.png")
    solid(BLUE, size=(40, 48)).save(library / "blue.jpg", quality=95)
    rules = json.dumps([{"action": "drop", "if": "tag", "any": ["blue_hair"]}])
    done = subprocess.run(
        [sys.executable, "-m", "scrapy", "curate", str(library), "--stages", "tag",
         "-s", f"TAGGER_PROJECT={folder}", "-s", f"CURATE_RULES={rules}",
         "-s", f"OUTPUT_DIR={output}", "-s", "IMAGE_WORKERS=0"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with closing(sqlite3.connect(output / "catalog.db")) as conn:
        rows = conn.execute(
            "SELECT images.path, tag, category, model FROM image_tags JOIN images USING (artwork_id, page) "
            "ORDER BY images.path, score DESC").fetchall()
        statuses = dict(conn.execute("SELECT path, status FROM images").fetchall())
    version = tagger_version(folder)
    by_picture: dict[str, list] = {}
    for path, tag, category, model in rows:
        assert model == version
        by_picture.setdefault(Path(path).name, []).append((tag, category))
    assert by_picture == {
        "red.png": [("red_hair", "General"), ("char_red", "Character"), ("questionable", "Rating")],
        "blue.jpg": [("blue_hair", "General"), ("char_blue", "Character"), ("general", "Rating")],
    }
    assert statuses == {str(library / "red.png"): "kept", str(library / "blue.jpg"): "dropped"}
