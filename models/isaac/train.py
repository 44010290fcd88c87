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
* The loop (``training.run_steps``) times how long it waits for the loader against how long the
  model step takes, so a starved model shows in the log and the card.

Output folder: ``isaac-recognizer.pt`` (weights), ``isaac-recognizer.json`` (the card),
``checkpoint.pt``, ``history.json`` and ``history.png``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from core.errors import ProjectError
from models import training
from models.inference import file_sha256
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


class TrainError(ProjectError, RuntimeError):
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


def plot_history(history: dict[str, Any], path: Path) -> None:
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
    workers = _split_cores(device, options)
    backgrounds = backgrounds if backgrounds is not None else Backgrounds.load()
    run = _Run(icons, config, device, out_dir / CHECKPOINT_NAME)
    first = run.resume()
    run.val_images, run.val_labels = validation_set(icons, config, options.val_per_class, backgrounds)
    last = config.steps if options.stop_after is None else min(config.steps, first + options.stop_after)
    step = training.run_steps(
        _training_loader(icons, config, backgrounds, first, last, workers, device), run.train_step, first, last,
        f"training (from step {first})", options.progress, timing=run.timing, hooks=[
            training.Every(50, run.record_window, at_last=True),
            # not after the final step: the validation after the loop covers it
            training.Every(options.eval_every, run.validate, not_at=config.steps),
            training.Every(options.checkpoint_every, run.checkpoint, at_last=True),
        ])
    if step < config.steps:
        run.checkpoint(step)
        log.info("Isaac (stopped): step %d of %d, checkpoint %s", step, config.steps, run.checkpoint_path)
        return TrainResult(out_dir, out_dir / WEIGHTS_NAME, out_dir / CARD_NAME, {}, False, step)
    if not run.history["val_step"] or run.history["val_step"][-1] != step:
        run.validate(step)
        run.checkpoint(step)
    return _write_outputs(out_dir, run.model, icons, config, backgrounds, run.history, step, run.timing, device, workers,
                          len(run.val_labels))


def _split_cores(device: torch.device, options: RunOptions) -> int:
    """The number of loader processes; on the CPU, torch gets the cores they leave (or ``options.threads``)."""
    workers = default_workers(device) if options.workers < 0 else options.workers
    if device.type == "cpu":
        torch.set_num_threads(options.threads or max(1, (os.cpu_count() or 1) - workers))
    return workers


def _training_loader(icons: IconSet, config: TrainConfig, backgrounds: Backgrounds, first: int, last: int,
                     workers: int, device: torch.device) -> torch.utils.data.DataLoader[Any]:
    """The batches of steps ``first`` .. ``last - 1``, each known from its step alone (module doc, "Data")."""
    dataset = SyntheticIcons(
        icons, "train", seed=config.seed, length=config.steps * config.batch_size, size=config.image_size,
        backgrounds=backgrounds, camera=config.camera, negative_every=config.negative_every,
    )
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(first, last, config.batch_size), num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(config.seed),  # its seed draw must not move dropout's random state
    )


