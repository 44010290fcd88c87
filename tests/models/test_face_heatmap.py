"""The learned face detector: it learns drawn heads from a few labelled scenes, loads what it saved,
reads labelme boxes, and its command trains and measures it in a fresh process.

The scenes are built here (models.faces.synthetic_face pasted on busy backgrounds, distractor
shapes on the face-free ones), so these tests need no data fixture. The net (and its verifier, for
tests/models/test_face_verifier.py) is trained once for the session, briefly, on the CPU
(tests/models/conftest.py): the point is that the machinery learns, not a good detector.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image, ImageDraw

from models import face_heatmap
from models.face_heatmap import HeatmapDetector, LabelledPicture, TrainConfig, evaluate, pyramid_scales
from models.faces import synthetic_face
from models.torch_common import CheckpointError
from tests.models.test_faces import background

REPO = Path(__file__).resolve().parents[2]


def scene(seed: int, with_face: bool = True) -> LabelledPicture:
    """A 320x240 busy background; with a drawn head of 48-120 px somewhere, or with face-free shapes."""
    rng = random.Random(seed)
    picture = background(320, 240, seed=seed)
    draw = ImageDraw.Draw(picture)
    for _ in range(3):  # distractors: round and square blobs of skin and hair colours
        x, y, r = rng.randint(0, 300), rng.randint(0, 220), rng.randint(15, 50)
        colour = rng.choice([(255, 228, 210), (90, 60, 50), (70, 110, 200)])
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=colour)
    if not with_face:
        return LabelledPicture(picture, (), f"negative-{seed}")
    side = rng.randint(48, 120)
    x, y = rng.randint(0, 320 - side), rng.randint(0, 240 - side)
    picture.paste(synthetic_face(side), (x, y))
    # the face proper (chin to brows, cheek to cheek), as a face detector's box would be
    return LabelledPicture(picture, ((x + 0.25 * side, y + 0.35 * side, 0.5 * side, 0.5 * side),), f"face-{seed}")


def train_on_scenes(steps: int, verifier_steps: int) -> tuple[face_heatmap.FaceHeatmapNet, face_heatmap.TrainResult]:
    """A brief CPU training run on 12 scenes with a drawn head and 6 face-free ones."""
    torch.manual_seed(0)
    pictures = [scene(seed) for seed in range(12)] + [scene(100 + seed, with_face=False) for seed in range(6)]
    config = TrainConfig(steps=steps, batch_size=16, learning_rate=3e-3, seed=1, threads=2, verifier_steps=verifier_steps)
    return face_heatmap.train(pictures, config, device="cpu")


@pytest.fixture(scope="module")
def trained(drawn_heads_detector) -> tuple[face_heatmap.FaceHeatmapNet, face_heatmap.TrainResult]:
    """The session's detector without its verifier: the heatmap net alone."""
    net, result = drawn_heads_detector
    alone = copy.deepcopy(net)
    alone.verifier = None
    return alone, result


def test_it_learns_to_find_drawn_heads_it_has_not_seen(trained):
    net, result = trained
    assert result.pictures == 18 and result.faces == 12 and result.negatives == 6
    assert sum(result.losses[-20:]) / 20 < 0.5 * sum(result.losses[:20]) / 20
    detector = HeatmapDetector(net)  # the default threshold, 0.6
    held_out = [scene(1000 + seed) for seed in range(20)] + [scene(2000 + seed, with_face=False) for seed in range(12)]
    score = evaluate(detector.boxes, held_out)
    assert score.with_faces == 20 and score.negatives == 12
    assert score.found >= 16, score.missed  # 19-20 over seeds 1-3 and 1-2 threads
    assert score.false_positives <= 1 and score.wrong_boxes <= 3, (score.fired, score.wrong_boxes)
    faces = detector.detect(held_out[0].image)
    assert faces and faces[0].sources == ("heatmap",)


def test_an_untrained_net_finds_nothing_so_the_scores_mean_something():
    detector = HeatmapDetector(face_heatmap.FaceHeatmapNet(), threshold=0.3)
    score = evaluate(detector.boxes, [scene(1000 + seed) for seed in range(4)])
    assert score.found == 0


def test_weights_round_trip_and_foreign_files_are_refused(trained, tmp_path):
    net, result = trained
    face_heatmap.save(net, tmp_path / "faces.pt", result)
    loaded = HeatmapDetector(tmp_path / "faces.pt", threshold=0.3)
    picture = scene(1000).image
    assert loaded.boxes(picture) == HeatmapDetector(net, threshold=0.3).boxes(picture)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        face_heatmap.load(tmp_path / "junk.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a anime-face-heatmap/1 checkpoint"):
        face_heatmap.load(tmp_path / "other.pt")


def test_the_pyramid_reaches_small_and_large_faces():
    assert pyramid_scales(256, 256) == [2.0, 1.0, 0.5, 0.25]  # a small picture is also searched at 2x
    assert pyramid_scales(320, 1024) == [1.0, 0.5, 0.25]
    assert pyramid_scales(4000, 3000)[0] == pytest.approx(1024 / 4000)
    assert pyramid_scales(40, 30) == [2.0]  # too small for any level: still one


