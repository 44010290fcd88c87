"""Stage 3: find the anime faces on each kept JPEG and store a square crop of each for training.

``find_faces`` is the plain function: it opens ``root/record["path"]``, runs
``models.faces.detect_faces`` with the detectors and method the settings name (``verified`` by default:
the cascade proposes, animeface confirms on crops; built once per worker process:
loading the cascade and animeface's self-test cost more than a small picture's detection), writes
each crop atomically to ``faces/{id}_p{page}_f{k}.jpg`` and returns one dict per face.
``page_faces`` wraps it for the worker pool: an unreadable page becomes ``faces_error``, not an
exception. ``FaceSearch`` decides once, at start, which detectors can run here (the cascade
XML may be missing; animeface refuses to run under Pillow >= 12) and why not, for the crawl's
adapter (pipelines/faces.py) and ``scrapy curate`` alike.
"""

from __future__ import annotations

import io
import logging
import threading
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from core.storage import FACES_DIR, atomic_write
from models.faces import (
    CASCADE_SHA256,
    CASCADE_URL,
    METHODS,
    AnimefaceDetector,
    CascadeDetector,
    CascadeError,
    Detector,
    crop_face,
    detect_faces,
    find_cascade,
)
from models.inference import file_sha256
from models.registry import resolve_setting
from stages.convert import BadImage, open_checked

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

FACE_JPEG_QUALITY = 92
KNOWN_DETECTORS = ("cascade", "animeface", "heatmap", "yolo")
def read_settings(s: BaseSettings) -> tuple[list[str], dict[str, Any]]:
    """The detector names and the face settings from Scrapy settings: one reader for the crawl's
    stage, ``scrapy curate`` and the identity stage's references. The defaults are the FACES_*
    settings' own (crawler/settings.py); the functions below take the whole dict ``FaceSearch``
    makes of them."""
    names = [n.strip().lower() for n in s.getlist("FACES_DETECTORS") if n.strip()]
    method = (s.get("FACES_METHOD") or "").strip().lower()
    if method not in METHODS:
        raise ValueError(f"FACES_METHOD: unknown face detection method {method!r}; known: {', '.join(METHODS)}")
    return names, {
        "method": method,
        "scale_factor": s.getfloat("FACES_SCALE_FACTOR"),
        "min_neighbors": s.getint("FACES_MIN_NEIGHBORS"),
        "min_size": s.getint("FACES_MIN_SIZE"),
        "crop_margin": s.getfloat("FACES_CROP_MARGIN"),
        "crop_size": s.getint("FACES_CROP_SIZE"),
        "max_pixels": s.getint("IMAGE_MAX_PIXELS"),
        "heatmap_model": heatmap_model(s) if "heatmap" in names else "",
        "heatmap_threshold": s.getfloat("FACES_HEATMAP_THRESHOLD"),
        "yolo_model": resolve_setting(s, "FACES_YOLO_MODEL") if "yolo" in names else "",
        "yolo_threshold": s.getfloat("FACES_YOLO_THRESHOLD"),
    }

def heatmap_model(s: BaseSettings) -> str:
    """FACES_HEATMAP_MODEL (a path or a catalogue name); empty: the shipped weights when they are there."""
    from models.face_heatmap import SHIPPED_WEIGHTS

    return resolve_setting(s, "FACES_HEATMAP_MODEL") or (str(SHIPPED_WEIGHTS) if SHIPPED_WEIGHTS.is_file() else "")


_local = threading.local()  # detectors per worker process (or per thread with IMAGE_WORKERS = 0)


def build_detectors(settings: Mapping[str, Any]) -> list[Detector]:
    detectors: list[Detector] = []
    for name in settings["detectors"]:
        if name == "cascade":
            path = find_cascade(settings["cascade_path"] or None)
            if path is None:
                raise FileNotFoundError(f"no lbpcascade_animeface.xml found (FACES_CASCADE_PATH={settings['cascade_path']!r})")
            detectors.append(CascadeDetector(path, settings["scale_factor"], settings["min_neighbors"], settings["min_size"]))
        elif name == "animeface":
            detectors.append(AnimefaceDetector())
        elif name == "heatmap":
            from models.face_heatmap import HeatmapDetector  # torch: only when the learned detector is asked for

            # one thread: the stage already runs one worker process per core
            detectors.append(HeatmapDetector(settings["heatmap_model"], settings["heatmap_threshold"]))
        elif name == "yolo":
            from models.face_yolo import YoloFaceDetector  # onnxruntime: only when a YOLO model is asked for

            detectors.append(YoloFaceDetector(settings["yolo_model"], settings["yolo_threshold"]))
        else:
            raise ValueError(f"unknown face detector {name!r}; known: {', '.join(KNOWN_DETECTORS)}")
    return detectors


