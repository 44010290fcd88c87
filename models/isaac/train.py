"""Train the recognizer on synthetic crops, with checkpoints that resume exactly.

* Data: training item ``i`` is ``SyntheticIcons(train)[i]``, and step ``s`` takes items
  ``s*B … s*B+B-1``: every item is new, a batch holds B different classes (labels cycle), and the
  data of any step is known from the step alone. So a resumed run sees exactly the batches an
  unbroken one would, whatever the number of loader workers.
* Optimiser: AdamW (no weight decay on BatchNorm and biases), a one-cycle learning rate (warm-up,
  then cosine down to almost nothing), cross-entropy with label smoothing.
* A checkpoint (every ``checkpoint_every`` steps, and at the end) holds the model, optimiser,
  scheduler, step, torch's random state (dropout), the history and the time spent; it is written
  atomically, so a kill leaves the previous one. Starting again with the same output folder
  continues from it; a different configuration is refused rather than mixed in.
* On CUDA: bf16 autocast; the network is channels-last everywhere (on these small convolutions it
  costs the CPU nothing, measured, and suits tensor cores).
* The loop times how long it waits for the loader against how long the model step takes, so a
  starved model shows in the log and the card.

Output folder: ``isaac-recognizer.pt`` (weights), ``isaac-recognizer.json`` (the card),
``checkpoint.pt``, ``history.json`` and ``history.png``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from models import training
from models.inference import Progress, file_sha256
from models.isaac.icons import IconSet
from models.isaac.net import IconNet, build_net, parameter_count
from models.isaac.synthesis import (
    FIXTURE_BACKGROUND_SPLIT,
    PROCEDURAL_SPLIT_RESIDUES,
    Backgrounds,
    Camera,
    SyntheticIcons,
)
from models.torch_common import autocast, choose_device, load_checkpoint, prepare_device, save_checkpoint

log = logging.getLogger(__name__)

WEIGHTS_NAME = "isaac-recognizer.pt"
CARD_NAME = "isaac-recognizer.json"
CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_FORMAT = "anime-art-datasets/isaac-recognizer"
CHECKPOINT_FORMAT = "anime-art-datasets/isaac-recognizer-checkpoint"
NO_ITEM = "none"  # the extra class: no item centred in the crop


class TrainError(RuntimeError):
    """A run cannot start or resume; the message says why."""


@dataclass
class TrainConfig:
    """Everything that decides a run's result; a resumed run must match it (``steps`` aside)."""

    steps: int = 30_000
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.02
    warmup_share: float = 0.1  # of the steps spent warming up the learning rate
    label_smoothing: float = 0.1
    seed: int = 0
    image_size: int = 64
    negative_every: int = 20  # every N-th training crop shows no item (class "none")
    widths: tuple[int, ...] = (48, 96, 192)
    blocks: tuple[int, ...] = (1, 2, 1)
    stem: int = 24
    dropout: float = 0.1
    camera: Camera = field(default_factory=Camera)

    def net_config(self, classes: int) -> dict[str, Any]:
        return {"classes": classes, "widths": list(self.widths), "blocks": list(self.blocks), "stem": self.stem,
                "dropout": self.dropout}

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"], data["blocks"] = list(self.widths), list(self.blocks)
        return data


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out; none of it changes the result."""

    checkpoint_every: int = 500
    eval_every: int = 2_000
    val_per_class: int = 2
    workers: int = -1  # loader processes; -1: one per spare CPU core, at most 6
    threads: int | None = None  # torch CPU threads; None: what is left after the workers
    device: str | None = None
    progress: bool = True
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps of this call: tests, budgets


def default_workers(device: torch.device) -> int:
    cores = os.cpu_count() or 1
    return max(0, min(cores - 1, 6 if device.type == "cuda" else 1))


class StepBatches:
    """Batch sampler: step s is items [s*B, (s+1)*B), from ``start`` to ``steps``."""

    def __init__(self, start: int, steps: int, batch_size: int) -> None:
        self.start, self.steps, self.batch_size = start, steps, batch_size

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield list(range(step * self.batch_size, (step + 1) * self.batch_size))


def make_optimizer(model: IconNet, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for name, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for name, p in model.named_parameters() if p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=max(config.steps, 2),
        pct_start=config.warmup_share, anneal_strategy="cos", div_factor=20.0, final_div_factor=200.0,
    )


def validation_set(icons: IconSet, config: TrainConfig, per_class: int, backgrounds: Backgrounds) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation set (unseen backgrounds), made once: ``per_class`` crops a class, no negatives."""
    dataset = SyntheticIcons(
        icons, "val", seed=config.seed, length=len(icons) * per_class, size=config.image_size,
        backgrounds=backgrounds, camera=config.camera,
    )
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([dataset.label(i) for i in range(len(dataset))])
    return images, labels


