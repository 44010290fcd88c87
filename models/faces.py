"""Anime face detection: two offline detectors, and a combination that beats each of them.

Detectors (both run on CPU, without network):

* ``CascadeDetector``: OpenCV's ``CascadeClassifier`` with nagadomi's ``lbpcascade_animeface.xml``
  (MIT, 2011). No package ships the XML, so set-up stores it in ``models/weights/``; its sha256 is
  checked at load. Needs opencv 4.x: OpenCV 5's main wheels have no ``CascadeClassifier``.
  Fast (~80 pictures/s), but finds a face on only about half of the fixture pictures.
* ``AnimefaceDetector``: the ``animeface`` package (nvxs MLP weights compiled into its wheel).
  Better recall, about 20 times slower, and it fires on some non-face pictures. With Pillow >= 12
  it silently finds nothing (its C code reads Pillow's private image struct), so it tests itself
  at construction: Pillow >= 12 is refused outright, and the head drawn by ``synthetic_face`` (no
  image file needed) must be found, or the detector refuses to run.

``detect_faces`` combines them in one of two ways (``METHODS``):

* ``verified`` (the default, needs both detectors): the cheap cascade proposes loosely
  (``minNeighbors=0``, on the picture and on its half-size copy, and a 2x copy of small pictures);
  the proposals are grouped by overlap and the most plausible few are shown to animeface on square
  crops around them, resized to 128-160 px, where the proposed face is 1/2-2/3 of the crop: small
  and fast for animeface (~15 ms a crop) whatever the picture's size, and its likelihood there
  separates faces from weapons, food and hands well. A proposal is a face when one of up to eight
  crops (three zooms, mirrored or not) scores ``VERIFY_SCORE``; the face box is animeface's.
* ``views`` (also what runs with only one detector): each detector on several views of the picture
  (mirror, equalised gray, the enlarged top of a tall picture, and for the cascade an upscale, a
  white-padded copy and two tilts), boxes clustered by overlap, a cluster kept only with a second
  witness (the other detector, the mirror image, or an animeface likelihood of ``strong_score``).

On the shared fixtures (bench/faces.py, faces located on a hand-checked head box): ``verified``
23/26 head icons, 17/24 full-body cards, 0/40 negatives at ~23 pictures/s on one core; ``views``
23/26, 16/24, 0/40 at ~1.3 pictures/s; animeface alone 19/26, 14/24, 3/40; the cascade alone 14/26,
9/24, 0/40. Most of the misses have no proposal at all (covered or profile faces, glasses): no
verifier over these proposals can reach them. ``verified``'s constants were chosen on those same
pictures: nothing is learned, but the numbers are a fit, not a held-out estimate.

A third, learned detector (``models.face_heatmap.HeatmapDetector``, name ``heatmap``) looks at every
position instead of at proposals; trained by the user (``scrapy faces train``), it joins any method:
``detect_faces`` adds its boxes to the classic pair's and keeps the best of overlapping ones. A
pretrained YOLO face detector in ONNX (``models.face_yolo.YoloFaceDetector``, name ``yolo``; the
user's weights) joins the same way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import cv2
import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageOps

from core.errors import ProjectError
from models.imaging import flatten_on_white
from models.inference import file_sha256

REPO = Path(__file__).resolve().parents[1]
CASCADE_NAME = "lbpcascade_animeface.xml"
CASCADE_SHA256 = "9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30"
CASCADE_URL = (
    "https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/"
    "4433ab1ae1166ea75acfe99eb0f18709dac329a0/lbpcascade_animeface.xml"
)
CASCADE_SEARCH_PATHS = (
    REPO / "models" / "weights" / CASCADE_NAME,  # where set-up stores it
    REPO.parent / "shared" / "models" / CASCADE_NAME,  # a shared copy beside the repository
)

# Views of one picture. The cheap cascade runs on all of them; animeface (slow) on the first four.
ALL_VIEWS = ("plain", "mirror", "equalized", "top", "upscaled", "padded", "tilt_left", "tilt_right")
ANIMEFACE_VIEWS = ("plain", "mirror", "equalized", "top")
TALL_RATIO = 1.5  # height / width from which a picture gets the "top" view (full-body art)
TOP_SHARE = 0.55  # the "top" view keeps this share of the height (where the head of a standing figure is) ...
TOP_ZOOM = 1.5  # ... enlarged this much
SMALL_SIDE = 512  # px; pictures whose longer side is below this get the 2x "upscaled" view
TILT_DEGREES = 12.0


class CascadeError(ProjectError, RuntimeError):
    """The cascade XML is missing, not the expected file, or not loadable by OpenCV."""


class AnimefaceUnusable(ProjectError, RuntimeError):
    """The animeface package cannot be trusted here (wrong Pillow, or it finds no known face)."""


@dataclass(frozen=True)
class Face:
    """A face box in the picture's pixel coordinates; ``sources`` names the detectors that saw it."""

    x: int
    y: int
    w: int
    h: int
    score: float  # 0..1: animeface likelihood, or the cascade's neighbour share (see CascadeDetector)
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """One box from one detector on one view, already mapped back to picture coordinates."""

    x: float
    y: float
    w: float
    h: float
    score: float
    detector: str
    view: str
    mirrored: bool


