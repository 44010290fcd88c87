"""A real, short training run, then identify and locate with what it learnt; and exact resume.

The session's recognizer (conftest ``small_model``) learns 20 classes spread over collectibles and
trinkets, plus "no item", from 16,000 synthetic crops. It is measured on the test split, whose
backgrounds it never saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from models.isaac.evaluate import crop_metrics, evaluate
from models.isaac.identify import Recognizer, identify_files
from models.isaac.locate import LocateOptions, Locator, match_detections, summarise
from models.isaac.synthesis import CLEAN, SyntheticIcons, render_scene, scene_rng
from models.isaac.train import CARD_NAME, CHECKPOINT_NAME, WEIGHTS_NAME, RunOptions, TrainConfig, TrainError, train

REPO = Path(__file__).resolve().parents[3]


def test_short_training_reaches_the_floor_on_unseen_backgrounds(small_model, small_icons, backgrounds):
    result, seconds = small_model
    assert result.finished and result.step == 250
    # About 70 s on two idle CPU cores; the bound leaves room for a machine shared with other work.
    assert seconds < 240, f"the short run took {seconds:.0f}s"
    card = json.loads((result.out_dir / CARD_NAME).read_text(encoding="utf-8"))
    assert [c["key"] for c in card["classes"]] == [item.key for item in small_icons.classes]
    assert card["input"]["size"] == 64 and card["data"]["seed"] == 3 and card["created"]
    assert card["data"]["icons_sha256"] == small_icons.digest()
    assert card["training"]["samples"] == 250 * 64 and card["metrics"]["val_top1"] > 0.8
    assert (result.out_dir / WEIGHTS_NAME).is_file() and (result.out_dir / "history.png").is_file()

    metrics = crop_metrics(Recognizer.load(result.out_dir), small_icons, per_class=10, negatives=100,
                           progress=False, backgrounds=backgrounds)
    assert metrics["images"] == 200
    assert metrics["top1"] >= 0.85, metrics["worst_pairs"][:3]
    assert metrics["top5"] >= 0.97
    assert metrics["empty_called_none"] >= 0.5  # crops with no item centred are mostly called so
    assert set(metrics["per_kind"]) == {"collectible", "trinket"}


def test_evaluate_writes_the_report_plots_and_card_metrics(small_model, small_icons, tmp_path):
    result, _ = small_model
    report = evaluate(result.out_dir, small_icons, per_class=2, negatives=20, scenes=1, out_dir=tmp_path,
                      progress=False, update_card=False)
    assert {"crops", "locate"} <= set(report)
    saved = json.loads((tmp_path / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["crops"]["images"] == 40 and 0 <= saved["locate"]["precision"] <= 1
    assert (tmp_path / "per_class.png").is_file() and (tmp_path / "confusions.png").is_file()


def test_checkpoints_resume_exactly_where_they_stopped(tmp_path, small_icons, backgrounds):
    icons = small_icons.first(6)
    config = TrainConfig(steps=6, batch_size=12, seed=1)
    options = {"eval_every": 10**9, "checkpoint_every": 2, "val_per_class": 1, "workers": 0, "progress": False}
    train(icons, tmp_path / "a", config, RunOptions(**options), backgrounds=backgrounds)
    stopped = train(icons, tmp_path / "b", config, RunOptions(**options, stop_after=3), backgrounds=backgrounds)
    assert not stopped.finished and stopped.step == 3
    saved = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    assert saved["step"] == 3 and saved["scheduler"]["last_epoch"] == 3
    resumed = train(icons, tmp_path / "b", config, RunOptions(**options), backgrounds=backgrounds)
    assert resumed.finished and resumed.step == 6
    first = torch.load(tmp_path / "a" / WEIGHTS_NAME, weights_only=True)["model"]
    second = torch.load(tmp_path / "b" / WEIGHTS_NAME, weights_only=True)["model"]
    assert all(torch.equal(first[name], second[name]) for name in first)
    with pytest.raises(TrainError):  # other settings never mix into a checkpoint
        train(icons, tmp_path / "b", TrainConfig(steps=6, batch_size=12, seed=2), RunOptions(**options),
              backgrounds=backgrounds)


def test_identify_names_a_clean_sample_in_both_languages(small_model, small_icons, backgrounds, tmp_path):
    result, _ = small_model
    recognizer = Recognizer.load(result.out_dir)
    clean = SyntheticIcons(small_icons, "test", seed=11, length=40, camera=CLEAN, backgrounds=backgrounds)
    paths = []
    for index in (7, 13, 20 + 2):  # classes 7, 13 and 2
        path = tmp_path / f"sample{index}.png"
        Image.fromarray(clean.image(index)).save(path)
        paths.append(path)
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    results = identify_files(recognizer, [*paths, tmp_path / "broken.png"], top=5)
    for path_result, index in zip(results, (7, 13, 2)):
        expected = small_icons.classes[index]
        top = path_result["guesses"][0]
        assert (top["key"], top["name_en"], top["name_zh"], top["description"]) == (
            expected.key, expected.name_en, expected.name_zh, expected.description)
        assert top["confidence"] > 0.5 and len(path_result["guesses"]) == 5
    assert "error" in results[-1]
    # a non-square crop of a sprite file with transparency works too
    icon = Image.fromarray(small_icons.pixels[5]).resize((96, 96), Image.Resampling.NEAREST)
    wide = Image.new("RGBA", (140, 100), (0, 0, 0, 0))
    wide.paste(icon, (22, 2))
    assert recognizer.identify([wide])[0][0].item.key == small_icons.classes[5].key


def test_locate_finds_the_items_of_generated_scenes(small_model, small_icons, backgrounds):
    result, _ = small_model
    locator = Locator(Recognizer.load(result.out_dir), small_icons.pixels, LocateOptions())
    counts = []
    for index in range(5):
        scene = render_scene(small_icons.pixels, scene_rng(4, "test", index), backgrounds, "test", size=(320, 240))
        detections = locator.locate(scene.image)
        assert all(0 <= d.class_index < len(small_icons) and d.item.name_zh for d in detections)
        counts.append(match_detections(detections, scene.boxes, scene.labels))
    summary = summarise(counts)
    assert summary["items"] >= 15
    assert summary["recall"] >= 0.6 and summary["precision"] >= 0.6, summary
    assert summary["mean_iou"] >= 0.65, summary


def test_scrapy_isaac_identify_and_preview(small_model, small_icons, backgrounds, tmp_path):
    result, _ = small_model
    sample = tmp_path / "crop.png"
    clean = SyntheticIcons(small_icons, "val", seed=2, length=20, camera=CLEAN, backgrounds=backgrounds)
    Image.fromarray(clean.image(4)).save(sample)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    scrapy = [sys.executable, "-m", "scrapy.cmdline", "isaac"]
    found = subprocess.run([*scrapy, "identify", "--model", str(result.out_dir), "--json", str(sample), "--nolog"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout.strip().splitlines()[-1])
    assert answer["guesses"][0]["key"] == small_icons.classes[4].key
    grid = tmp_path / "grid.png"
    made = subprocess.run([*scrapy, "preview", str(grid), "--count", "8", "-s", "LOG_LEVEL=WARNING"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert Image.open(grid).size == (8 * 128, 128 + 12)
    refused = subprocess.run([*scrapy, "identify", "--model", str(tmp_path / "none"), str(sample), "--nolog"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "no model card" in refused.stderr


def test_a_fresh_clone_identifies_items_with_the_shipped_recognizer(isaac_icons, backgrounds, tmp_path):
    """Acceptance of issue 30: no training first. With nothing in OUTPUT_DIR/isaac-model, `scrapy isaac
    identify` uses models/shipped/isaac-recognizer/ (the default recipe, all 907 classes), and names
    clean crops on test-split backgrounds it never trained on."""
    shipped = REPO / "models" / "shipped" / "isaac-recognizer"
    assert (shipped / WEIGHTS_NAME).stat().st_size < 10 * 2**20
    clean = SyntheticIcons(isaac_icons, "test", seed=5, length=len(isaac_icons), camera=CLEAN, backgrounds=backgrounds,
                           negative_every=0)
    indexes = list(range(0, len(isaac_icons), 90))
    paths = []
    for index in indexes:
        paths.append(tmp_path / f"crop{index}.png")
        Image.fromarray(clean.image(index)).save(paths[-1])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    found = subprocess.run([sys.executable, "-m", "scrapy.cmdline", "isaac", "identify", "--json", *map(str, paths),
                            "-s", f"OUTPUT_DIR={tmp_path / 'output'}", "--nolog"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    answers = [json.loads(line) for line in found.stdout.strip().splitlines()]
    right = sum(answer["guesses"][0]["key"] == isaac_icons.classes[clean.label(index)].key
                for answer, index in zip(answers, indexes))
    assert len(answers) == len(indexes) and right >= len(indexes) - 1, (right, len(indexes))
    assert not (tmp_path / "output" / "isaac-model").exists()  # nothing trained, nothing written
    evaluated = subprocess.run([sys.executable, "-m", "scrapy.cmdline", "isaac", "evaluate", "--per-class", "1",
                                "--negatives", "20", "--scenes", "0", "--no-progress", "-s",
                                f"OUTPUT_DIR={tmp_path / 'output'}", "--nolog"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "output" / "isaac-evaluation" / "evaluation.json").is_file()
    assert sorted(p.name for p in shipped.iterdir()) == ["README.md", CARD_NAME, WEIGHTS_NAME]  # nothing written there
