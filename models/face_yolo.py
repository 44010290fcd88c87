"""Pretrained YOLO anime face detectors exported to ONNX: the weights dataset builders already have.

Why: our own learned detector (models/face_heatmap.py) can only be as good as the few labelled faces
it is trained on. Detectors trained on thousands of labelled anime faces exist as ONNX files, e.g.
the ``face_detect`` models that imgutils (deepghs) uses, or any ultralytics YOLO trained on a face class
and exported with ``yolo export format=onnx``. No weights ship or download here: point
``FACES_YOLO_MODEL`` at the file and add ``yolo`` to ``FACES_DETECTORS``.

What is read (ultralytics' export layout):

- one float input (N, 3, H, W): RGB in 0..1, no mean or std;
- output (N, 4 + classes, boxes): box centre x, centre y, width, height in input px, then a score per
  class (YOLOv8, v11); overlaps are merged here (NMS at ``NMS_IOU``, as ultralytics and imgutils do);
- or output (N, boxes, 6): x0, y0, x1, y1, score, class, overlaps already merged (YOLOv10 and
  ``nms=True`` exports);
- the ``names`` metadata ultralytics writes (``{0: 'face'}``) picks the class named ``face``; without it,
  class 0.

Input size: a fixed input shape is filled by stretching the picture to it, as imgutils does; a
dynamic one gets the picture shrunk to fit ``max_side`` px (never enlarged), each side rounded up to a
multiple of 32, the network's largest stride. Boxes are mapped back to picture pixels.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import ProjectError
from models.imaging import flatten_on_white
from models.inference import dimension, onnx_providers

DEFAULT_THRESHOLD = 0.25  # ultralytics' and imgutils' default confidence
NMS_IOU = 0.7  # ultralytics' default; our face stage merges what is left with the other detectors at 0.3
MAX_SIDE = 640  # px; imgutils runs its face models at 640
ALIGN = 32


class YoloModelError(ProjectError, ValueError):
    """The file is not an ONNX YOLO detector we can read (the message says what is wrong)."""


def class_names(metadata: dict[str, str]) -> dict[int, str]:
    """Ultralytics' ``names`` metadata (a Python dict literal) read without evaluating code."""
    try:
        names = ast.literal_eval(metadata.get("names", "{}"))
    except (ValueError, SyntaxError):
        return {}
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        return {}
    return {int(k): str(v) for k, v in names.items() if isinstance(k, int) or str(k).isdigit()}


def _iou_matrix(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with each row of ``others``."""
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def suppress(corners: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    while order:
        best, order = order[0], order[1:]
        kept.append(int(best))
        if order:
            overlaps = _iou_matrix(corners[best], corners[order])
            order = [i for i, o in zip(order, overlaps) if o <= iou]
    return kept


class YoloFaceDetector:
    """The face stage's ``yolo`` detector (the ``Detector`` shape of models/faces.py)."""

    name = "yolo"
    views = ("plain",)
    box_scale = 1.0

    def __init__(self, path: str | Path, threshold: float = DEFAULT_THRESHOLD, max_side: int = MAX_SIDE,
                 providers: list[str] | None = None) -> None:
        import onnxruntime  # only when a YOLO model is configured

        self.path = Path(path)
        if not self.path.is_file():
            raise YoloModelError(f"{self.path}: no such face detector model file")
        self.threshold = threshold
        self.max_side = max_side
        try:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1  # the face stage already runs one worker process per core
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=providers or onnx_providers())
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise YoloModelError(f"{self.path}: not a loadable ONNX model: {exc}") from None
        inputs = self.session.get_inputs()
        shape = list(inputs[0].shape) if inputs else []
        if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3 or inputs[0].type != "tensor(float)":
            raise YoloModelError(f"{self.path}: expected one float32 input (N, 3, H, W), got "
                                 f"{[(i.name, i.shape, i.type) for i in inputs]}")
        self.input_name = inputs[0].name
        self.fixed_size = (dimension(shape[3]), dimension(shape[2]))  # (width, height), None where dynamic
        names = class_names(self.session.get_modelmeta().custom_metadata_map)
        faces = [k for k, v in names.items() if v.lower() == "face"]
        self.face_class = faces[0] if faces else 0
        self.class_count = len(names) or None

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) the picture is resized to (module docstring, "Input size")."""
        fixed_w, fixed_h = self.fixed_size
        if fixed_w and fixed_h:
            return fixed_w, fixed_h
        shrink = min(1.0, self.max_side / max(width, height))
        return (fixed_w or max(ALIGN, math.ceil(width * shrink / ALIGN) * ALIGN),
                fixed_h or max(ALIGN, math.ceil(height * shrink / ALIGN) * ALIGN))

    def boxes(self, image: Image.Image) -> list[tuple[float, float, float, float, float]]:
        """(x, y, w, h, score) in picture px, best first."""
        picture = flatten_on_white(image).convert("RGB")
        width, height = picture.size
        size = self.input_size(width, height)
        resized = picture.resize(size, Image.Resampling.BILINEAR) if size != picture.size else picture
        tensor = (np.asarray(resized, np.float32) / 255.0).transpose(2, 0, 1)[None]
        output = np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(tensor)})[0])[0]
        corners, scores = self._decode(output)
        keep = scores >= self.threshold
        corners, scores = corners[keep], scores[keep]
        if not len(scores):
            return []
        sx, sy = width / size[0], height / size[1]
        found = []
        for i in suppress(corners, scores):
            x0, y0 = max(corners[i, 0] * sx, 0.0), max(corners[i, 1] * sy, 0.0)
            x1, y1 = min(corners[i, 2] * sx, float(width)), min(corners[i, 3] * sy, float(height))
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                found.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0), float(scores[i])))
        return found

    def _decode(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(boxes, 4) corners in input px and (boxes,) face scores, from either output layout."""
        if output.ndim != 2:
            raise YoloModelError(f"{self.path}: expected an output of (N, 4 + classes, boxes) or (N, boxes, 6), "
                                 f"got one of {output.ndim + 1} dimensions")
        rows = 4 + self.class_count if self.class_count else None
        if output.shape[1] == 6 and output.shape[0] != (rows or 5):  # end to end: x0, y0, x1, y1, score, class
            chosen = output[output[:, 5].round() == self.face_class]
            return chosen[:, :4].astype(np.float32), chosen[:, 4].astype(np.float32)
        if output.shape[0] < 5 or (rows and output.shape[0] != rows):
            raise YoloModelError(f"{self.path}: output rows {output.shape[0]} do not fit 4 box values plus "
                                 f"{self.class_count or 'at least 1'} class scores")
        cx, cy, w, h = output[:4]
        scores = output[4 + self.face_class]
        corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        return corners.astype(np.float32), scores.astype(np.float32)

    def detect(self, image: Image.Image) -> list[Any]:
        from models.faces import Face  # models.faces names this detector for its whole-picture detectors

        return [Face(round(x), round(y), round(w), round(h), round(score, 4), ("yolo",))
                for x, y, w, h, score in self.boxes(image) if w >= 4 and h >= 4]
