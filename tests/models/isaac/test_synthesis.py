"""Synthetic crops and scenes: deterministic from (seed, split, index), and backgrounds kept apart."""

from __future__ import annotations

import numpy as np
import torch

from models.isaac.synthesis import (
    FIXTURE_BACKGROUND_SPLIT,
    SPLITS,
    Backgrounds,
    SyntheticIcons,
    preview_grid,
    procedural_background,
    procedural_split,
    render_scene,
    scene_rng,
)
from models.isaac.train import StepBatches


def dataset(icons, backgrounds, **overrides) -> SyntheticIcons:
    options = {"split": "train", "seed": 5, "length": 64, "backgrounds": backgrounds, "negative_every": 10} | overrides
    return SyntheticIcons(icons, **options)


def test_same_seed_split_and_index_give_identical_tensors(small_icons, backgrounds):
    first = dataset(small_icons, backgrounds)
    second = dataset(small_icons, Backgrounds.load())  # another instance, items asked for in another order
    for index in (31, 0, 9, 7):
        image, label = first[index]
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
        again, label_again = second[index]
        assert torch.equal(image, again) and label == label_again


def test_a_different_index_seed_or_split_gives_a_different_picture(small_icons, backgrounds):
    base = dataset(small_icons, backgrounds)
    picture = base[3][0]
    assert not torch.equal(picture, base[3 + len(small_icons)][0])  # same class, next round
    assert not torch.equal(picture, dataset(small_icons, backgrounds, seed=6)[3][0])
    assert not torch.equal(picture, dataset(small_icons, backgrounds, split="val")[3][0])
    pictures = torch.stack([base[i][0] for i in range(12)]).flatten(1).float()
    assert torch.cdist(pictures, pictures).fill_diagonal_(1e9).min() > 100  # no two alike


def test_loader_workers_give_the_batches_the_main_process_makes(small_icons, backgrounds):
    data = dataset(small_icons, backgrounds)
    loader = torch.utils.data.DataLoader(data, batch_sampler=StepBatches(2, 4, 8), num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    for step, (images, labels) in zip((2, 3), batches):
        expected = [data[i] for i in range(step * 8, step * 8 + 8)]
        assert torch.equal(images, torch.stack([image for image, _ in expected]))
        assert labels.tolist() == [label for _, label in expected]


def test_labels_cycle_through_the_classes_with_every_nth_a_negative(small_icons, backgrounds):
    data = dataset(small_icons, backgrounds, negative_every=5, length=200)
    labels = [data.label(i) for i in range(200)]
    negatives = [i for i, label in enumerate(labels) if label == len(small_icons)]
    assert negatives == list(range(4, 200, 5))
    items = [label for label in labels if label != len(small_icons)]
    assert items[:len(small_icons) * 2] == list(range(len(small_icons))) * 2  # balanced rounds


def test_the_captured_backgrounds_are_split_by_a_fixed_rule(backgrounds):
    names = {split: set(backgrounds.names[split]) for split in SPLITS}
    assert names["val"] == {"bg_00003.png", "bg_00009.png"} and names["test"] == {"bg_00005.png", "bg_00011.png"}
    assert len(names["train"]) == 8
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"]) and not (names["val"] & names["test"])
    assert {name: split for split in SPLITS for name in names[split]} == FIXTURE_BACKGROUND_SPLIT


def test_held_out_splits_never_draw_a_training_background(backgrounds):
    seen: dict[str, set[str]] = {split: set() for split in SPLITS}
    for split in SPLITS:
        for index in range(300):
            _, name = backgrounds.draw(np.random.default_rng([9, index]), split, 24, 24, 2.0)
            seen[split].add(name)
            if name.startswith("procedural:"):
                assert procedural_split(int(name.split(":")[1])) == split
            else:
                assert name in backgrounds.names[split]
    assert any(n.startswith("procedural:") for n in seen["test"]) and any(n.startswith("bg_") for n in seen["test"])
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])


def test_a_procedural_background_is_a_function_of_its_seed():
    first = procedural_background(1238, 40, 30, 2.0)
    assert first.shape == (30, 40, 3) and first.dtype == np.uint8
    assert np.array_equal(first, procedural_background(1238, 40, 30, 2.0))
    assert not np.array_equal(first, procedural_background(1248, 40, 30, 2.0))


def test_a_scene_holds_3_to_8_distinct_items_with_boxes_inside_it(isaac_icons, backgrounds):
    for index in range(4):
        scene = render_scene(isaac_icons.pixels, scene_rng(0, "test", index), backgrounds, "test")
        again = render_scene(isaac_icons.pixels, scene_rng(0, "test", index), backgrounds, "test")
        assert np.array_equal(scene.image, again.image) and np.array_equal(scene.boxes, again.boxes)
        height, width = scene.image.shape[:2]
        assert 3 <= len(scene.labels) <= 8 and len(set(scene.labels.tolist())) == len(scene.labels)
        assert (scene.boxes[:, 2] > scene.boxes[:, 0]).all() and (scene.boxes[:, 3] > scene.boxes[:, 1]).all()
        assert (scene.boxes[:, :2] > -2).all() and (scene.boxes[:, 2] < width + 2).all() and (scene.boxes[:, 3] < height + 2).all()
        assert scene.background in backgrounds.names["test"] or procedural_split(int(scene.background.split(":")[1])) == "test"
    for index in range(10):  # a small picture gets smaller items, not fewer
        small = render_scene(isaac_icons.pixels, scene_rng(1, "val", index), backgrounds, "val", size=(200, 150))
        assert small.image.shape == (150, 200, 3) and 3 <= len(small.labels) <= 8


def test_preview_grid(small_icons, backgrounds):
    grid = preview_grid(dataset(small_icons, backgrounds), count=10, columns=5, zoom=1)
    assert grid.size == (5 * 64, 2 * (64 + 12))