@torch.no_grad()
def predict_logits(model: IconNet, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Logits for uint8 images (N, 3, H, W), in batches, on the CPU as float32."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            outputs.append(model(batch).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros((0, model.head.out_features))


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int, items_only: int | None = None) -> float:
    """Share of rows whose label is among the top k; with ``items_only`` (the item class count)
    the "none" column is left out, so the score is over items alone, as the target is stated."""
    if items_only is not None:
        logits = logits[:, :items_only]
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean()) if len(labels) else 0.0


def seconds_text(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def card_data(icons: IconSet, config: TrainConfig, backgrounds: Backgrounds) -> dict[str, Any]:
    return {
        "seed": config.seed,
        "icons_source": icons.source,
        "icons_sha256": icons.digest(),
        "image_size": config.image_size,
        "camera": asdict(config.camera),
        "negative_every": config.negative_every,
        "backgrounds": {
            "fixtures": {split: names for split, names in backgrounds.names.items()},
            "fixture_rule": FIXTURE_BACKGROUND_SPLIT,
            "procedural_seed_mod_10": {split: list(residues) for split, residues in PROCEDURAL_SPLIT_RESIDUES.items()},
        },
    }


def plot_history(history: dict[str, list], path: Path) -> None:
    """Training loss and accuracy, and validation top-1/top-5, against samples seen."""
    steps = np.asarray(history.get("step", []))
    batch = history.get("batch_size", 1)
    losses, accuracies = [], []
    if len(steps):
        losses.append(training.Line(steps * batch, history["loss"], "train loss"))
        accuracies.append(training.Line(steps * batch, history["train_top1"], "train top-1 (augmented)", {"alpha": 0.6}))
    val_steps = np.asarray(history.get("val_step", []))
    if len(val_steps):
        accuracies.append(training.Line(val_steps * batch, history["val_top1"], "val top-1", {"marker": "o"}))
        accuracies.append(training.Line(val_steps * batch, history["val_top5"], "val top-5", {"marker": "o"}))
    training.plot_panels(path, [
        training.Panel("loss", losses, xlabel="samples seen", legend=True),
        training.Panel("accuracy (held-out backgrounds)", accuracies, xlabel="samples seen", ylim=(0, 1), legend=True),
    ], size=(11, 4))


@dataclass
class TrainResult:
    out_dir: Path
    weights_path: Path
    card_path: Path
    card: dict[str, Any]
    finished: bool  # False when stop_after ended the call early (a checkpoint is there to resume)
    step: int


def _config_key(config: TrainConfig) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint (the step count may grow)."""
    data = config.as_dict()
    data.pop("steps")
    return json.loads(json.dumps(data))


def train(icons: IconSet, out_dir: str | Path, config: TrainConfig = TrainConfig(), options: RunOptions = RunOptions(),
          backgrounds: Backgrounds | None = None) -> TrainResult:
    """Train (or resume) a recognizer of ``icons`` plus "none" into ``out_dir``; see the module doc."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = choose_device(options.device)
    prepare_device(device)
    workers = default_workers(device) if options.workers < 0 else options.workers
    if device.type == "cpu":
        torch.set_num_threads(options.threads or max(1, (os.cpu_count() or 1) - workers))
    backgrounds = backgrounds if backgrounds is not None else Backgrounds.load()
    classes = len(icons) + 1
    torch.manual_seed(config.seed)
    model = build_net(config.net_config(classes)).to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    history: dict[str, Any] = {"batch_size": config.batch_size, "step": [], "loss": [], "train_top1": [], "lr": [],
                               "val_step": [], "val_top1": [], "val_top5": []}
    step, spent, wait_total, compute_total = 0, 0.0, 0.0, 0.0
    checkpoint_path = out_dir / CHECKPOINT_NAME
    icons_digest = icons.digest()
    if checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path, CHECKPOINT_FORMAT)
        if saved["config_key"] != _config_key(config) or saved["icons_sha256"] != icons_digest:
            raise TrainError(
                f"{checkpoint_path} is from a run with other settings or icons; use another output folder "
                "or delete the checkpoint to start over"
            )
        if saved["steps"] != config.steps:
            raise TrainError(f"{checkpoint_path} was made for {saved['steps']} steps, not {config.steps} "
                             "(the learning-rate schedule depends on it)")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        step, spent = int(saved["step"]), float(saved["seconds"])
        wait_total, compute_total = float(saved["wait_seconds"]), float(saved["compute_seconds"])
        history = saved["history"]
        log.info("Isaac (resume): step %d of %d from %s", step, config.steps, checkpoint_path)

    val_images, val_labels = validation_set(icons, config, options.val_per_class, backgrounds)

    def checkpoint() -> None:
        save_checkpoint(checkpoint_path, {
            "format": CHECKPOINT_FORMAT, "config_key": _config_key(config), "steps": config.steps,
            "icons_sha256": icons_digest, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "step": step,
            "seconds": spent, "wait_seconds": wait_total, "compute_seconds": compute_total, "history": history,
        })

    def validate() -> None:
        logits = predict_logits(model, val_images, device)
        history["val_step"].append(step)
        history["val_top1"].append(topk_accuracy(logits, val_labels, 1, len(icons)))
        history["val_top5"].append(topk_accuracy(logits, val_labels, 5, len(icons)))
        log.info("Isaac (val): step %d, top-1 %.4f, top-5 %.4f", step, history["val_top1"][-1], history["val_top5"][-1])

    dataset = SyntheticIcons(
        icons, "train", seed=config.seed, length=config.steps * config.batch_size, size=config.image_size,
        backgrounds=backgrounds, camera=config.camera, negative_every=config.negative_every,
    )
    last = config.steps if options.stop_after is None else min(config.steps, step + options.stop_after)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(step, last, config.batch_size), num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(config.seed),  # its seed draw must not move dropout's random state
    )
    bar = Progress(f"training (from step {step})", last - step, options.progress)
    window_loss, window_correct, window_count = 0.0, 0, 0
    mark = time.monotonic()
    for images, labels in loader:
        fetched = time.monotonic()
        model.train()
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        window_loss += float(loss.detach()) * len(labels)
        window_correct += int((logits.detach().argmax(1) == labels).sum())
        window_count += len(labels)
        done = time.monotonic()
        wait_total += fetched - mark
        compute_total += done - fetched
        spent += done - mark
        mark = done
        bar.update(1)
        if step % 50 == 0 or step == last:
            history["step"].append(step)
            history["loss"].append(window_loss / window_count)
            history["train_top1"].append(window_correct / window_count)
            history["lr"].append(scheduler.get_last_lr()[0])
            window_loss, window_correct, window_count = 0.0, 0, 0
        if step % options.eval_every == 0 and step != config.steps:
            validate()
            mark = time.monotonic()
        if step % options.checkpoint_every == 0 or step == last:
            checkpoint()
            mark = time.monotonic()
    bar.close()
    finished = step >= config.steps
    if not finished:
        checkpoint()
        log.info("Isaac (stopped): step %d of %d, checkpoint %s", step, config.steps, checkpoint_path)
        return TrainResult(out_dir, out_dir / WEIGHTS_NAME, out_dir / CARD_NAME, {}, False, step)
    if not history["val_step"] or history["val_step"][-1] != step:
        validate()
        checkpoint()
    return _write_outputs(out_dir, model, icons, config, backgrounds, history, step, spent, wait_total, compute_total,
                          device, workers, len(val_labels))


