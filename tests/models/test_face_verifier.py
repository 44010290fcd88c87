"""The crop verifier: its crops are where the box is (white outside the picture), it learns drawn heads
from distractors, and the learned detector with a verifier keeps it in its file and uses it.

Scenes come from test_face_heatmap (drawn heads on busy backgrounds); everything trains briefly on the
CPU: the point is that the machinery learns and is wired in, not a good verifier.
"""

from __future__ import annotations

import copy
import random

import numpy
import pytest
import torch
from PIL import Image

from models import face_heatmap, face_verifier
from models.face_heatmap import HeatmapDetector, evaluate
from models.face_verifier import Sample, VerifierConfig
from models.faces import Face, detect_faces
from tests.models.test_face_heatmap import scene


def test_a_crop_is_the_square_around_the_box_and_white_outside_the_picture():
    picture = Image.new("RGB", (200, 100), (0, 0, 255))
    picture.paste((255, 0, 0), (40, 20, 80, 60))  # a red 40 px square
    inside = face_verifier.crop(picture, (40, 20, 40, 40))
    assert inside.shape == (3, face_verifier.SIDE, face_verifier.SIDE) and inside.dtype == numpy.float32
    middle = face_verifier.SIDE // 2
    assert tuple(inside[:, middle, middle]) == pytest.approx((1.0, 0.0, 0.0), abs=0.01)
    assert tuple(inside[:, 1, 1]) == pytest.approx((0.0, 0.0, 1.0), abs=0.01)  # CONTEXT: the blue around it
    corner = face_verifier.crop(picture, (-20, -20, 40, 40))  # centred on the picture's corner
    assert tuple(corner[:, 2, 2]) == pytest.approx((1.0, 1.0, 1.0), abs=0.01)
    assert tuple(corner[:, -3, -3]) == pytest.approx((0.0, 0.0, 1.0), abs=0.01)


def samples_from(seeds: range) -> list[Sample]:
    """Each scene's head, and face-free squares (distractor blobs included) from the face-free scenes."""
    rng = random.Random(seeds.start)
    samples = []
    for seed in seeds:
        with_face = scene(seed)
        samples.append(Sample(with_face.image, with_face.boxes[0], True))
        free = scene(10_000 + seed, with_face=False)
        for _ in range(3):
            side = rng.uniform(30, 90)
            samples.append(Sample(free.image, (rng.uniform(0, 320 - side), rng.uniform(0, 240 - side), side, side), False))
    return samples


def test_it_learns_drawn_heads_from_distractors_it_has_not_seen():
    net, losses, seconds = face_verifier.train(samples_from(range(40)), VerifierConfig(steps=150, batch_size=32, seed=2))
    assert len(losses) == 150 and seconds > 0
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    held_out = samples_from(range(500, 530))
    scores = [face_verifier.probabilities(net, s.image, [s.box])[0] for s in held_out]
    right = sum((p >= face_verifier.THRESHOLD) == s.face for s, p in zip(held_out, scores))
    assert right >= 0.9 * len(held_out), right


def test_both_kinds_of_sample_are_needed():
    with pytest.raises(ValueError, match="both face and non-face"):
        face_verifier.train(samples_from(range(3))[:1], VerifierConfig(steps=2))


@pytest.fixture(scope="module")
def with_verifier(drawn_heads_detector) -> tuple[face_heatmap.FaceHeatmapNet, face_heatmap.TrainResult]:
    return drawn_heads_detector


def test_training_adds_a_verifier_that_the_file_keeps(with_verifier, tmp_path):
    net, result = with_verifier
    assert net.verifier is not None and len(result.verifier_losses) == 150 and result.verifier_seconds > 0
    face_heatmap.save(net, tmp_path / "faces.pt", result)
    loaded = face_heatmap.load(tmp_path / "faces.pt")
    assert loaded.verifier is not None
    picture = scene(1001).image
    assert HeatmapDetector(loaded, threshold=0.6).boxes(picture) == HeatmapDetector(net, threshold=0.6).boxes(picture)


