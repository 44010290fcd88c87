"""The training shell (models/training.py) that the classifier, segmenter, DCGAN and Isaac trainers share."""

from __future__ import annotations

import hashlib
import itertools
import json
import time

import pytest
from PIL import Image

from models import training


def test_split_values_depend_on_the_name_only_and_spread_evenly():
    values = [training.split_value(f"class/{i}.png") for i in range(2000)]
    assert values == [training.split_value(f"class/{i}.png") for i in range(2000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.17 < sum(v < 0.2 for v in values) / len(values) < 0.23  # a 20 % share gets about 20 %


def test_data_hash_is_one_tab_separated_line_per_sample_in_order():
    rows = [("a/x.png", 5), ("b/y.png", 7)]
    assert training.data_hash(rows) == hashlib.sha256(b"a/x.png\t5\nb/y.png\t7\n").hexdigest()
    assert training.data_hash(reversed(rows)) != training.data_hash(rows)  # callers sort when order is not meaning
    assert training.data_hash([("a/x.png", 6), ("b/y.png", 7)]) != training.data_hash(rows)


def test_run_epoch_averages_what_the_steps_return_and_times_them():
    seen = []

    def step(index: int) -> dict[str, float]:
        seen.append(index)
        return {"loss": float(index), "accuracy": 1.0}

    row = training.run_epoch("epoch 1/1", 4, step, images_per_step=8, progress=False)
    assert seen == [0, 1, 2, 3]
    assert row["loss"] == pytest.approx(1.5) and row["accuracy"] == 1.0
    assert row["seconds"] >= 0 and row["images_per_second"] > 0


def test_run_steps_fires_each_hook_after_the_steps_it_names_in_order():
    fired, stepped = [], []
    hooks = [
        training.Every(2, lambda step: fired.append(("even", step))),
        training.Every(3, lambda step: fired.append(("third", step)), at_last=True),
        training.Every(2, lambda step: fired.append(("even, not 6", step)), not_at=6),
    ]
    last = training.run_steps(iter("abcdefg"), stepped.append, 0, 7, "training", False, hooks)
    assert last == 7 and stepped == list("abcdefg")
    assert fired == [("even", 2), ("even, not 6", 2), ("third", 3), ("even", 4), ("even, not 6", 4),
                     ("even", 6), ("third", 6), ("third", 7)]  # 7: the call's last step


def test_run_steps_resumes_from_a_later_step_on_the_same_rhythm_and_adds_to_the_timing():
    fired, stepped = [], []
    timing = training.StepTiming(spent=100.0, loader_wait=40.0, compute=60.0)  # from a checkpoint
    last = training.run_steps(range(10), stepped.append, 4, 9, "training (from step 4)", False,
                              [training.Every(3, fired.append, at_last=True)], timing)
    assert last == 9 and stepped == [0, 1, 2, 3, 4]  # the caller's batches start at the resumed step
    assert fired == [6, 9]  # multiples of 3 counted from step 0, not from step 4
    assert timing.spent >= 100.0 and timing.loader_wait >= 40.0 and timing.compute >= 60.0


def test_run_steps_ends_with_the_batches_and_draws_none_past_the_last_step():
    drawn = []

    def batches():
        for index in itertools.count():
            drawn.append(index)
            yield index

    assert training.run_steps(batches(), lambda batch: None, 0, 3, "training", False) == 3
    assert drawn == [0, 1, 2]
    assert training.run_steps(iter([0, 1]), lambda batch: None, 5, 10, "training", False) == 7  # ran out at step 7
    assert training.run_steps(iter([]), lambda batch: None, 5, 5, "training", False) == 5


def test_run_steps_times_waiting_and_computing_but_not_the_hooks():
    def slow_batches():
        while True:
            time.sleep(0.01)
            yield None

    timing = training.StepTiming()
    started = time.monotonic()
    training.run_steps(slow_batches(), lambda batch: time.sleep(0.02), 0, 4, "training", False,
                       [training.Every(1, lambda step: time.sleep(0.05))], timing)
    elapsed = time.monotonic() - started
    assert timing.loader_wait >= 4 * 0.01 and timing.compute >= 4 * 0.02
    assert timing.spent == pytest.approx(timing.loader_wait + timing.compute)
    assert timing.spent <= elapsed - 4 * 0.05  # the hooks' 0.2 s is in neither figure


def test_the_keeper_writes_the_last_checkpoint_always_and_the_best_only_when_it_improves(tmp_path):
    written = []
    keeper = training.CheckpointKeeper(tmp_path / "last.pt", tmp_path / "best.pt",
                                       save=lambda path, checkpoint: written.append((path.name, checkpoint)))
    assert keeper.keep("e1", 1, 0.5) is True
    assert keeper.keep("e2", 2, 0.4) is False
    assert keeper.keep("e3", 3, 0.5) is False  # a tie keeps the earlier epoch
    assert keeper.keep("e4", 4, 0.7) is True
    assert written == [("last.pt", "e1"), ("best.pt", "e1"), ("last.pt", "e2"), ("last.pt", "e3"),
                       ("last.pt", "e4"), ("best.pt", "e4")]
    assert (keeper.best_epoch, keeper.best_score) == (4, 0.7)


def test_the_torch_keeper_writes_real_checkpoints(tmp_path):
    import torch

    from models.torch_common import load_checkpoint

    keeper = training.CheckpointKeeper(tmp_path / "last.pt", tmp_path / "best.pt")
    keeper.keep({"format": "test", "weights": torch.ones(2)}, 1, 1.0)
    assert load_checkpoint(tmp_path / "best.pt", "test")["weights"].tolist() == [1.0, 1.0]
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_card_is_indented_json_and_the_plot_a_png(tmp_path):
    training.write_card(tmp_path / "card.json", {"name": "モナ", "created": training.created_now()}, ensure_ascii=False)
    text = (tmp_path / "card.json").read_text(encoding="utf-8")
    assert "モナ" in text and text.endswith("}\n") and json.loads(text)["created"].endswith("+00:00")
    training.plot_panels(tmp_path / "curves.png", [
        training.Panel("loss", [training.Line([1, 2, 3], [1.0, 0.5, 0.25], "train", {"marker": "o"})], legend=True),
        training.Panel("accuracy", [training.Line([1, 2, 3], [0.5, None, 0.9])], ylim=(0, 1)),
    ])
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1000, 400)
