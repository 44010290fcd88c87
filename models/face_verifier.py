"""A second look at the learned face detector's weak candidates: a small CNN that says face or not.

Why: the heatmap net (models/face_heatmap.py) does propose most faces it misses, on some view of
the picture (its mirror, an in-between pyramid level), but at centre scores (0.2-0.5) where it
also fires on food, badges and weapons. A classifier that sees only a crop around one candidate,
taught on those very mistakes (hard negatives, as in the cascade detectors' bootstrapping), tells
the two apart far better than the centre score does: held out, it cuts the detector's false
positives at a low threshold from 5-7 to 1-2 in 40 face-free pictures (docs/curation.md). It also
judges the classic pair's boxes when both run (``VETO``): the pair's own mistakes on full-body art
are crops it is sure about.

The crop is a square of ``CONTEXT`` times the box side (hair and chin count), white outside the
picture, shrunk to ``SIDE`` px; the probability is averaged over the crop and its mirror. The net
is trained by ``models.face_heatmap.train`` after the heatmap, from the same labelled pictures, and
travels in the same weights file.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from models.training import Every, StepTiming, run_steps

SIDE = 48  # px, the crop the net sees
CONTEXT = 1.5  # the crop's side over the face box's side
ASK_FROM = 0.4  # detector scores from which a candidate below the detector's threshold is verified
THRESHOLD = 0.5  # verifier probability that makes such a candidate a face
# a box the classic pair (cascade and animeface) agreed on is dropped only when the verifier is this
# sure it is no face: held out, their boxes on heads scored 0.1-1.0 and their boxes elsewhere on
# full-body cards (on the body, far below the head) 0.00-0.04 (docs/curation.md, "Face crops")
VETO = 0.1

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """A box on an RGB picture that is a face or is not (drawn shifted, scaled and turned in training)."""

    image: Image.Image
    box: Box
    face: bool


@dataclass
class VerifierConfig:
    steps: int = 1500
    batch_size: int = 64  # half faces, half not
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class FaceVerifierNet(nn.Module):
    """Crops (N, 3, SIDE, SIDE) in 0..1 -> face logits (N,). ~120k parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 96))
        self.head = nn.Linear(96, 1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.body(crops - 0.5), 1).flatten(1))[:, 0]


def crop(picture: Image.Image, box: Box, angle: float = 0.0) -> np.ndarray:
    """(3, SIDE, SIDE) float32 in 0..1: the square around ``box``'s centre, ``CONTEXT`` times its side."""
    x, y, w, h = box
    side = math.sqrt(w * h) * CONTEXT
    cx, cy = x + w / 2, y + h / 2
    extent = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    patch = picture.transform((SIDE, SIDE), Image.Transform.EXTENT, extent, Image.Resampling.BILINEAR,
                              fillcolor=(255, 255, 255))
    if angle:
        patch = patch.rotate(angle, Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
    return (np.asarray(patch, np.float32) / 255.0).transpose(2, 0, 1)


@torch.inference_mode()
def probabilities(net: FaceVerifierNet, picture: Image.Image, boxes: Sequence[Box]) -> list[float]:
    """Face probability of each box on an RGB ``picture``, averaged with the mirrored crop."""
    if not boxes:
        return []
    crops = torch.from_numpy(np.stack([crop(picture, tuple(b[:4])) for b in boxes]))  # type: ignore[arg-type]
    net = net.eval()
    prob = (torch.sigmoid(net(crops)) + torch.sigmoid(net(torch.flip(crops, [3])))) / 2
    return [float(p) for p in prob]


def _drawn(sample: Sample, rng: random.Random) -> np.ndarray:
    """A training crop: shifted by up to 12%, scaled 0.8-1.25x, half turned up to 15 degrees, half
    mirrored, recoloured as the heatmap's patches are (gamma, channel gains, sometimes gray)."""
    x, y, w, h = sample.box
    side = math.sqrt(w * h) * math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    cx = x + w / 2 + rng.uniform(-0.12, 0.12) * side
    cy = y + h / 2 + rng.uniform(-0.12, 0.12) * side
    array = crop(sample.image, (cx - side / 2, cy - side / 2, side, side),
                 rng.uniform(-15, 15) if rng.random() < 0.5 else 0.0)
    if rng.random() < 0.5:
        array = array[:, :, ::-1]
    if rng.random() < 0.15:
        array = np.repeat(array.mean(axis=0, keepdims=True), 3, axis=0)
    if rng.random() < 0.5:
        array = array ** math.exp(rng.uniform(math.log(0.7), math.log(1.8)))
    gain = np.array([rng.uniform(0.8, 1.2) for _ in range(3)], np.float32)[:, None, None] * rng.uniform(0.8, 1.2)
    return np.clip(array * gain + rng.uniform(-0.1, 0.1), 0.0, 1.0).astype(np.float32)


def train(samples: Sequence[Sample], config: VerifierConfig | None = None, log: Any = None,
          where: torch.device | None = None) -> tuple[FaceVerifierNet, list[float], float]:
    """A verifier trained on ``samples`` (both kinds needed); its losses and seconds."""
    config = config or VerifierConfig()
    faces = [s for s in samples if s.face]
    others = [s for s in samples if not s.face]
    if not faces or not others:
        raise ValueError("the face verifier needs both face and non-face samples")
    where = where or torch.device("cpu")
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    net = FaceVerifierNet().to(where)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate, total_steps=config.steps)
    half = max(config.batch_size // 2, 1)
    labels = torch.tensor([1.0] * half + [0.0] * half, device=where)
    losses: list[float] = []

    def batches() -> Iterator[torch.Tensor]:
        while True:
            drawn = [rng.choice(faces) for _ in range(half)] + [rng.choice(others) for _ in range(half)]
            yield torch.from_numpy(np.stack([_drawn(s, rng) for s in drawn])).to(where)

    def step(crops: torch.Tensor) -> None:
        loss = F.binary_cross_entropy_with_logits(net(crops), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
        optimiser.step()
        schedule.step()
        losses.append(loss.detach().item())

    def report(done: int) -> None:
        if log:
            log(f"verifier step {done}/{config.steps}: loss {np.mean(losses[-100:]):.3f}")

    net.train()
    timing = StepTiming()
    run_steps(batches(), step, 0, config.steps, "training the face verifier", False, [Every(100, report)], timing)
    return net.eval().cpu(), losses, timing.spent