class Detector(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def views(self) -> tuple[str, ...]: ...  # the views worth running it on
    @property
    def box_scale(self) -> float: ...  # multiply its box side by this to get a box like animeface's (face only)

    def detect(self, image: Image.Image) -> list[Face]: ...


# --- the two detectors --------------------------------------------------------------------------


def find_cascade(explicit: str | None = None) -> Path | None:
    """The first existing of: ``explicit``, ``models/weights/``, ``../shared/models/``."""
    candidates = ([Path(explicit).expanduser()] if explicit else []) + list(CASCADE_SEARCH_PATHS)
    return next((path for path in candidates if path.is_file()), None)


class CascadeDetector:
    """lbpcascade_animeface on the gray picture; defaults are the original workflow's parameters.

    Its boxes include hair and chin, about 1.35 times the side of animeface's box for the same
    face (median over the fixture pictures where both fired), hence ``box_scale``.
    """

    name = "cascade"
    views = ALL_VIEWS
    box_scale = 0.75

    def __init__(self, xml_path: str | Path, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 32):
        path = Path(xml_path)
        if not path.is_file():
            raise CascadeError(f"cascade file {path} does not exist; get it from {CASCADE_URL} (sha256 {CASCADE_SHA256})")
        digest = file_sha256(path)
        if digest != CASCADE_SHA256:
            raise CascadeError(
                f"cascade file {path} has sha256 {digest}, not the expected {CASCADE_SHA256} of "
                f"{CASCADE_URL}; refusing a different or damaged file"
            )
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise CascadeError(f"OpenCV could not load the cascade {path}")
        self.path = path
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def detect(self, image: Image.Image) -> list[Face]:
        gray = np.asarray(image.convert("L"))
        rects, neighbours = self.classifier.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        # neighbours / (neighbours + min_neighbors): just over 0.5 at the acceptance threshold
        return [
            Face(int(x), int(y), int(w), int(h), float(n) / (float(n) + max(self.min_neighbors, 1)), (self.name,))
            for (x, y, w, h), n in zip(rects, neighbours)
        ]

    def propose(self, gray: np.ndarray, min_size: int) -> list[tuple[float, float, float, float, float]]:
        """Every window that passes all stages, ungrouped, with the last stage's weight as its score.

        ``minNeighbors=0`` keeps the lone windows the default grouping throws away: loose on
        purpose, since a verifier judges each proposal afterwards.
        """
        rects, _levels, weights = self.classifier.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=0, minSize=(min_size, min_size), outputRejectLevels=True,
        )
        return [(float(x), float(y), float(w), float(h), float(s)) for (x, y, w, h), s in zip(rects, weights)]