def test_the_verifier_decides_the_doubtful_candidates(with_verifier):
    """Below the threshold, a candidate counts only when the verifier agrees: with a verifier that
    agrees with nothing, only the confident boxes are left, and with one that agrees with everything,
    every candidate from ASK_FROM up is."""
    net = copy.deepcopy(with_verifier[0])  # its verifier is overwritten below
    pictures = [scene(3000 + seed).image for seed in range(6)] + [scene(4000 + seed, with_face=False).image for seed in range(6)]
    detector = HeatmapDetector(net, threshold=0.9)
    candidates = [detector.candidates(p, face_verifier.ASK_FROM, extra_views=True) for p in pictures]
    assert any(0.3 <= box[4] < 0.9 for found in candidates for box in found), "nothing doubtful to decide"
    head = net.verifier.head
    for bias, expected in ((-50.0, lambda box: box[4] >= 0.9), (50.0, lambda box: True)):
        torch.nn.init.constant_(head.bias, bias)
        torch.nn.init.zeros_(head.weight)
        for picture, found in zip(pictures, candidates):
            assert detector.boxes(picture) == face_heatmap.merge_overlaps([b for b in found if expected(b)])


def test_a_detector_with_a_verifier_still_finds_the_heads(with_verifier):
    net, _ = with_verifier
    held_out = [scene(1000 + seed) for seed in range(12)] + [scene(2000 + seed, with_face=False) for seed in range(8)]
    score = evaluate(HeatmapDetector(net).boxes, held_out)
    assert score.found >= 9, score.missed
    assert score.false_positives <= 2, score.fired


def box(face: Face) -> tuple[int, int, int, int]:
    return face.x, face.y, face.w, face.h


class FixedBoxes:
    """A classic detector (name "animeface") that answers the same confident boxes on any picture."""

    name = "animeface"
    views = ("plain",)
    box_scale = 1.0

    def __init__(self, boxes: list[tuple[int, int, int, int]]) -> None:
        self.boxes = boxes

    def detect(self, image: Image.Image) -> list[Face]:
        return [Face(*box, 0.99, ("animeface",)) for box in self.boxes]


def test_the_verifier_vetoes_the_classic_boxes_it_is_sure_are_no_face(with_verifier):
    """Beside the classic pair, a heatmap detector with a verifier drops their boxes under VETO, and
    keeps the rest: the head and a patch of background as the classic detector's boxes, then a verifier
    that rejects everything, then one that accepts everything."""
    net = copy.deepcopy(with_verifier[0])
    picture = scene(1003)
    head = tuple(round(v) for v in picture.boxes[0])
    background = (0, 0, 40, 40) if face_heatmap._iou((0, 0, 40, 40), picture.boxes[0]) == 0 else (270, 190, 40, 40)
    classic = FixedBoxes([head, background])
    detector = HeatmapDetector(net)
    detector.detect = lambda image: []  # its own boxes out of the way: only the veto is under test
    probs = face_verifier.probabilities(net.verifier, picture.image, [head, background])
    assert probs[0] >= face_verifier.VETO, probs  # the trained verifier keeps the head
    kept = detector.vetoed(picture.image, classic.detect(picture.image))
    assert [box(f) for f in kept] == [b for b, p in zip((head, background), probs) if p >= face_verifier.VETO]

    head_layer = net.verifier.head
    for bias, expected in ((-50.0, set()), (50.0, {head, background})):
        torch.nn.init.constant_(head_layer.bias, bias)
        torch.nn.init.zeros_(head_layer.weight)
        assert {box(f) for f in detector.vetoed(picture.image, classic.detect(picture.image))} == expected
        assert {box(f) for f in detect_faces(picture.image, [classic, detector], method="views")} == expected
    assert HeatmapDetector(net, use_verifier=False).vetoed(picture.image, classic.detect(picture.image)) == \
        classic.detect(picture.image)  # no verifier, no veto
