"""The pretrained-YOLO face detector reads both ONNX output layouts, picks the face class by its
metadata name, merges overlaps, and maps boxes back through its resizing to picture pixels.

The ONNX models are built here with onnx.helper in ultralytics' layout. Instead of a trained net,
each finds the one pure red square in its input (its centre and the square root of its area), so
where the box lands says whether the resize and the mapping back are right. Around that box it
reports an overlapping duplicate with a lower score and a far box whose face score is low, whose
"hand" score is high: NMS, the threshold and the class choice each decide a box.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw

from models.face_yolo import YoloFaceDetector, YoloModelError, class_names
from models.faces import detect_faces

REPO = Path(__file__).resolve().parents[2]

#             class 0 ("hand"), class 1 ("face") scores of each box
BOX_SCORES = [(0.0, 0.9), (0.0, 0.8), (0.95, 0.1)]
OFFSETS = [(0, 0), (4, 0), (160, 0)]  # input px: the duplicate overlaps the first with IoU ~0.8


def constant(name: str, value: numpy.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy.asarray(value), name)


def red_square_finder(path, *, end_to_end: bool = False, size: tuple[int, int] | None = None,
                      names: str | None = "{0: 'hand', 1: 'face'}") -> None:
    """A YOLO-shaped ONNX model (module docstring); ``size`` (w, h) fixes the input, else it is dynamic."""
    width, height = size or ("width", "height")
    initialisers = [
        constant("start_r", [0]), constant("start_g", [1]), constant("start_b", [2]), constant("end_b", [3]),
        constant("channel_axis", [1]), constant("half", numpy.float32(0.5)), constant("zero", numpy.float32(0.0)),
        constant("one", numpy.float32(1.0)), constant("axis_w", numpy.int64(3)), constant("axis_h", numpy.int64(2)),
        constant("vector", [1]), constant("tiles", [3, 1]),
        constant("offsets", numpy.array([[dx, dy, 0, 0] for dx, dy in OFFSETS], numpy.float32)),
        constant("batch_axis", [0]),
    ]
    nodes = [
        helper.make_node("Slice", ["images", "start_r", "start_g", "channel_axis"], ["r"]),
        helper.make_node("Slice", ["images", "start_g", "start_b", "channel_axis"], ["g"]),
        helper.make_node("Slice", ["images", "start_b", "end_b", "channel_axis"], ["b"]),
        helper.make_node("Sub", ["r", "g"], ["r_g"]),
        helper.make_node("Sub", ["r_g", "b"], ["redness"]),
        helper.make_node("Greater", ["redness", "half"], ["is_red"]),
        helper.make_node("Cast", ["is_red"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["r", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "one"], ["ones"]),
        helper.make_node("CumSum", ["ones", "axis_w"], ["x_count"]),
        helper.make_node("CumSum", ["ones", "axis_h"], ["y_count"]),
        helper.make_node("Sub", ["x_count", "half"], ["xs"]),  # pixel centres
        helper.make_node("Sub", ["y_count", "half"], ["ys"]),
        helper.make_node("ReduceSum", ["mask"], ["area"], keepdims=0),
        helper.make_node("Mul", ["mask", "xs"], ["mx"]),
        helper.make_node("Mul", ["mask", "ys"], ["my"]),
        helper.make_node("ReduceSum", ["mx"], ["sum_x"], keepdims=0),
        helper.make_node("ReduceSum", ["my"], ["sum_y"], keepdims=0),
        helper.make_node("Div", ["sum_x", "area"], ["cx"]),
        helper.make_node("Div", ["sum_y", "area"], ["cy"]),
        helper.make_node("Sqrt", ["area"], ["side"]),
        *[helper.make_node("Reshape", [v, "vector"], [f"{v}_1"]) for v in ("cx", "cy", "side")],
        helper.make_node("Concat", ["cx_1", "cy_1", "side_1", "side_1"], ["row"], axis=0),
        helper.make_node("Unsqueeze", ["row", "batch_axis"], ["row_2d"]),
        helper.make_node("Tile", ["row_2d", "tiles"], ["rows"]),
        helper.make_node("Add", ["rows", "offsets"], ["boxes"]),  # (3, 4) centre x, y, w, h
    ]
    if end_to_end:  # one score and one class a box: the face boxes as class 0, the far box as class 1
        initialisers += [
            # [cx, cy, w, h] @ corners = [x0, y0, x1, y1]
            constant("corners", numpy.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]], numpy.float32)),
            constant("e2e_scores", numpy.array([[0.9], [0.8], [0.95]], numpy.float32)),
            constant("e2e_classes", numpy.array([[0], [0], [1]], numpy.float32)),
        ]
        nodes += [
            helper.make_node("MatMul", ["boxes", "corners"], ["corner_boxes"]),
            helper.make_node("Concat", ["corner_boxes", "e2e_scores", "e2e_classes"], ["detections"], axis=1),
            helper.make_node("Unsqueeze", ["detections", "batch_axis"], ["output0"]),  # (1, 3, 6)
        ]
        out_shape = [1, 3, 6]
    else:
        initialisers.append(constant("scores", numpy.array(BOX_SCORES, numpy.float32)))
        nodes += [
            helper.make_node("Concat", ["boxes", "scores"], ["table"], axis=1),  # (3, 6)
            helper.make_node("Transpose", ["table"], ["columns"], perm=[1, 0]),
            helper.make_node("Unsqueeze", ["columns", "batch_axis"], ["output0"]),  # (1, 6, 3)
        ]
        out_shape = [1, 6, 3]
    graph = helper.make_graph(nodes, "red_square_finder",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)], initialisers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {"names": names, "stride": "32"})
    onnx.checker.check_model(model)
    onnx.save(model, path)


def picture_with_red_square(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    picture = Image.new("RGB", size, (250, 245, 240))
    ImageDraw.Draw(picture).rectangle((box[0], box[1], box[0] + box[2] - 1, box[1] + box[3] - 1), fill=(255, 0, 0))
    return picture


@pytest.mark.parametrize("end_to_end", [False, True])
def test_the_face_box_comes_back_in_picture_pixels_once(tmp_path, end_to_end):
    red_square_finder(tmp_path / "yolo.onnx", end_to_end=end_to_end,
                      names="{0: 'face', 1: 'hand'}" if end_to_end else "{0: 'hand', 1: 'face'}")
    detector = YoloFaceDetector(tmp_path / "yolo.onnx")
    assert detector.face_class == (0 if end_to_end else 1)
    # 500x300 runs at 512x320 (sides rounded up to 32); 2000x1200 is shrunk to 640x384
    for size, box in (((500, 300), (300, 100, 40, 40)), ((2000, 1200), (700, 500, 200, 200))):
        assert detector.input_size(*size) == ((512, 320) if size[0] == 500 else (640, 384))
        found = detector.boxes(picture_with_red_square(size, box))
        assert len(found) == 1, found  # the duplicate merged, the far box's face score too low (or a hand)
        x, y, w, h, score = found[0]
        assert score == pytest.approx(0.9)
        tolerance = 2 + box[2] * 0.04  # the stretch to 32-px sides makes the square a little oblong
        assert abs(x + w / 2 - (box[0] + box[2] / 2)) < 2 and abs(y + h / 2 - (box[1] + box[3] / 2)) < 2
        assert abs(w - box[2]) < tolerance and abs(h - box[3]) < tolerance


def test_a_fixed_input_is_filled_by_stretching_and_mapped_back(tmp_path):
    red_square_finder(tmp_path / "fixed.onnx", size=(320, 320))
    detector = YoloFaceDetector(tmp_path / "fixed.onnx")
    assert detector.input_size(500, 300) == (320, 320)
    [(x, y, w, h, _)] = detector.boxes(picture_with_red_square((500, 300), (300, 100, 40, 40)))
    assert abs(x + w / 2 - 320) < 2 and abs(y + h / 2 - 120) < 2


def test_without_names_class_zero_is_the_face_and_the_threshold_decides(tmp_path):
    red_square_finder(tmp_path / "plain.onnx", names=None)
    picture = picture_with_red_square((500, 300), (100, 100, 40, 40))
    detector = YoloFaceDetector(tmp_path / "plain.onnx")
    assert detector.face_class == 0 and detector.class_count is None
    # class 0 is the (0, 0, 0.95) column here: only the far box, 160 input px right of the square
    [(x, y, w, h, score)] = detector.boxes(picture)
    assert score == pytest.approx(0.95) and abs(x + w / 2 - (120 + 160 * 500 / 512)) < 2
    assert YoloFaceDetector(tmp_path / "plain.onnx", threshold=0.96).boxes(picture) == []


def test_it_joins_detect_faces_as_a_whole_picture_detector(tmp_path):
    red_square_finder(tmp_path / "yolo.onnx")
    [face] = detect_faces(picture_with_red_square((500, 300), (300, 100, 40, 40)), [YoloFaceDetector(tmp_path / "yolo.onnx")])
    assert face.sources == ("yolo",) and abs(face.x - 300) <= 2 and abs(face.y - 100) <= 2


def test_files_that_are_not_yolo_detectors_are_refused_with_the_reason(tmp_path):
    with pytest.raises(YoloModelError, match="no such face detector model file"):
        YoloFaceDetector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"<html>not a model</html>")
    with pytest.raises(YoloModelError, match="not a loadable ONNX model"):
        YoloFaceDetector(tmp_path / "junk.onnx")
    wrong_input = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["out"])], "nhwc",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 64, 64, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 64, 64, 3])]), opset_imports=[helper.make_opsetid("", 17)])
    wrong_input.ir_version = 8
    onnx.save(wrong_input, tmp_path / "nhwc.onnx")
    with pytest.raises(YoloModelError, match=r"expected one float32 input \(N, 3, H, W\)"):
        YoloFaceDetector(tmp_path / "nhwc.onnx")
    red_square_finder(tmp_path / "three_classes.onnx", names="{0: 'face', 1: 'hand', 2: 'foot'}")  # 6 rows, not 7
    with pytest.raises(YoloModelError, match="output rows 6 do not fit 4 box values plus 3 class scores"):
        YoloFaceDetector(tmp_path / "three_classes.onnx").boxes(picture_with_red_square((64, 64), (10, 10, 20, 20)))


def test_class_names_are_read_without_running_code():
    assert class_names({"names": "{0: 'face'}"}) == {0: "face"}
    assert class_names({"names": "['person', 'face']"}) == {0: "person", 1: "face"}
    assert class_names({"names": "__import__('os').system('true')"}) == {}
    assert class_names({}) == {}


def test_scrapy_faces_evaluate_measures_a_yolo_model_on_labelled_pictures(tmp_path):
    red_square_finder(tmp_path / "yolo.onnx")
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    for name, box in (("a", (300, 100, 40, 40)), ("b", (20, 150, 60, 60))):
        picture_with_red_square((500, 300), box).save(labelled / f"{name}.png")
        x, y, w, h = box
        shape = {"label": "face", "shape_type": "rectangle", "points": [[x, y], [x + w, y + h]]}
        (labelled / f"{name}.json").write_text(json.dumps({"shapes": [shape], "imagePath": f"{name}.png"}))
    Image.new("RGB", (300, 200), (250, 245, 240)).save(labelled / "plain.png")  # face-free: no red, no box
    command = [sys.executable, "-m", "scrapy", "faces", "evaluate"]
    done = subprocess.run([*command, str(tmp_path / "yolo.onnx"), str(labelled)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Faces found on 2/2 pictures (recall 1.000), 0 boxes elsewhere" in done.stdout
    assert "face-free pictures with a box: 0/1" in done.stdout
    (tmp_path / "junk.onnx").write_bytes(b"<html>login</html>")
    done = subprocess.run([*command, str(tmp_path / "junk.onnx"), str(labelled)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "junk.onnx: not a loadable ONNX model" in done.stderr