def synthetic_face(size: int = 256) -> Image.Image:
    """A flat-coloured anime head (hair, fringe, big eyes with highlights, small mouth).

    animeface 2.0.3 finds it with likelihood 1.0 at 128-320 px under Pillow 11.3 and finds
    nothing under Pillow 12, which makes it a self-test that needs no image file.
    """
    s = size / 256
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    hair, skin, iris = (90, 60, 50), (255, 228, 210), (70, 110, 200)

    def box(*xs: float) -> list[float]:
        return [v * s for v in xs]

    draw.ellipse(box(38, 20, 218, 220), fill=hair)  # back hair
    draw.rectangle(box(38, 120, 218, 240), fill=hair)
    draw.polygon(box(64, 110, 192, 110, 188, 170, 160, 205, 128, 218, 96, 205, 68, 170), fill=skin)
    draw.ellipse(box(64, 60, 192, 170), fill=skin)
    xs = [216, 196, 176, 156, 136, 116, 96, 76, 56, 40]
    tips = [118, 100, 125, 96, 122, 100, 126, 98, 118, 120]
    fringe = [(40.0, 40.0), (216.0, 40.0)]
    for i, x in enumerate(xs):
        fringe.append((x, tips[i]))
        if i + 1 < len(xs):
            fringe.append(((x + xs[i + 1]) / 2, 70))
    draw.polygon([(x * s, y * s) for x, y in fringe], fill=hair)
    width = max(1, round(5 * s))
    for cx in (100, 156):
        draw.ellipse(box(cx - 17, 128, cx + 17, 172), fill=(255, 255, 255))
        draw.ellipse(box(cx - 14, 132, cx + 14, 172), fill=iris)
        draw.ellipse(box(cx - 7, 142, cx + 7, 164), fill=(30, 30, 50))  # pupil
        draw.ellipse(box(cx - 11, 137, cx - 3, 147), fill=(255, 255, 255))  # highlights
        draw.ellipse(box(cx + 3, 155, cx + 7, 160), fill=(255, 255, 255))
        draw.line(box(cx - 20, 130, cx + 20, 126), fill=(40, 30, 30), width=width)  # upper lid
        draw.line(box(cx - 18, 116, cx + 16, 113), fill=hair, width=max(1, round(3 * s)))  # brow
    draw.line(box(122, 196, 134, 196), fill=(180, 90, 90), width=max(1, round(2 * s)))  # mouth
    return image


def pillow_major() -> int:
    return int(PIL.__version__.split(".")[0])


class AnimefaceDetector:
    """The animeface package, refused at construction where it would silently find nothing."""

    name = "animeface"
    views = ANIMEFACE_VIEWS
    box_scale = 1.0

    def __init__(self) -> None:
        if pillow_major() >= 12:
            raise AnimefaceUnusable(
                f"animeface finds no faces with Pillow {PIL.__version__} (it reads Pillow's private "
                "image struct and silently returns nothing from Pillow 12 on); install 'pillow<12'"
            )
        try:
            import animeface
        except ImportError as exc:
            raise AnimefaceUnusable(f"the animeface package is not importable: {exc}") from None
        self._animeface = animeface
        if not self.detect(synthetic_face()):
            raise AnimefaceUnusable(
                f"animeface self-test failed: no face found on the built-in test face "
                f"(Pillow {PIL.__version__}); it would silently find nothing. Try 'pillow<12'"
            )

    def detect(self, image: Image.Image) -> list[Face]:
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        return [
            Face(f.face.pos.x, f.face.pos.y, f.face.pos.width, f.face.pos.height, float(f.likelihood), (self.name,))
            for f in self._animeface.detect(image)
        ]