def test_turned_patches_keep_their_boxes_on_the_faces_and_blocks_fall_on_faces():
    """The augmentation turns the patch: the face's box must turn with it (checked on a red dot's pixels)."""
    def dotted() -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
        patch = Image.new("RGB", (face_heatmap.PATCH, face_heatmap.PATCH), (40, 120, 200))
        ImageDraw.Draw(patch).ellipse((126, 36, 134, 44), fill=(255, 0, 0))  # the face box's centre (130, 40)
        return patch, [(120.0, 30.0, 20.0, 20.0)]

    turning = face_heatmap.PatchSampler([scene(1)], TrainConfig(rotate_degrees=40.0), random.Random(3))
    turned = 0
    for _ in range(20):
        out, boxes = turning._augment(*dotted())
        (x, y, w, h), = boxes
        red = numpy.argwhere((numpy.asarray(out)[..., 0] > 200) & (numpy.asarray(out)[..., 1] < 60))
        assert (w, h) == (20.0, 20.0) and len(red) > 20
        assert abs(red[:, 1].mean() - (x + 10)) < 1.0 and abs(red[:, 0].mean() - (y + 10)) < 1.0
        turned += (x, y) != (120.0, 30.0)
    assert 5 <= turned <= 15  # about half the patches are turned

    occluding = face_heatmap.PatchSampler([scene(1)], TrainConfig(occlude_share=1.0), random.Random(4))
    blocked = 0
    for _ in range(10):
        before, boxes = dotted()
        out, after = occluding._augment(before.copy(), boxes)
        changed = numpy.argwhere(numpy.any(numpy.asarray(out) != numpy.asarray(before), axis=2))
        assert after == boxes
        if len(changed):  # a block of one colour, inside the face box (it may reach a little above it)
            assert 120 <= changed[:, 1].min() and changed[:, 1].max() <= 140
            assert 28 <= changed[:, 0].min() and changed[:, 0].max() <= 50
            blocked += 1
    assert blocked >= 3  # the block's colour is drawn from the patch, so it is sometimes the face's own


def write_labelme(folder: Path, picture: LabelledPicture, name: str) -> None:
    picture.image.save(folder / f"{name}.png")
    if picture.boxes:
        shapes = [{"label": "face", "shape_type": "rectangle", "points": [[x, y], [x + w, y + h]]}
                  for x, y, w, h in picture.boxes]
        shapes.append({"label": "face", "shape_type": "polygon", "points": [[0, 0], [5, 0], [5, 5]]})  # not a box
        (folder / f"{name}.json").write_text(json.dumps({"shapes": shapes, "imagePath": f"{name}.png"}))


def test_labelme_rectangles_are_faces_and_a_picture_without_a_json_is_face_free(tmp_path):
    write_labelme(tmp_path, scene(3), "a")
    write_labelme(tmp_path, scene(4, with_face=False), "b")
    pictures = {p.name: p for p in face_heatmap.read_labelme_boxes(tmp_path)}
    assert set(pictures) == {"a.png", "b.png"}
    assert len(pictures["a.png"].boxes) == 1
    assert pictures["a.png"].boxes[0] == pytest.approx(scene(3).boxes[0])
    assert pictures["b.png"].boxes == ()


def test_labels_kept_apart_mirror_the_pictures_layout(tmp_path):
    """How datasets/anime-faces/ labels pictures the project may not copy: same relative paths, .json."""
    pictures_dir, labels_dir = tmp_path / "pictures", tmp_path / "labels"
    (labels_dir / "views").mkdir(parents=True)
    write_labelme(labels_dir / "views", scene(3), "a")
    (pictures_dir / "views").mkdir(parents=True)
    (labels_dir / "views" / "a.png").rename(pictures_dir / "views" / "a.png")
    (pictures_dir / "negatives").mkdir()
    scene(4, with_face=False).image.save(pictures_dir / "negatives" / "b.png")
    pictures = {p.name: p for p in face_heatmap.read_labelme_boxes(pictures_dir, labels_dir)}
    assert set(pictures) == {"views/a.png", "negatives/b.png"}
    assert pictures["views/a.png"].boxes[0] == pytest.approx(scene(3).boxes[0])
    assert pictures["negatives/b.png"].boxes == ()
    beside = {p.name: p for p in face_heatmap.read_labelme_boxes(pictures_dir)}
    assert beside["views/a.png"].boxes == ()  # without labels_dir: no JSON beside it, so face-free


def test_the_command_trains_and_evaluates_in_a_fresh_process(tmp_path):
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    for seed in range(3):
        write_labelme(labelled, scene(seed), f"face{seed}")
    write_labelme(labelled, scene(100, with_face=False), "none")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "scrapy", "faces"]
    done = subprocess.run([*command, "train", str(labelled), str(tmp_path / "faces.pt"), "--steps", "3",
                           "--batch-size", "4", "--verifier-steps", "3", "--device", "cpu"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "Trained on 4 pictures (3 faces, 1 face-free)" in done.stdout
    assert json.loads((tmp_path / "faces.pt.json").read_text())["config"]["steps"] == 3
    assert face_heatmap.load(tmp_path / "faces.pt").verifier is not None
    done = subprocess.run([*command, "evaluate", str(tmp_path / "faces.pt"), str(labelled)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "Faces found on " in done.stdout and "/3 pictures" in done.stdout and "/1 (" in done.stdout
    (tmp_path / "empty").mkdir()
    done = subprocess.run([*command, "train", str(tmp_path / "empty"), str(tmp_path / "x.pt")], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "no picture with a face box" in done.stderr
    assert not (tmp_path / "x.pt").exists()