def cached_detectors(settings: Mapping[str, Any]) -> list[Detector]:
    key = tuple((k, settings[k]) for k in ("detectors", "cascade_path", "scale_factor", "min_neighbors", "min_size",
                                           "heatmap_model", "heatmap_threshold", "yolo_model", "yolo_threshold"))
    cache = _local.__dict__.setdefault("detectors", {})
    if key not in cache:
        cache[key] = build_detectors(settings)
    detectors: list[Detector] = cache[key]
    return detectors


def detectors_version(settings: Mapping[str, Any]) -> str:
    """A version string for the face configuration, like a model's: what decides the boxes and crops.

    Detector names (animeface with its package version), the cascade's sha256 prefix and its
    parameters, and the crop geometry; ``scrapy curate`` skips a page already searched with the same.
    """
    names = settings["detectors"]
    parts = []
    for name in (n.strip() for n in names.split(",")) if isinstance(names, str) else names:
        if name == "cascade":
            path = find_cascade(settings["cascade_path"] or None)
            parts.append(f"cascade-{file_sha256(path)[:12] if path else 'missing'}")
        elif name == "animeface":
            try:
                parts.append(f"animeface-{metadata.version('animeface')}")
            except metadata.PackageNotFoundError:
                parts.append("animeface-missing")
        elif name in ("heatmap", "yolo"):  # detectors with a weights file: its digest and their threshold
            model = Path(settings[f"{name}_model"]) if settings[f"{name}_model"] else None
            digest = file_sha256(model)[:12] if model and model.is_file() else "missing"
            parts.append(f"{name}-{digest}@{settings[f'{name}_threshold']}")
        else:
            parts.append(name)
    return (
        f"faces:{'+'.join(parts)};{settings['method']};sf{settings['scale_factor']};mn{settings['min_neighbors']};"
        f"ms{settings['min_size']};crop{settings['crop_size']}@{settings['crop_margin']}"
    )