# --- views ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """A transformed copy of the picture and how to map its boxes back."""

    name: str
    image: Image.Image
    scale: float = 1.0  # view pixels per picture pixel
    offset: tuple[float, float] = (0.0, 0.0)  # picture coordinates of the view's origin
    mirrored: bool = False
    angle: float = 0.0  # degrees, counter-clockwise about the centre (PIL's rotate)

    def to_picture(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        vw, vh = self.image.size
        if self.mirrored:
            x = vw - x - w
        if self.angle:
            a = math.radians(self.angle)
            cx, cy = x + w / 2 - vw / 2, y + h / 2 - vh / 2
            cx, cy = cx * math.cos(a) - cy * math.sin(a), cx * math.sin(a) + cy * math.cos(a)
            x, y = cx + vw / 2 - w / 2, cy + vh / 2 - h / 2
        return x / self.scale + self.offset[0], y / self.scale + self.offset[1], w / self.scale, h / self.scale


def make_views(image: Image.Image, names: Iterable[str]) -> list[View]:
    """The requested views that apply to this picture (``top`` only for tall, ``upscaled`` for small)."""
    w, h = image.size
    views = []
    for name in names:
        if name == "plain":
            views.append(View(name, image))
        elif name == "mirror":
            views.append(View(name, ImageOps.mirror(image), mirrored=True))
        elif name == "equalized":
            gray = cv2.equalizeHist(np.asarray(image.convert("L")))
            views.append(View(name, Image.fromarray(gray)))  # uint8 2-D: mode L
        elif name == "top" and h >= TALL_RATIO * w:
            top = image.crop((0, 0, w, round(h * TOP_SHARE)))
            size = (round(top.width * TOP_ZOOM), round(top.height * TOP_ZOOM))
            views.append(View(name, top.resize(size, Image.Resampling.LANCZOS), scale=TOP_ZOOM))
        elif name == "upscaled" and max(w, h) < SMALL_SIDE:
            views.append(View(name, image.resize((w * 2, h * 2), Image.Resampling.LANCZOS), scale=2.0))
        elif name == "padded":
            pad = max(w, h) // 4
            padded = Image.new("RGB", (w + 2 * pad, h + 2 * pad), (255, 255, 255))
            padded.paste(image, (pad, pad))
            views.append(View(name, padded, offset=(-pad, -pad)))
        elif name in ("tilt_left", "tilt_right"):
            angle = TILT_DEGREES if name == "tilt_left" else -TILT_DEGREES
            rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
            views.append(View(name, rotated, angle=angle))
        elif name not in ALL_VIEWS:
            raise ValueError(f"unknown view {name!r}; known: {', '.join(ALL_VIEWS)}")
    return views


# --- combination -----------------------------------------------------------------------------------


def flatten(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on white: the detectors otherwise see the RGB hidden under it."""
    image = flatten_on_white(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def iou(a: Face | Candidate, b: Face | Candidate) -> float:
    iw = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    ih = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a.w * a.h + b.w * b.h - inter)


def nested(a: Face | Candidate, b: Face | Candidate, share: float = 0.7) -> bool:
    """Most of the smaller box lies inside the larger one (a face inside a head box)."""
    iw = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    ih = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    return iw > 0 and ih > 0 and iw * ih >= share * min(a.w * a.h, b.w * b.h)


def suppress_overlaps(faces: Sequence[Face], iou_threshold: float = 0.3) -> list[Face]:
    """Keep the best-scoring of boxes that overlap (by IoU, or one nested in the other)."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: (-f.score, -len(f.sources), -f.w * f.h)):
        if all(iou(face, k) < iou_threshold and not nested(face, k) for k in kept):
            kept.append(face)
    return kept


@dataclass
class _Cluster:
    lead: Candidate
    members: list[Candidate] = field(default_factory=list)


def _group_overlapping(candidates: Iterable[Candidate], iou_threshold: float) -> list[_Cluster]:
    """Greedy grouping, best score first: each box joins the first group whose lead it overlaps."""
    groups: list[_Cluster] = []
    for candidate in sorted(candidates, key=lambda c: -c.score):
        home = next((g for g in groups if iou(g.lead, candidate) >= iou_threshold), None)
        if home is None:
            groups.append(home := _Cluster(candidate))
        home.members.append(candidate)
    return groups


def collect_candidates(
    image: Image.Image,
    detectors: Sequence[Detector],
    views: Sequence[str] = ALL_VIEWS,
    max_side: int = 2048,
    timings: dict[tuple[str, str], float] | None = None,
) -> list[Candidate]:
    """Every box of every detector on every view it is meant for, in picture coordinates.

    Pictures larger than ``max_side`` are searched at that size (time grows with pixels; a face
    too small to see there is too small to crop for training anyway).
    """
    picture = flatten(image)
    shrink = min(1.0, max_side / max(picture.size))
    if shrink < 1.0:
        size = (max(1, round(picture.width * shrink)), max(1, round(picture.height * shrink)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    wanted = {name for d in detectors for name in d.views if name in views}
    candidates = []
    for view in make_views(picture, [v for v in ALL_VIEWS if v in wanted]):
        for detector in detectors:
            if view.name not in detector.views:
                continue
            started = time.perf_counter()
            boxes = detector.detect(view.image)
            if timings is not None:
                key = (detector.name, view.name)
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - started
            for box in boxes:
                x, y, w, h = view.to_picture(box.x, box.y, box.w, box.h)
                side = detector.box_scale  # same centre, animeface-like size
                x, y, w, h = x + w * (1 - side) / 2, y + h * (1 - side) / 2, w * side, h * side
                candidates.append(Candidate(
                    x / shrink, y / shrink, w / shrink, h / shrink, box.score, detector.name, view.name, view.mirrored,
                ))
    return candidates


def combine(
    candidates: Sequence[Candidate],
    detector_order: Sequence[str] = ("cascade", "animeface"),
    iou_threshold: float = 0.3,
    strong_score: float = 0.9,
    require_witness: bool = True,
) -> list[Face]:
    """Cluster the candidates, keep the clusters with a second witness, one face per cluster.

    A witness is a (detector, mirrored?) pair: the two detectors agreeing, or one detector seeing
    the face in the picture and in its mirror image, is evidence that single views lack; a lone
    box passes only with a score of at least ``strong_score``.
    """
    clusters = _group_overlapping(candidates, iou_threshold)
    faces = []
    for cluster in clusters:
        members = cluster.members
        witnesses = {(m.detector, m.mirrored) for m in members}
        best = max(m.score for m in members)
        if require_witness and len(witnesses) < 2 and best < strong_score:
            continue
        n = len(members)
        x, y = sum(m.x for m in members) / n, sum(m.y for m in members) / n
        w, h = sum(m.w for m in members) / n, sum(m.h for m in members) / n
        found = {m.detector for m in members}
        sources = tuple(d for d in detector_order if d in found) + tuple(sorted(found - set(detector_order)))
        faces.append(Face(round(x), round(y), round(w), round(h), round(best, 4), sources))
    return sorted(suppress_overlaps(faces, iou_threshold), key=lambda f: (-f.score, f.x, f.y))


METHODS = ("verified", "views")
# learned detectors that search the whole picture at their own scales: no views, no verifying; their
# boxes are added to the classic pair's
WHOLE_PICTURE_DETECTORS = ("heatmap", "yolo")

# propose-and-verify (method "verified"): where a picture is searched, and how a proposal is judged
SEARCH_SIDE = 1024  # px; proposals are searched on the picture shrunk to this longer side ...
PLAIN_MIN_SIZE = 40  # ... for windows of at least this many px, and on its half-size copy ...
PROPOSAL_MIN_SIZE = 24  # ... for windows of at least this many (48 px of the picture)
SMALL_PICTURE = 200  # px; pictures whose longer side is below this are searched at 2x as well
MAX_PROPOSALS = 6  # per picture, the most plausible first: each costs up to len(VERIFY_ATTEMPTS) animeface runs
# (crop side / proposal side, crop px, mirrored): the order in which a proposal is shown to animeface
VERIFY_ATTEMPTS = (
    (2.0, 128, False), (1.5, 128, True), (2.5, 128, False), (2.0, 160, True),
    (2.0, 128, True), (1.5, 128, False), (2.5, 128, True), (2.0, 160, False),
)
VERIFY_SCORE = 0.6  # animeface likelihood that accepts a proposal
HINT_SCORE = 0.3  # after the first four attempts, go on only if one of them scored this much


def _square(picture: Image.Image, cx: float, cy: float, side: float, size: int) -> Image.Image:
    """The ``side`` px square centred on (cx, cy), white beyond the picture, resized to ``size``."""
    left, top = round(cx - side / 2), round(cy - side / 2)
    box = (left, top, left + round(side), top + round(side))
    inside = (max(box[0], 0), max(box[1], 0), min(box[2], picture.width), min(box[3], picture.height))
    square = Image.new("RGB", (box[2] - box[0], box[3] - box[1]), (255, 255, 255))
    if inside[2] > inside[0] and inside[3] > inside[1]:
        square.paste(picture.crop(inside), (inside[0] - box[0], inside[1] - box[1]))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def propose(picture: Image.Image, cascade: CascadeDetector, iou_threshold: float = 0.3) -> list[Candidate]:
    """The cascade's loose windows on the picture, its half-size copy (and 2x copy if small), grouped.

    One candidate per group of overlapping windows: the mean box (animeface-like extent), scored
    by how many of the views saw it, then by the best window weight; most plausible first.
    """
    shrink = min(1.0, SEARCH_SIDE / max(picture.size))
    gray = np.asarray(picture.convert("L"))
    if shrink < 1.0:
        gray = cv2.resize(gray, (max(1, round(picture.width * shrink)), max(1, round(picture.height * shrink))),
                          interpolation=cv2.INTER_AREA)
    height, width = gray.shape
    views = {"plain": (gray, 1.0, PLAIN_MIN_SIZE)}  # name: (picture, its scale, smallest window)
    if min(width, height) // 2 >= PROPOSAL_MIN_SIZE:
        half = cv2.resize(gray, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        views["half"] = (half, 0.5, PROPOSAL_MIN_SIZE)
    if max(width, height) < SMALL_PICTURE:
        double = cv2.resize(gray, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)
        views["double"] = (double, 2.0, PROPOSAL_MIN_SIZE)
    windows = []
    side = cascade.box_scale
    for name, (view, scale, min_size) in views.items():
        for x, y, w, h, weight in cascade.propose(view, min_size):
            x, y, w, h = (v / scale / shrink for v in (x, y, w, h))
            x, y, w, h = x + w * (1 - side) / 2, y + h * (1 - side) / 2, w * side, h * side
            windows.append(Candidate(x, y, w, h, weight, cascade.name, name, False))
    groups = _group_overlapping(windows, iou_threshold)
    proposals = []
    for group in groups:
        n = len(group.members)
        box = [sum(getattr(m, k) for m in group.members) / n for k in ("x", "y", "w", "h")]
        seen_in = "+".join(sorted({m.view for m in group.members}))
        proposals.append(Candidate(box[0], box[1], box[2], box[3], group.lead.score, cascade.name, seen_in, False))
    return sorted(proposals, key=lambda c: (-len(c.view.split("+")), -c.score))


def verify(picture: Image.Image, proposal: Candidate, animeface: AnimefaceDetector) -> Face | None:
    """animeface on square crops around the proposal (VERIFY_ATTEMPTS); its box if it accepts one.

    The crop puts a face of the proposal's size at 1/2-2/3 of 128-160 px, where animeface is
    reliable and fast (~15 ms), whatever the picture's size; a face must sit at the crop's centre.
    """
    cx, cy, side = proposal.x + proposal.w / 2, proposal.y + proposal.h / 2, max(proposal.w, proposal.h)
    best = 0.0
    for attempt, (factor, size, mirrored) in enumerate(VERIFY_ATTEMPTS):
        if attempt == 4 and best < HINT_SCORE:
            return None  # nothing face-like from four angles: not worth four more
        crop = _square(picture, cx, cy, side * factor, size)
        if mirrored:
            crop = ImageOps.mirror(crop)
        centre = Face(size // 4, size // 4, size // 2, size // 2, 0.0)
        found = [f for f in animeface.detect(crop) if iou(f, centre) >= 0.2]
        if not found:
            continue
        face = max(found, key=lambda f: f.score)
        best = max(best, face.score)
        if face.score >= VERIFY_SCORE:
            x = size - face.x - face.w if mirrored else face.x
            zoom = side * factor / size  # picture px per crop px
            return Face(round(cx - side * factor / 2 + x * zoom), round(cy - side * factor / 2 + face.y * zoom),
                        round(face.w * zoom), round(face.h * zoom), round(face.score, 4), ("cascade", "animeface"))
    return None


def detect_verified(image: Image.Image, cascade: CascadeDetector, animeface: AnimefaceDetector,
                    iou_threshold: float = 0.3) -> list[Face]:
    """Method "verified": the cascade proposes loosely, animeface confirms each proposal on crops."""
    picture = flatten(image)
    faces: list[Face] = []
    for proposal in propose(picture, cascade, iou_threshold)[:MAX_PROPOSALS]:
        if any(iou(proposal, f) >= iou_threshold or nested(proposal, f) for f in faces):
            continue  # a face already confirmed there
        face = verify(picture, proposal, animeface)
        if face is not None:
            faces.append(face)
    return sorted(suppress_overlaps(faces, iou_threshold), key=lambda f: (-f.score, f.x, f.y))


def detect_faces(
    image: Image.Image,
    detectors: Sequence[Detector],
    *,
    method: str = "verified",
    views: Sequence[str] = ALL_VIEWS,
    iou_threshold: float = 0.3,
    strong_score: float = 0.9,
    max_side: int = 2048,
) -> list[Face]:
    """Faces found by ``detectors``, best first (module docstring).

    ``method="verified"`` needs both detectors (one proposes, the other verifies); with only one of
    them, or ``method="views"``, the union of views with a second witness is used. A learned
    ``heatmap`` detector (models/face_heatmap.py) or ``yolo`` one (models/face_yolo.py) among them adds
    its own boxes to theirs; alone, its boxes are the answer. A heatmap detector with a crop verifier
    first drops the boxes of theirs it is sure are no face (``face_verifier.VETO``).
    """
    if not detectors:
        raise ValueError("detect_faces needs at least one detector")
    if method not in METHODS:
        raise ValueError(f"unknown face detection method {method!r}; known: {', '.join(METHODS)}")
    learned = [d for d in detectors if d.name in WHOLE_PICTURE_DETECTORS]
    classic = [d for d in detectors if d.name not in WHOLE_PICTURE_DETECTORS]
    by_name = {d.name: d for d in classic}
    cascade, animeface = by_name.get("cascade"), by_name.get("animeface")
    if not classic:
        faces: list[Face] = []
    elif method == "verified" and isinstance(cascade, CascadeDetector) and isinstance(animeface, AnimefaceDetector):
        faces = detect_verified(image, cascade, animeface, iou_threshold)
    else:
        candidates = collect_candidates(image, classic, views, max_side)
        faces = combine(candidates, [d.name for d in classic], iou_threshold, strong_score)
    if not learned:
        return faces
    for detector in learned:
        veto = getattr(detector, "vetoed", None)  # the heatmap net's crop verifier judges the pair's boxes too
        if veto is not None:
            faces = veto(image, faces)
    for detector in learned:
        faces += detector.detect(image)
    return sorted(suppress_overlaps(faces, iou_threshold), key=lambda f: (-f.score, f.x, f.y))


def crop_face(image: Image.Image, face: Face, margin: float = 0.25, size: int = 96) -> Image.Image:
    """A square RGB crop around the face, ``margin`` of its side added on each side.

    The square is shifted (not cut) to stay inside the picture, and shrunk to the picture's
    shorter side if it is larger, so every crop is a real, undistorted square of picture pixels.
    """
    picture = flatten(image)
    width, height = picture.size
    side = min(max(face.w, face.h) * (1 + 2 * margin), width, height)
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    left = min(max(cx - side / 2, 0.0), width - side)
    top = min(max(cy - side / 2, 0.0), height - side)
    box = (round(left), round(top), round(left + side), round(top + side))
    return picture.crop(box).resize((size, size), Image.Resampling.LANCZOS)
