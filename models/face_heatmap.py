"""A small learned anime face detector: a fully convolutional net that draws a heatmap of face centres.

Why: the two classic detectors (models/faces.py) miss faces they never propose (profiles, covered
eyes, glasses, small faces on full-body art), and no verifier over their proposals can find those.
This net looks at every position of the picture instead, so its recall is limited only by what it
learned.

Shape (CenterNet-like, arXiv:1904.07850, made tiny): four strided or plain 3x3 convolutions down to
1/8 of the input, then dilated convolutions (2, 4, 8) so that each output cell sees ~260 px around
it (a face and the hair and shoulders that tell it is one), then two 1x1 heads: a face-centre logit
and the log of the face side. ~190k parameters; a 320x1024 card costs ~1 GMAC.

Scales: the net is trained on faces of ``FACE_RANGE`` px (20-110) in its input. ``detect`` runs it on
a pyramid of the picture (factors 1, 1/2, 1/4... of at most ``MAX_SIDE`` px, and 2x for pictures
smaller than ``SMALL_SIDE``), so a face of 24 px up to the whole picture falls in range on some
level; boxes from all levels are merged by overlap, the highest score kept.

Training (``train``): pictures with face boxes (``LabelledPicture``; ``read_labelme_boxes`` reads
labelme rectangle files, what people annotate with). Each step draws ``PATCH`` px patches: a picture
at a random scale such that its faces land in range (mostly) or outside it (to teach the net not to
fire on a huge face's eye), flipped, colour-jittered, sometimes grayscale; some patches paste a
face from one picture onto a face-free part of another (the "generated" positives). Pictures
without faces (``boxes=()``) are negatives. Targets: a Gaussian peak at each in-range face centre
(focal loss, as in CenterNet), the log side at the centre cell (L1); faces just outside the range
are ignored, not taught either way.

Verifier (``TrainConfig.verifier_steps``, models/face_verifier.py): after the heatmap, a small crop
classifier is trained on the same pictures, its negatives the net's own mistakes on them. A file with
one runs the net on more views (the mirror, levels in between the pyramid's), and a candidate under
the threshold but scoring at least ``face_verifier.ASK_FROM`` is a face if the verifier says so;
beside the classic pair, the verifier also drops their boxes it is sure are no face (``VETO``).

Weights trained on the shared anime fixtures ship in models/shipped/faces/ (its README: data, recipe,
held-out figures) and are what an empty ``FACES_HEATMAP_MODEL`` means; ``scrapy faces train`` makes
others from a user's labelled pictures, and ``FACES_HEATMAP_MODEL`` points the face stage at them.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.nn import functional as F

from models import face_verifier
from models.imaging import flatten_on_white
from models.torch_common import CheckpointError, choose_device, load_checkpoint, save_checkpoint, state_on_cpu
from models.training import Every, StepTiming, run_steps

FORMAT = "anime-face-heatmap/1"
STRIDE = 8
PATCH = 192  # px, the training patches' side
FACE_RANGE = (20.0, 110.0)  # px in the net's input: the face sides it is taught to find
IGNORE_RANGE = (14.0, 150.0)  # faces outside FACE_RANGE but inside this are neither taught nor punished
MAX_SIDE = 1024  # px; the pyramid's first level is the picture shrunk to this longer side
SMALL_SIDE = 320  # px; pictures with a shorter longer side get a 2x level too
MIN_LEVEL_SIDE = 48  # px; pyramid levels whose shorter side would be smaller are not run
MEAN = (0.5, 0.5, 0.5)
SCORE_THRESHOLD = 0.6  # with a verifier, the best of 0.5-0.7 in the held-out runs (docs/curation.md)
NMS_IOU = 0.3
CANDIDATE_FLOOR = 0.15  # centre score from which the verifier's training mines candidates
# the weights that ship with the project (models/shipped/faces/README.md: data, recipe, held-out figures);
# FACES_HEATMAP_MODEL empty means these, when the file is there
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "shipped" / "faces" / "faces-heatmap.pt"


@dataclass(frozen=True)
class LabelledPicture:
    """A picture and its face boxes (x, y, w, h in its pixels); no boxes means a negative."""

    image: Image.Image
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    name: str = ""


@dataclass
class TrainConfig:
    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    paste_share: float = 0.2  # patches that paste a face onto a negative background
    negative_share: float = 0.2  # patches drawn from face-free pictures
    away_share: float = 0.15  # patches from a picture with faces, away from them (bodies, hands, weapons)
    # augmentation aimed at what the held-out misses look like (docs/curation.md): tilted heads, hats and
    # hair over the face, dark skin and dark scenes, hair colours no training character has
    rotate_degrees: float = 0.0  # a patch is turned by up to this many degrees (half of them) ...
    occlude_share: float = 0.0  # ... this share of face patches gets a block over part of a face ...
    hue_shift: float = 0.0  # ... half of them get their hue turned by up to this share of the circle ...
    gamma_range: tuple[float, float] = (1.0, 1.0)  # ... and half a gamma drawn from this range
    verifier_steps: int = 1500  # then a crop verifier is trained on the net's mistakes (0: none)
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 leaves torch's default


@dataclass
class TrainResult:
    config: dict[str, Any]
    pictures: int
    faces: int
    negatives: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    verifier_losses: list[float] = field(default_factory=list)
    verifier_seconds: float = 0.0


def conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FaceHeatmapNet(nn.Module):
    """Picture (N, 3, H, W) in 0..1 -> (centre logits, log side in px) at 1/8 resolution.

    ``verifier`` (a ``face_verifier.FaceVerifierNet`` or None) is not used by ``forward``; it rides
    along so that one state dict, one file, holds the whole detector."""

    def __init__(self, width: int = 64, verifier: bool = False) -> None:
        super().__init__()
        half = width // 2
        self.body = nn.Sequential(
            conv(3, 16, stride=2), conv(16, half, stride=2), conv(half, half),
            conv(half, width, stride=2), conv(width, width),
            conv(width, width, dilation=2), conv(width, width, dilation=4), conv(width, width, dilation=8),
        )
        self.centre = nn.Conv2d(width, 1, 1)
        self.size = nn.Conv2d(width, 1, 1)
        assert self.centre.bias is not None and self.size.bias is not None  # Conv2d has one by default
        nn.init.constant_(self.centre.bias, -4.0)  # start near "no face anywhere" (CenterNet's prior)
        nn.init.constant_(self.size.bias, math.log(48.0))
        self.verifier: face_verifier.FaceVerifierNet | None
        self.register_module("verifier", face_verifier.FaceVerifierNet() if verifier else None)

    def forward(self, pictures: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(pictures - torch.tensor(MEAN, device=pictures.device).view(1, 3, 1, 1))
        return self.centre(features)[:, 0], self.size(features)[:, 0]


# --- training data --------------------------------------------------------------------------------


def read_labelme_boxes(folder: str | Path, labels_dir: str | Path | None = None) -> list[LabelledPicture]:
    """Pictures with face boxes from labelme JSON files (rectangles; any label) under ``folder``.

    A picture file without a JSON file beside it is a negative (no face), so a folder of labelled
    art plus a folder of face-free pictures is a whole training set. With ``labels_dir`` the JSON
    file of ``folder/a/b.png`` is ``labels_dir/a/b.json`` instead: labels kept apart from pictures
    that may not be copied (the project's own, datasets/anime-faces/, over ../shared/fixtures/anime).
    """
    folder = Path(folder)
    pictures = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"}):
        boxes: list[tuple[float, float, float, float]] = []
        relative = path.relative_to(folder)
        labels = (Path(labels_dir) / relative).with_suffix(".json") if labels_dir else path.with_suffix(".json")
        if labels.is_file():
            document = json.loads(labels.read_text(encoding="utf-8"))
            for shape in document.get("shapes", []):
                if shape.get("shape_type", "polygon") != "rectangle" or len(shape.get("points", [])) != 2:
                    continue
                (x0, y0), (x1, y1) = shape["points"]
                boxes.append((min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0)))
        with Image.open(path) as image:
            pictures.append(LabelledPicture(flatten_on_white(image).convert("RGB"), tuple(boxes), str(relative)))
    return pictures


def _draw_targets(boxes: Sequence[tuple[float, float, float, float]], size: int) -> tuple[np.ndarray, ...]:
    """Heatmap, log-side map, size mask and loss weight (0 where ignored) for boxes in patch px."""
    cells = size // STRIDE
    heat = np.zeros((cells, cells), np.float32)
    log_side = np.zeros((cells, cells), np.float32)
    size_mask = np.zeros((cells, cells), np.float32)
    weight = np.ones((cells, cells), np.float32)
    ys, xs = np.mgrid[0:cells, 0:cells].astype(np.float32)
    for x, y, w, h in boxes:
        side = math.sqrt(w * h)
        cx, cy = (x + w / 2) / STRIDE - 0.5, (y + h / 2) / STRIDE - 0.5
        if not (-1 <= cx <= cells and -1 <= cy <= cells):
            continue
        if FACE_RANGE[0] <= side <= FACE_RANGE[1]:
            # the peak sits on the centre's cell, exactly 1 there: the focal loss's positives are those cells
            ix, iy = int(round(cx)), int(round(cy))
            sigma = max(side / STRIDE / 6, 0.6)
            heat = np.maximum(heat, np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2)))
            if 0 <= ix < cells and 0 <= iy < cells:
                log_side[iy, ix] = math.log(side)
                size_mask[iy, ix] = 1.0
        elif IGNORE_RANGE[0] <= side <= IGNORE_RANGE[1]:
            x0, y0 = max(int(x / STRIDE), 0), max(int(y / STRIDE), 0)
            x1, y1 = min(int(math.ceil((x + w) / STRIDE)), cells), min(int(math.ceil((y + h) / STRIDE)), cells)
            weight[y0:y1, x0:x1] = 0.0
    return heat, log_side, size_mask, weight


class PatchSampler:
    """Random training patches from labelled pictures (module docstring, "Training")."""

    def __init__(self, pictures: Sequence[LabelledPicture], config: TrainConfig, rng: random.Random) -> None:
        self.positives = [p for p in pictures if p.boxes]
        self.negatives = [p for p in pictures if not p.boxes]
        if not self.positives:
            raise ValueError("no picture with a face box to learn from")
        self.config = config
        self.rng = rng

    def sample(self) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        rng = self.rng
        roll = rng.random()
        negative, paste, away = self.config.negative_share, self.config.paste_share, self.config.away_share
        boxes: list[Any]
        if self.negatives and roll < negative:
            patch, boxes = self._negative_patch(rng.choice(self.negatives)), []
        elif self.negatives and roll < negative + paste:
            patch, boxes = self._pasted_patch()
        elif roll < negative + paste + away:
            picture = rng.choice(self.positives)
            patch = self._negative_patch(picture, avoid=picture.boxes)
            boxes = []
        else:
            patch, boxes = self._positive_patch(rng.choice(self.positives))
        if rng.random() < 0.5:
            patch = ImageOps.mirror(patch)
            boxes = [(PATCH - x - w, y, w, h) for x, y, w, h in boxes]
        patch, boxes = self._augment(patch, boxes)
        array = np.asarray(patch, np.float32) / 255.0
        if rng.random() < 0.15:
            array = np.repeat(array.mean(axis=2, keepdims=True), 3, axis=2)
        gamma = self.config.gamma_range
        if gamma != (1.0, 1.0) and rng.random() < 0.5:
            array = array ** math.exp(rng.uniform(math.log(gamma[0]), math.log(gamma[1])))
        gain = np.array([rng.uniform(0.8, 1.2) for _ in range(3)], np.float32) * rng.uniform(0.8, 1.2)
        array = np.clip(array * gain + rng.uniform(-0.1, 0.1), 0.0, 1.0)
        return array.transpose(2, 0, 1), _draw_targets(boxes, PATCH)

    def _augment(self, patch: Image.Image, boxes: list[tuple[float, float, float, float]]
                 ) -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
        """Turn, occlude and recolour a patch (TrainConfig's augmentation fields; all off by default)."""
        rng, config = self.rng, self.config
        if config.rotate_degrees and rng.random() < 0.5:
            angle = rng.uniform(-config.rotate_degrees, config.rotate_degrees)
            patch = patch.rotate(angle, Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
            # PIL turns counter-clockwise as seen; with y pointing down a centre offset (dx, dy) goes to
            # (dx cos + dy sin, -dx sin + dy cos). Square face boxes keep their side.
            cos, sin, middle = math.cos(math.radians(angle)), math.sin(math.radians(angle)), PATCH / 2
            turned = []
            for x, y, w, h in boxes:
                dx, dy = x + w / 2 - middle, y + h / 2 - middle
                cx, cy = middle + dx * cos + dy * sin, middle - dx * sin + dy * cos
                turned.append((cx - w / 2, cy - h / 2, w, h))
            boxes = turned
        if boxes and config.occlude_share and rng.random() < config.occlude_share:
            x, y, w, h = rng.choice(boxes)
            bw, bh = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.2, 0.5)
            bx, by = x + rng.uniform(0, w - bw), y + rng.uniform(-0.1 * h, h - bh)
            colour = patch.getpixel((min(max(int(rng.uniform(0, PATCH)), 0), PATCH - 1),
                                     min(max(int(rng.uniform(0, PATCH)), 0), PATCH - 1)))
            patch = patch.copy()
            patch.paste(colour, (round(bx), round(by), round(bx + bw), round(by + bh)))  # type: ignore[arg-type]  # an RGB pixel
        if config.hue_shift and rng.random() < 0.5:
            hue, saturation, value = patch.convert("HSV").split()
            turn = round(rng.uniform(-config.hue_shift, config.hue_shift) * 256)
            hue = hue.point(lambda v: (v + turn) % 256)
            patch = Image.merge("HSV", (hue, saturation, value)).convert("RGB")
        return patch, boxes

    def _crop(self, image: Image.Image, left: float, top: float, side: float) -> Image.Image:
        box = (round(left), round(top), round(left + side), round(top + side))
        return image.crop(box).resize((PATCH, PATCH), Image.Resampling.BILINEAR)

    def _positive_patch(self, picture: LabelledPicture) -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
        rng = self.rng
        x, y, w, h = rng.choice(picture.boxes)
        face = math.sqrt(w * h)
        if rng.random() < 0.8:
            target = math.exp(rng.uniform(math.log(FACE_RANGE[0] + 2), math.log(FACE_RANGE[1] - 5)))
        else:  # out of range both ways: the net learns where its range ends
            target = rng.choice([rng.uniform(6, FACE_RANGE[0]), rng.uniform(FACE_RANGE[1], 260)])
        scale = target / face
        side = PATCH / scale
        left = x + w / 2 - side * rng.uniform(0.15, 0.85)
        top = y + h / 2 - side * rng.uniform(0.15, 0.85)
        patch = self._crop(picture.image, left, top, side)
        boxes = [((bx - left) * scale, (by - top) * scale, bw * scale, bh * scale) for bx, by, bw, bh in picture.boxes]
        return patch, boxes

    def _negative_patch(self, picture: LabelledPicture, avoid: Sequence[tuple[float, float, float, float]] = ()) -> Image.Image:
        """A random square of ``picture``; with ``avoid``, one that holds none of those boxes' centres."""
        rng = self.rng
        width, height = picture.image.size
        for _ in range(20):
            side = min(width, height) * rng.uniform(0.3, 1.3)
            left = rng.uniform(min(0.0, width - side), max(0.0, width - side))
            top = rng.uniform(min(0.0, height - side), max(0.0, height - side))
            if not any(left - w / 2 <= x + w / 2 <= left + side + w / 2 and top - h / 2 <= y + h / 2 <= top + side + h / 2
                       for x, y, w, h in avoid):
                break
        else:
            return Image.new("RGB", (PATCH, PATCH), (255, 255, 255))
        return self._crop(picture.image, left, top, side)

    def _pasted_patch(self) -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
        rng = self.rng
        background = self._negative_patch(rng.choice(self.negatives))
        source = rng.choice(self.positives)
        x, y, w, h = rng.choice(source.boxes)
        grow = rng.uniform(1.2, 1.8)  # some hair and neck around the face
        side = math.sqrt(w * h) * grow
        crop = source.image.crop((round(x + w / 2 - side / 2), round(y + h / 2 - side / 2),
                                  round(x + w / 2 + side / 2), round(y + h / 2 + side / 2)))
        target = math.exp(rng.uniform(math.log(FACE_RANGE[0] + 2), math.log(FACE_RANGE[1] - 5)))
        pasted = max(int(round(target * grow)), 8)
        px, py = rng.randint(0, max(PATCH - pasted, 0)), rng.randint(0, max(PATCH - pasted, 0))
        background.paste(crop.resize((pasted, pasted), Image.Resampling.BILINEAR), (px, py))
        scale = pasted / side
        face_x, face_y = px + (x - (x + w / 2 - side / 2)) * scale, py + (y - (y + h / 2 - side / 2)) * scale
        return background, [(face_x, face_y, w * scale, h * scale)]


def focal_loss(logits: torch.Tensor, heat: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of face centres."""
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    peaks = (heat >= 0.999).float()
    positive = -torch.log(prob) * (1 - prob) ** 2 * peaks
    negative = -torch.log(1 - prob) * prob**2 * (1 - heat) ** 4 * (1 - peaks)
    return ((positive + negative) * weight).sum() / peaks.sum().clamp(min=1.0)


def train(pictures: Sequence[LabelledPicture], config: TrainConfig | None = None, log: Any = None,
          device: str | None = None) -> tuple[FaceHeatmapNet, TrainResult]:
    """A detector trained on ``pictures`` (on ``device``, else CUDA when there is one), and what happened."""
    config = config or TrainConfig()
    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(pictures, config, log, choose_device(device))
    finally:
        torch.set_num_threads(threads_before)


def _train(pictures: Sequence[LabelledPicture], config: TrainConfig, log: Any,
           where: torch.device) -> tuple[FaceHeatmapNet, TrainResult]:
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    sampler = PatchSampler(pictures, config, rng)
    net = FaceHeatmapNet().to(where)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate, total_steps=config.steps, pct_start=0.1)
    result = TrainResult(vars(config).copy(), len(pictures), sum(len(p.boxes) for p in pictures),
                         len(sampler.negatives))
    def batches() -> Iterator[tuple[torch.Tensor, ...]]:
        while True:
            samples = [sampler.sample() for _ in range(config.batch_size)]
            yield (torch.from_numpy(np.stack([s[0] for s in samples])).to(where),
                   *(torch.from_numpy(np.stack([s[1][i] for s in samples])).to(where) for i in range(4)))

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        images, heat, log_side, size_mask, weight = batch
        logits, predicted = net(images)
        loss = focal_loss(logits, heat, weight)
        loss = loss + (F.l1_loss(predicted, log_side, reduction="none") * size_mask).sum() / size_mask.sum().clamp(min=1.0)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
        optimiser.step()
        schedule.step()
        result.losses.append(loss.detach().item())

    def report(done: int) -> None:
        if log:
            log(f"step {done}/{config.steps}: loss {np.mean(result.losses[-100:]):.3f}")

    net.train()
    timing = StepTiming()
    run_steps(batches(), step, 0, config.steps, "training the face detector", False, [Every(100, report)], timing)
    result.seconds = timing.spent
    net = net.eval().cpu()
    if config.verifier_steps:
        verifier_config = face_verifier.VerifierConfig(steps=config.verifier_steps, seed=config.seed)
        samples = verifier_samples(net, pictures, rng)
        net.verifier, result.verifier_losses, result.verifier_seconds = face_verifier.train(
            samples, verifier_config, log, where)
    return net, result


def verifier_samples(net: FaceHeatmapNet, pictures: Sequence[LabelledPicture], rng: random.Random,
                     random_per_picture: int = 40) -> list[face_verifier.Sample]:
    """What the verifier learns from: each labelled face (weighted up), the net's candidates on the
    training pictures (on a face: a face; far from any: a hard negative, weighted up), and random
    squares away from the faces."""
    detector = HeatmapDetector(net)
    samples = []
    for picture in pictures:
        samples += [face_verifier.Sample(picture.image, box, True) for box in picture.boxes] * 80
        for candidate in detector.candidates(picture.image, CANDIDATE_FLOOR, extra_views=True):
            overlap = max((_iou(candidate, box) for box in picture.boxes), default=0.0)
            if overlap >= 0.45:
                samples.append(face_verifier.Sample(picture.image, candidate[:4], True))
            elif overlap < 0.2:
                samples += [face_verifier.Sample(picture.image, candidate[:4], False)] * 3
        width, height = picture.image.size
        for _ in range(random_per_picture):
            side = rng.uniform(24, max(30.0, min(width, height) * 0.6))
            box = (rng.uniform(0, max(width - side, 0)), rng.uniform(0, max(height - side, 0)), side, side)
            if all(_iou(box, face) < 0.2 for face in picture.boxes):
                samples.append(face_verifier.Sample(picture.image, box, False))
    return samples


def save(net: FaceHeatmapNet, path: str | Path, result: TrainResult | None = None) -> None:
    save_checkpoint(path, {"format": FORMAT, "state": state_on_cpu(net),
                           "face_range": list(FACE_RANGE), "trained": vars(result) if result else {}})


def load(path: str | Path) -> FaceHeatmapNet:
    checkpoint = load_checkpoint(path, FORMAT)
    try:
        net = FaceHeatmapNet(verifier=any(key.startswith("verifier.") for key in checkpoint["state"]))
        net.load_state_dict(checkpoint["state"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: the weights do not fit this detector ({str(error).splitlines()[0]})") from None
    return net.eval()


# --- detection ------------------------------------------------------------------------------------


def pyramid_scales(width: int, height: int) -> list[float]:
    """The factors the picture is run at, largest first (module docstring, "Scales")."""
    longer, shorter = max(width, height), min(width, height)
    scale = min(1.0, MAX_SIDE / longer)
    if longer * scale < SMALL_SIDE:
        scale = 2.0 * scale
    scales: list[float] = []
    while shorter * scale >= MIN_LEVEL_SIDE or not scales:
        scales.append(scale)
        scale /= 2
    return scales


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a[:4]
    bx, by, bw, bh = b[:4]
    w = min(ax + aw, bx + bw) - max(ax, bx)
    h = min(ay + ah, by + bh) - max(ay, by)
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / (aw * ah + bw * bh - w * h)


def merge_overlaps(boxes: Iterable[tuple[float, float, float, float, float]]) -> list[tuple[float, float, float, float, float]]:
    """Best first, each box dropped that overlaps a better one by ``NMS_IOU`` or more."""
    kept: list[tuple[float, float, float, float, float]] = []
    for box in sorted(boxes, key=lambda b: -b[4]):
        if all(_iou(box, other) < NMS_IOU for other in kept):
            kept.append(box)
    return kept


class HeatmapDetector:
    """The learned detector behind the face stage's ``heatmap`` method (and its ``Detector`` shape)."""

    name = "heatmap"
    views = ("plain",)
    box_scale = 1.0

    def __init__(self, net: FaceHeatmapNet | str | Path, threshold: float = SCORE_THRESHOLD, threads: int = 0,
                 use_verifier: bool = True, ask_from: float = face_verifier.ASK_FROM) -> None:
        self.net = load(net) if isinstance(net, (str, Path)) else net.eval()
        self.threshold = threshold
        self.ask_from = ask_from  # centre score from which the verifier is asked (bench/faces.py compares)
        self.verifier = self.net.verifier if use_verifier else None
        if threads:  # for the whole process: the face stage runs one detector set per worker process
            torch.set_num_threads(threads)

    @torch.inference_mode()
    def candidates(self, image: Image.Image, floor: float,
                   extra_views: bool = False) -> list[tuple[float, float, float, float, float]]:
        """Every local peak scoring ``floor`` or more, as (x, y, w, h, score) in picture px, overlaps
        not merged: on the pyramid, and with ``extra_views`` on its mirror, on levels in between (1/sqrt 2
        of each) and their mirror."""
        picture = flatten_on_white(image).convert("RGB")
        width, height = picture.size
        scales = pyramid_scales(width, height)
        if extra_views:
            scales += [s / math.sqrt(2) for s in scales if min(width, height) * s / math.sqrt(2) >= MIN_LEVEL_SIDE]
        found: list[tuple[float, float, float, float, float]] = []
        for view in (picture, ImageOps.mirror(picture)) if extra_views else (picture,):
            mirrored = view is not picture
            for scale in scales:
                size = (max(round(width * scale), STRIDE), max(round(height * scale), STRIDE))
                level = view.resize(size, Image.Resampling.BILINEAR) if size != view.size else view
                tensor = torch.from_numpy(np.asarray(level, np.float32).transpose(2, 0, 1) / 255.0)[None]
                logits, log_side = self.net(tensor)
                prob = torch.sigmoid(logits)
                peaks = (prob == F.max_pool2d(prob[None], 3, stride=1, padding=1)[0]) & (prob >= floor)
                for _, iy, ix in peaks.nonzero().tolist():
                    side = math.exp(float(log_side[0, iy, ix])) / scale
                    cx, cy = (ix + 0.5) * STRIDE / scale, (iy + 0.5) * STRIDE / scale
                    if mirrored:
                        cx = width - cx
                    found.append((cx - side / 2, cy - side / 2, side, side, float(prob[0, iy, ix])))
        return found

    def boxes(self, image: Image.Image) -> list[tuple[float, float, float, float, float]]:
        """(x, y, w, h, score) in picture px, overlaps merged, best first. With a verifier, a
        candidate from any view is a face at the threshold, or from ``ASK_FROM`` if the verifier agrees."""
        verifier = self.verifier
        if verifier is None:
            found = self.candidates(image, self.threshold)
        else:
            picture = flatten_on_white(image).convert("RGB")  # once: the net's views and the crops share it
            ask_from = min(self.ask_from, self.threshold)
            found = self.candidates(picture, ask_from, extra_views=True)
            doubtful = [box for box in found if box[4] < self.threshold]
            if doubtful:
                agreed = face_verifier.probabilities(verifier, picture, [box[:4] for box in doubtful])
                rejected = {id(box) for box, p in zip(doubtful, agreed) if p < face_verifier.THRESHOLD}
                found = [box for box in found if id(box) not in rejected]
        return merge_overlaps(found)

    def vetoed(self, image: Image.Image, faces: Sequence[Any]) -> list[Any]:
        """``faces`` (another detector's ``Face`` boxes) less those this net's verifier is sure are no
        face (probability under ``face_verifier.VETO``); all of them without a verifier."""
        if self.verifier is None or not faces:
            return list(faces)
        picture = flatten_on_white(image).convert("RGB")
        agreed = face_verifier.probabilities(self.verifier, picture, [(f.x, f.y, f.w, f.h) for f in faces])
        return [face for face, p in zip(faces, agreed) if p >= face_verifier.VETO]

    def detect(self, image: Image.Image) -> list[Any]:
        from models.faces import Face  # models.faces imports this module for its "heatmap" method

        width, height = image.size
        faces = []
        for x, y, w, h, score in self.boxes(image):
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x1, y1 = min(x + w, float(width)), min(y + h, float(height))
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                faces.append(Face(round(x0), round(y0), round(x1 - x0), round(y1 - y0), round(score, 4), ("heatmap",)))
        return faces


def labelled_from_boxes(items: Iterable[tuple[Image.Image, Sequence[tuple[float, float, float, float]], str]]) -> list[LabelledPicture]:
    return [LabelledPicture(flatten_on_white(image).convert("RGB"), tuple(tuple(b) for b in boxes), name)  # type: ignore[misc]
            for image, boxes, name in items]


@dataclass
class Evaluation:
    """How a detector did on labelled pictures: a face counts as found on a box with IoU >= 0.3."""

    with_faces: int = 0
    found: int = 0  # pictures with faces on which at least one labelled face was found
    wrong_boxes: int = 0  # boxes on no labelled face, on pictures with faces
    negatives: int = 0
    false_positives: int = 0  # face-free pictures with any box
    missed: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.found / self.with_faces if self.with_faces else 0.0

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / self.negatives if self.negatives else 0.0


def evaluate(boxes_of: Any, pictures: Iterable[LabelledPicture], iou_threshold: float = 0.3) -> Evaluation:
    """Score ``boxes_of(image) -> [(x, y, w, h, ...)]`` on labelled pictures (no boxes: a negative)."""
    result = Evaluation()
    for picture in pictures:
        found = boxes_of(picture.image)
        if not picture.boxes:
            result.negatives += 1
            if found:
                result.false_positives += 1
                result.fired.append(picture.name)
            continue
        result.with_faces += 1
        hits = [b for b in found if any(_iou(tuple(b), truth) >= iou_threshold for truth in picture.boxes)]
        result.wrong_boxes += len(found) - len(hits)
        if hits:
            result.found += 1
        else:
            result.missed.append(picture.name)
    return result