def find_faces(root: str, artwork_id: str, record: dict[str, Any], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Detect, crop and store the faces of one page; raises ``BadImage``/``OSError`` if unreadable."""
    settings = dict(settings)
    names = settings["detectors"]
    settings["detectors"] = tuple(n.strip() for n in names.split(",")) if isinstance(names, str) else tuple(names)
    root_path = Path(root)
    image = open_checked((root_path / record["path"]).read_bytes(), settings["max_pixels"])
    faces = detect_faces(image, cached_detectors(settings), method=settings["method"])
    stem = f"{artwork_id.replace(':', '_')}_p{record['page']}"  # local:{sha} ids from `scrapy curate`
    results = []
    for k, face in enumerate(faces):
        crop = crop_face(image, face, margin=settings["crop_margin"], size=settings["crop_size"])
        out = io.BytesIO()
        crop.save(out, "JPEG", quality=FACE_JPEG_QUALITY)
        relative = f"{FACES_DIR}/{stem}_f{k}.jpg"
        atomic_write(root_path / relative, out.getvalue())
        results.append({
            "index": k, "x": face.x, "y": face.y, "w": face.w, "h": face.h, "score": face.score,
            "sources": "+".join(face.sources), "path": relative,
        })
    # crops left by an earlier run that found more faces on this page
    for stale in (root_path / FACES_DIR).glob(f"{stem}_f*.jpg"):
        suffix = stale.stem.rsplit("_f", 1)[-1]
        if not suffix.isdigit() or int(suffix) >= len(faces):
            stale.unlink(missing_ok=True)
    return results


def page_faces(root: str, artwork_id: str, record: dict[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The record's new fields: ``faces`` (a list, None if the page could not be read) and ``faces_error``."""
    try:
        return {"faces": find_faces(root, artwork_id, record, settings), "faces_error": None}
    except BadImage as exc:
        return {"faces": None, "faces_error": str(exc)}
    except OSError as exc:  # missing file, or a decoder error that open_checked does not word
        return {"faces": None, "faces_error": f"cannot read {record.get('path')}: {exc}"}


def usable_detectors(names: list[str], cascade_path: str, settings: Mapping[str, Any]) -> tuple[list[str], str, list[str]]:
    """Which of ``names`` can run here: (names, resolved cascade path, one message per one that cannot)."""
    usable, problems, resolved = [], [], ""
    for name in names:
        if name == "cascade":
            path = find_cascade(cascade_path or None)
            if path is None:
                where = f"FACES_CASCADE_PATH={cascade_path!r} does not exist, and it is" if cascade_path else "it is"
                problems.append(
                    f"Faces: the anime face cascade is missing ({where} not in models/weights/ or "
                    f"../shared/models/): running without it. Download {CASCADE_URL} to "
                    f"models/weights/lbpcascade_animeface.xml (sha256 {CASCADE_SHA256})"
                )
                continue
            try:
                CascadeDetector(path, settings["scale_factor"], settings["min_neighbors"], settings["min_size"])
            except (CascadeError, OSError) as exc:  # a damaged or foreign file: refuse it, run the others
                problems.append(f"Faces: cascade not used: {exc}")
                continue
            usable.append(name)
            resolved = str(path)
        elif name == "animeface":
            try:
                AnimefaceDetector()
            except RuntimeError as exc:
                problems.append(f"Faces: animeface not used: {exc}")
                continue
            usable.append(name)
        elif name in ("heatmap", "yolo"):
            what, why_not = {"heatmap": ("the learned detector", heatmap_problem),
                             "yolo": ("the YOLO face detector", yolo_problem)}[name]
            problem = why_not(settings.get(f"{name}_model") or "")
            if problem:
                problems.append(f"Faces: {what} not used: {problem}")
                continue
            usable.append(name)
        else:
            raise ValueError(f"FACES_DETECTORS: unknown face detector {name!r}; known: {', '.join(KNOWN_DETECTORS)}")
    return usable, resolved, problems


def heatmap_problem(model: str) -> str | None:
    """Why the learned detector's weights cannot be used (None: they can)."""
    if not model:
        return ("FACES_HEATMAP_MODEL is empty and the shipped weights (models/shipped/faces/faces-heatmap.pt) are "
                "missing (train some: scrapy faces train LABELLED_DIR OUT.pt)")
    from models.face_heatmap import load
    from models.torch_common import CheckpointError

    try:
        load(model)
    except CheckpointError as exc:
        return f"FACES_HEATMAP_MODEL: {exc}"
    return None


def yolo_problem(model: str) -> str | None:
    """Why the YOLO face detector cannot be used (None: it can)."""
    if not model:
        return "FACES_YOLO_MODEL is empty (a YOLO face detector exported to ONNX, e.g. imgutils' face_detect)"
    from models.face_yolo import YoloFaceDetector, YoloModelError

    try:
        YoloFaceDetector(model)
    except YoloModelError as exc:
        return f"FACES_YOLO_MODEL: {exc}"
    return None


class FaceSearch:
    """The face stage as the settings configure it: the detectors that can run here, the settings
    ``page_faces`` takes, the version recorded per page, and one message per detector left out.

    ``detectors`` is empty when none can run; the caller says what that means (the crawl turns
    the stage off, ``scrapy curate`` refuses to start). Raises ``ValueError`` on a bad setting.
    """

    def __init__(self, settings: BaseSettings):
        names, detector_settings = read_settings(settings)
        usable, cascade_path, self.problems = usable_detectors(names, settings.get("FACES_CASCADE_PATH") or "",
                                                               detector_settings)
        self.detectors = tuple(usable)
        self.settings = {**detector_settings, "detectors": self.detectors, "cascade_path": cascade_path}
        self.version = detectors_version(self.settings)

    def why_none(self) -> str:
        return " | ".join(self.problems or ["FACES_DETECTORS is empty"])