class _Run:
    """One call of ``train``: the model, optimiser and schedule, the history and time a checkpoint
    keeps, and what a training step and each hook of the step loop do."""

    def __init__(self, icons: IconSet, config: TrainConfig, device: torch.device, checkpoint_path: Path) -> None:
        self.icons, self.config, self.device, self.checkpoint_path = icons, config, device, checkpoint_path
        torch.manual_seed(config.seed)
        self.model = build_net(config.net_config(len(icons) + 1)).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs leave out Module.to(memory_format=)
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = make_scheduler(self.optimizer, config)
        self.history: dict[str, Any] = {"batch_size": config.batch_size, "step": [], "loss": [], "train_top1": [],
                                        "lr": [], "val_step": [], "val_top1": [], "val_top5": []}
        self.timing = training.StepTiming()
        self.icons_digest = icons.digest()
        self.val_images, self.val_labels = torch.empty(0), torch.empty(0)  # train() sets them
        # the training loss and top-1 since the last history row (a row every 50 steps)
        self.window_loss, self.window_correct, self.window_count = 0.0, 0, 0

    def resume(self) -> int:
        """Load the checkpoint, if there is one, and return its step (else 0); refuse one from another run."""
        if not self.checkpoint_path.is_file():
            return 0
        saved = load_checkpoint(self.checkpoint_path, CHECKPOINT_FORMAT)
        if saved["config_key"] != _config_key(self.config) or saved["icons_sha256"] != self.icons_digest:
            raise TrainError(
                f"{self.checkpoint_path} is from a run with other settings or icons; use another output folder "
                "or delete the checkpoint to start over"
            )
        if saved["steps"] != self.config.steps:
            raise TrainError(f"{self.checkpoint_path} was made for {saved['steps']} steps, not {self.config.steps} "
                             "(the learning-rate schedule depends on it)")
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        self.timing = training.StepTiming(spent=float(saved["seconds"]), loader_wait=float(saved["wait_seconds"]),
                                          compute=float(saved["compute_seconds"]))
        self.history = saved["history"]
        step = int(saved["step"])
        log.info("Isaac (resume): step %d of %d from %s", step, self.config.steps, self.checkpoint_path)
        return step

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.model.train()
        images = batch[0].to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = batch[1].to(self.device, non_blocking=True)
        with autocast(self.device):
            logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
        self.optimizer.step()
        self.scheduler.step()
        self.window_loss += float(loss.detach()) * len(labels)
        self.window_correct += int((logits.detach().argmax(1) == labels).sum())
        self.window_count += len(labels)

    def record_window(self, step: int) -> None:
        """A history row: the mean training loss and top-1 since the last row, and the learning rate."""
        self.history["step"].append(step)
        self.history["loss"].append(self.window_loss / self.window_count)
        self.history["train_top1"].append(self.window_correct / self.window_count)
        self.history["lr"].append(self.scheduler.get_last_lr()[0])
        self.window_loss, self.window_correct, self.window_count = 0.0, 0, 0

    def validate(self, step: int) -> None:
        logits = predict_logits(self.model, self.val_images, self.device)
        items = len(self.icons)
        self.history["val_step"].append(step)
        self.history["val_top1"].append(topk_accuracy(logits, self.val_labels, 1, items))
        self.history["val_top5"].append(topk_accuracy(logits, self.val_labels, 5, items))
        log.info("Isaac (val): step %d, top-1 %.4f, top-5 %.4f", step, self.history["val_top1"][-1],
                 self.history["val_top5"][-1])

    def checkpoint(self, step: int) -> None:
        save_checkpoint(self.checkpoint_path, {
            "format": CHECKPOINT_FORMAT, "config_key": _config_key(self.config), "steps": self.config.steps,
            "icons_sha256": self.icons_digest, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(), "step": step,
            "seconds": self.timing.spent, "wait_seconds": self.timing.loader_wait,
            "compute_seconds": self.timing.compute, "history": self.history,
        })


def _write_outputs(out_dir: Path, model: IconNet, icons: IconSet, config: TrainConfig, backgrounds: Backgrounds,
                   history: dict[str, Any], step: int, timing: training.StepTiming, device: torch.device, workers: int,
                   val_images: int) -> TrainResult:
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
            "seconds": round(timing.spent, 1),
            "wall_time": seconds_text(timing.spent),
            "samples_per_second": round(samples / timing.spent, 1) if timing.spent else None,
            "loader_wait_seconds": round(timing.loader_wait, 1),
            "model_seconds": round(timing.compute, 1),
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
    values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in training.items() if k in known}
    camera_values = card.get("data", {}).get("camera", {})
    camera_fields: dict[str, Any] = {str(k): (tuple(v) if isinstance(v, list) else v) for k, v in camera_values.items()}
    camera = Camera(**camera_fields)
    return TrainConfig(**values, camera=camera)