def _write_outputs(out_dir: Path, model: IconNet, icons: IconSet, config: TrainConfig, backgrounds: Backgrounds,
                   history: dict[str, Any], step: int, spent: float, wait_total: float, compute_total: float,
                   device: torch.device, workers: int, val_images: int) -> TrainResult:
    weights_path, card_path = out_dir / WEIGHTS_NAME, out_dir / CARD_NAME
    net = config.net_config(len(icons) + 1)
    save_checkpoint(weights_path, {"format": WEIGHTS_FORMAT, "net": net,
                                   "model": {k: v.cpu() for k, v in model.state_dict().items()}})
    samples = step * config.batch_size
    card = {
        "format": WEIGHTS_FORMAT,
        "format_version": 1,
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": file_sha256(weights_path),
        "created": training.created_now(),
        "classes": [item.as_dict() for item in icons.classes],
        "no_item_class": NO_ITEM,
        "input": {"size": config.image_size, "pixels": "uint8 RGB, (N, 3, H, W); the network scales them itself",
                  "crop": "a square around the item, the item filling about 65-100% of its side"},
        "net": {**net, "parameters": parameter_count(model)},
        "data": card_data(icons, config, backgrounds),
        "training": {
            **{k: v for k, v in config.as_dict().items() if k != "camera"},
            "samples": samples,
            "seconds": round(spent, 1),
            "wall_time": seconds_text(spent),
            "samples_per_second": round(samples / spent, 1) if spent else None,
            "loader_wait_seconds": round(wait_total, 1),
            "model_seconds": round(compute_total, 1),
            "device": str(device),
            "loader_workers": workers,
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
        },
        "metrics": {
            "val_top1": history["val_top1"][-1],
            "val_top5": history["val_top5"][-1],
            "val_images": val_images,
            "note": "validation: fixed crops on the validation backgrounds; `scrapy isaac evaluate` adds test metrics",
        },
    }
    training.write_card(card_path, card, ensure_ascii=False)
    (out_dir / "history.json").write_text(json.dumps(history) + "\n", encoding="utf-8")
    plot_history(history, out_dir / "history.png")
    return TrainResult(out_dir, weights_path, card_path, card, True, step)


def config_from_card(card: dict[str, Any]) -> TrainConfig:
    """The training configuration a card records (to make its test set with the same camera)."""
    training = card.get("training", {})
    known = {f.name for f in fields(TrainConfig)} - {"camera"}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in training.items() if k in known}
    camera_values = card.get("data", {}).get("camera", {})
    camera = Camera(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in camera_values.items()})
    return TrainConfig(**values, camera=camera)


def estimate_hours(samples: int, samples_per_second: float) -> float:
    return samples / samples_per_second / 3600 if samples_per_second > 0 else math.inf
