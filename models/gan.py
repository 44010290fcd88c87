"""A DCGAN on the face crops: generated anime faces from a ``scrapy export --faces`` tree.

The face stage stores 96x96 crops (``OUTPUT_DIR/faces/``); ``scrapy export DEST --faces`` writes
them as ``DEST/{split}/{class}/*.jpg``. ``train`` reads every ``.jpg``/``.jpeg``/``.png`` under the
folder it is given, recursively, so either works, and ignores classes and splits: a GAN learns
the distribution of all of them.

The networks have the shape of Radford et al.'s DCGAN (arXiv:1511.06434), sized for 96x96: the
generator turns a 100-d normal vector into a 6x6 map with one transposed convolution, then
doubles it four times (6, 12, 24, 48, 96) with strided transposed convolutions, batch norm and
ReLU, ending in tanh; the discriminator mirrors it with strided convolutions, batch norm (not on
its first layer) and leaky ReLU, down to one logit. Weights start from N(0, 0.02) (batch-norm
scales from N(1, 0.02)); Adam with lr 2e-4 and beta1 0.5, as in the paper. Other sizes that are a
multiple of 16 work the same way (64 starts from 4x4).

Stabilisers: one-sided label smoothing (the discriminator's target for real faces is 0.9, for
fakes 0), the generator's non-saturating loss, and random horizontal flips of the real faces.

What a run writes to OUT:

* ``samples/epoch_NNNN.png``: the generator's faces for one fixed noise batch, after each epoch,
  so that progress is comparable between epochs (and across a resume: the batch is checkpointed).
* ``checkpoints/epoch_NNNN.pt`` every ``checkpoint_every`` epochs and after the last: both
  networks, both optimisers, the fixed noise, the random generator's state, the config and the
  loss history. ``resume=True`` continues from the newest one, and the result is the same as a
  run that was never stopped (on the same device).
* ``losses.png``: discriminator and generator loss per step and per epoch, and the
  discriminator's mean output on real and on generated faces.
* ``gan.json``: config, data, per-epoch history and images/s.

``sample`` writes N faces from a checkpoint (``sample_NNNN.png``) and a grid of them.
"""

from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from core.errors import ProjectError
from core.progress import progress_bar
from core.storage import atomic_write
from models import training
from models.imaging import flatten_on_white
from models.torch_common import (
    CheckpointError,
    autocast,
    choose_device,
    load_checkpoint,
    memory_format,
    prepare_device,
    save_checkpoint,
    state_on_cpu,
    uses_bf16,
)

log = logging.getLogger("models.gan")

CHECKPOINT_FORMAT = "anime-art-datasets/dcgan"
FACE_SUFFIXES = (".jpg", ".jpeg", ".png")
CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)\.pt$")


class GanError(ProjectError, ValueError):
    """The faces folder, the options or a checkpoint cannot be used; the message says why."""


@dataclass(frozen=True)
class GanConfig:
    """Everything that rebuilds the networks and the training recipe: stored in every checkpoint."""

    image_size: int = 96
    noise_dim: int = 100
    generator_width: int = 64  # channels of the generator's last hidden layer (x8 at its first)
    discriminator_width: int = 64  # channels of the discriminator's first layer
    batch_size: int = 64
    learning_rate: float = 2e-4
    beta1: float = 0.5
    real_label: float = 0.9  # one-sided label smoothing
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size % 16 or self.image_size < 32:
            raise GanError(f"image size {self.image_size}: must be a multiple of 16, at least 32")


# --------------------------------------------------------------------------- networks


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: convolutions N(0, 0.02), batch-norm scales N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """(N, noise_dim) normal noise to (N, 3, size, size) faces in -1..1."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        width, start = config.generator_width, config.image_size // 16
        self.net = nn.Sequential(
            nn.ConvTranspose2d(config.noise_dim, width * 8, start, 1, 0, bias=False),
            nn.BatchNorm2d(width * 8), nn.ReLU(True),
            nn.ConvTranspose2d(width * 8, width * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 4), nn.ReLU(True),
            nn.ConvTranspose2d(width * 4, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU(True),
            nn.ConvTranspose2d(width * 2, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh(),
        )
        self.apply(init_weights)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.net(noise[:, :, None, None])


class Discriminator(nn.Module):
    """(N, 3, size, size) faces in -1..1 to (N,) logits: real when positive."""

    def __init__(self, config: GanConfig) -> None:
        super().__init__()
        width, end = config.discriminator_width, config.image_size // 16
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width * 2, width * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 4), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width * 4, width * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 8), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width * 8, 1, end, 1, 0, bias=False),
        )
        self.apply(init_weights)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net(faces).flatten()


# --------------------------------------------------------------------------- data


def find_faces(faces_dir: str | Path) -> list[Path]:
    """Every face picture under ``faces_dir``, recursively, sorted; hidden files left out."""
    root = Path(faces_dir)
    if not root.is_dir():
        raise GanError(f"{root}: not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in FACE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def load_faces(faces_dir: str | Path, image_size: int, progress: bool = False) -> tuple[torch.Tensor, list[Path]]:
    """(N, 3, size, size) uint8 faces (centre-cropped to a square and resized where needed) and their paths."""
    paths = find_faces(faces_dir)
    faces, kept = [], []
    bar = progress_bar("reading faces", len(paths), progress)
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                rgb = flatten_on_white(image).convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            log.warning("%s: skipped, not a readable picture (%s)", path, error)
        else:
            if rgb.size != (image_size, image_size):
                rgb = ImageOps.fit(rgb, (image_size, image_size), Image.Resampling.BICUBIC)
            faces.append(torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1))
            kept.append(path)
        bar.update(1)
    bar.close()
    if len(faces) < 2:
        raise GanError(f"{faces_dir}: {len(faces)} readable face pictures (.jpg, .png); a GAN needs many more")
    return torch.stack(faces), kept


def data_hash(paths: Sequence[Path], root: Path) -> str:
    return training.data_hash((path.relative_to(root).as_posix(), path.stat().st_size) for path in paths)


def to_unit_range(faces: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 to float -1..1 (the generator's tanh range)."""
    return faces.float() / 127.5 - 1.0


def to_pictures(faces: torch.Tensor) -> list[Image.Image]:
    """Generator output (-1..1) to RGB pictures."""
    pixels = ((faces.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(face.permute(1, 2, 0).numpy()) for face in pixels]


def grid(pictures: Sequence[Image.Image], columns: int | None = None, gap: int = 2) -> Image.Image:
    """Pictures of one size in rows, on white, ``gap`` pixels apart."""
    columns = columns or math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    width, height = pictures[0].size
    sheet = Image.new("RGB", (columns * (width + gap) + gap, rows * (height + gap) + gap), (255, 255, 255))
    for index, picture in enumerate(pictures):
        row, column = divmod(index, columns)
        sheet.paste(picture, (gap + column * (width + gap), gap + row * (height + gap)))
    return sheet


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- checkpoints


@dataclass
class GanState:
    """What a checkpoint holds, live."""

    config: GanConfig
    generator: Generator
    discriminator: Discriminator
    generator_optimizer: torch.optim.Optimizer
    discriminator_optimizer: torch.optim.Optimizer
    fixed_noise: torch.Tensor  # (samples, noise_dim), on the CPU
    random: torch.Generator  # shuffling, flips and noise
    epoch: int = 0
    history: dict[str, Any] = field(default_factory=lambda: {"steps": {"loss_d": [], "loss_g": []}, "epochs": []})


def new_state(config: GanConfig, sample_count: int = 64) -> GanState:
    torch.manual_seed(config.seed)
    generator, discriminator = Generator(config), Discriminator(config)
    random = torch.Generator().manual_seed(config.seed)
    betas = (config.beta1, 0.999)
    return GanState(
        config=config,
        generator=generator,
        discriminator=discriminator,
        generator_optimizer=torch.optim.Adam(generator.parameters(), lr=config.learning_rate, betas=betas),
        discriminator_optimizer=torch.optim.Adam(discriminator.parameters(), lr=config.learning_rate, betas=betas),
        fixed_noise=torch.randn(sample_count, config.noise_dim, generator=random),
        random=random,
        history={"steps": {"loss_d": [], "loss_g": []}, "epochs": []},
    )


def state_checkpoint(state: GanState, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "config": asdict(state.config),
        "epoch": state.epoch,
        "generator": state_on_cpu(state.generator),
        "discriminator": state_on_cpu(state.discriminator),
        "generator_optimizer": state.generator_optimizer.state_dict(),
        "discriminator_optimizer": state.discriminator_optimizer.state_dict(),
        "fixed_noise": state.fixed_noise.clone(),
        "random_state": state.random.get_state(),
        "history": state.history,
        "data": data,
        "torch_version": str(torch.__version__),
    }


def restore_state(checkpoint: dict[str, Any], device: torch.device) -> GanState:
    """A checkpoint's networks (on ``device``), optimisers, noise, random state and history."""
    state = new_state(GanConfig(**checkpoint["config"]), len(checkpoint["fixed_noise"]))
    state.generator.load_state_dict(checkpoint["generator"], strict=True)
    state.discriminator.load_state_dict(checkpoint["discriminator"], strict=True)
    for module in (state.generator, state.discriminator):
        module.to(device, memory_format=memory_format(device))  # type: ignore[call-overload]  # torch's stubs leave out Module.to(memory_format=)
    # after the move: the optimisers' moment tensors follow their parameters' device
    state.generator_optimizer.load_state_dict(checkpoint["generator_optimizer"])
    state.discriminator_optimizer.load_state_dict(checkpoint["discriminator_optimizer"])
    state.fixed_noise = checkpoint["fixed_noise"]
    state.random.set_state(checkpoint["random_state"])
    state.epoch = int(checkpoint["epoch"])
    state.history = checkpoint["history"]
    return state


def load_gan(path: str | Path) -> dict[str, Any]:
    try:
        return load_checkpoint(path, CHECKPOINT_FORMAT)
    except CheckpointError as error:
        raise GanError(str(error)) from None


def newest_checkpoint(out_dir: Path) -> Path | None:
    """``checkpoints/epoch_NNNN.pt`` with the highest epoch, if any."""
    found = [(int(match[1]), path) for path in (out_dir / "checkpoints").glob("epoch_*.pt")
             if (match := CHECKPOINT_NAME.match(path.name))]
    return max(found)[1] if found else None


def load_generator(path: str | Path, device: torch.device | None = None) -> tuple[Generator, dict[str, Any]]:
    """The generator of a checkpoint, in eval mode, and the checkpoint."""
    checkpoint = load_gan(path)
    generator = Generator(GanConfig(**checkpoint["config"]))
    generator.load_state_dict(checkpoint["generator"], strict=True)
    device = device or choose_device()
    generator.to(device, memory_format=memory_format(device)).eval()  # type: ignore[call-overload]  # torch's stubs leave out Module.to(memory_format=)
    return generator, checkpoint


# --------------------------------------------------------------------------- training


def generate(generator: Generator, noise: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Faces for ``noise`` from the generator in eval mode (batch-norm running statistics), on the CPU."""
    was_training = generator.training
    generator.eval()
    with torch.no_grad(), autocast(device):
        faces = generator(noise.to(device)).float().cpu()
    generator.train(was_training)
    return faces


def plot_losses(history: dict[str, Any], path: Path) -> None:
    """Loss per step (faint) and per epoch (bold) for both networks; D's mean output on real and fake."""
    epochs = history["epochs"]
    steps = history["steps"]
    steps_per_epoch = len(steps["loss_d"]) / max(len(epochs), 1)
    x_steps = [(i + 1) / steps_per_epoch for i in range(len(steps["loss_d"]))]
    x_epochs = [row["epoch"] for row in epochs]
    losses = []
    for key, colour, name in (("loss_d", "tab:blue", "discriminator"), ("loss_g", "tab:orange", "generator")):
        losses.append(training.Line(x_steps, steps[key], None, {"color": colour, "alpha": 0.25, "linewidth": 0.8}))
        losses.append(training.Line(x_epochs, [row[key] for row in epochs], name, {"color": colour, "marker": "o"}))
    training.plot_panels(path, [
        training.Panel("loss (binary cross-entropy)", losses, legend=True),
        training.Panel("discriminator's mean output", [
            training.Line(x_epochs, [row["d_real"] for row in epochs], "D(real)", {"marker": "o"}),
            training.Line(x_epochs, [row["d_fake"] for row in epochs], "D(G(z))", {"marker": "o"}),
        ], ylim=(0, 1), legend=True),
    ], size=(11, 4))


@dataclass(frozen=True)
class TrainResult:
    checkpoint_path: Path
    epochs_run: list[int]  # the epochs this call trained (after a resume, the later ones only)
    card: dict[str, Any]


def train_step(state: GanState, real: torch.Tensor, device: torch.device) -> dict[str, float]:
    """One discriminator update, then one generator update, on a batch of real faces (-1..1, on ``device``)."""
    config = state.config
    real = real.contiguous(memory_format=memory_format(device))
    noise = torch.randn(len(real), config.noise_dim, generator=state.random).to(device, non_blocking=True)
    real_target = torch.full((len(real),), config.real_label, device=device)
    fake_target = torch.zeros(len(real), device=device)

    with autocast(device):
        fake = state.generator(noise)
        real_logits = state.discriminator(real)
        fake_logits = state.discriminator(fake.detach())
    loss_d = (F.binary_cross_entropy_with_logits(real_logits.float(), real_target)
              + F.binary_cross_entropy_with_logits(fake_logits.float(), fake_target))
    state.discriminator_optimizer.zero_grad(set_to_none=True)
    loss_d.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
    state.discriminator_optimizer.step()

    with autocast(device):
        judged = state.discriminator(fake)
    loss_g = F.binary_cross_entropy_with_logits(judged.float(), torch.ones(len(real), device=device))
    state.generator_optimizer.zero_grad(set_to_none=True)
    loss_g.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
    state.generator_optimizer.step()
    return {
        "loss_d": float(loss_d.detach()),
        "loss_g": float(loss_g.detach()),
        "d_real": float(torch.sigmoid(real_logits.detach().float()).mean()),
        "d_fake": float(torch.sigmoid(fake_logits.detach().float()).mean()),
    }


def train(
    faces_dir: str | Path,
    out_dir: str | Path,
    *,
    epochs: int = 25,
    checkpoint_every: int = 5,
    resume: bool = False,
    config: GanConfig | None = None,
    sample_count: int = 64,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or, with ``resume``, go on training) to ``epochs`` epochs in all; see the module docstring.

    On resume the checkpoint's config wins over ``config`` (the networks must keep their shape).
    """
    if epochs < 1 or checkpoint_every < 1:
        raise GanError("epochs and checkpoint_every must be at least 1")
    faces_dir, out_dir = Path(faces_dir), Path(out_dir)
    target = choose_device(device)
    prepare_device(target)
    if resume:
        found = newest_checkpoint(out_dir)
        if found is None:
            raise GanError(f"nothing to resume: no {out_dir}/checkpoints/epoch_NNNN.pt")
        checkpoint = load_gan(found)
        state = restore_state(checkpoint, target)
        if config is not None and config != state.config:
            log.warning("resuming with the checkpoint's settings %s, not those given", asdict(state.config))
        log.info("resuming from %s (epoch %d)", found, state.epoch)
        if state.epoch >= epochs:
            log.warning("%s is at epoch %d already: nothing to do for --epochs %d", found, state.epoch, epochs)
    else:
        state = new_state(config or GanConfig(), sample_count)
        for module in (state.generator, state.discriminator):
            module.to(target, memory_format=memory_format(target))  # type: ignore[call-overload]  # torch's stubs leave out Module.to(memory_format=)
    config = state.config
    faces, paths = load_faces(faces_dir, config.image_size, progress)
    data = {"folder": str(faces_dir), "faces": len(faces), "sha256": data_hash(paths, faces_dir)}
    if resume and checkpoint.get("data", {}).get("sha256") != data["sha256"]:
        log.warning("the faces differ from those the checkpoint was trained on (%d now, %s then)",
                    len(faces), checkpoint.get("data", {}).get("faces"))
    faces = faces.to(target)  # uint8: 27 KB a face, so even 100k faces fit on a GPU
    batch_size = min(config.batch_size, len(faces))
    steps_per_epoch = len(faces) // batch_size  # the last partial batch is dropped: batch norm wants full ones
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    last_path, ran = newest_checkpoint(out_dir), []

    def step(index: int) -> dict[str, float]:
        real = to_unit_range(faces[order[index * batch_size:(index + 1) * batch_size].to(target)])
        flip = (torch.rand(len(real), generator=state.random) < 0.5).to(target)
        real = torch.where(flip[:, None, None, None], real.flip(-1), real)
        row = train_step(state, real, target)
        state.history["steps"]["loss_d"].append(row["loss_d"])
        state.history["steps"]["loss_g"].append(row["loss_g"])
        return row

    for epoch in range(state.epoch + 1, epochs + 1):
        state.generator.train()
        state.discriminator.train()
        order = torch.randperm(len(faces), generator=state.random)
        summary = {"epoch": epoch, **training.run_epoch(f"epoch {epoch}/{epochs}", steps_per_epoch, step, batch_size, progress)}
        state.history["epochs"].append(summary)
        state.epoch = epoch
        ran.append(epoch)
        if not all(math.isfinite(summary[k]) for k in ("loss_d", "loss_g")):
            raise GanError(f"epoch {epoch}: the losses are no longer finite ({summary}); lower the learning rate")
        log.info("epoch %d/%d: loss D %.4f, G %.4f, D(real) %.3f, D(G(z)) %.3f, %.1f images/s", epoch, epochs,
                 summary["loss_d"], summary["loss_g"], summary["d_real"], summary["d_fake"],
                 summary["images_per_second"])
        atomic_write(out_dir / "samples" / f"epoch_{epoch:04d}.png",
                     png_bytes(grid(to_pictures(generate(state.generator, state.fixed_noise, target)))))
        plot_losses(state.history, out_dir / "losses.png")
        if epoch % checkpoint_every == 0 or epoch == epochs:
            last_path = out_dir / "checkpoints" / f"epoch_{epoch:04d}.pt"
            save_checkpoint(last_path, state_checkpoint(state, data))
    card = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(config),
        "data": data,
        "epoch": state.epoch,
        "checkpoint": str(last_path) if last_path else None,
        "device": str(target),
        "bf16_autocast": uses_bf16(target),
        "history": state.history["epochs"],
        "created": training.created_now(),
        "torch_version": str(torch.__version__),
    }
    training.write_card(out_dir / "gan.json", card)
    assert last_path is not None  # the last epoch always writes one
    return TrainResult(checkpoint_path=last_path, epochs_run=ran, card=card)


# --------------------------------------------------------------------------- sampling


def sample(
    checkpoint_path: str | Path,
    count: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    batch_size: int = 64,
    device: str | None = None,
) -> list[Path]:
    """``count`` faces from a checkpoint's generator: ``OUT/sample_NNNN.png`` and ``OUT/grid.png``.

    The same checkpoint and seed give the same faces (on the same device).
    """
    if count < 1:
        raise GanError("the number of samples must be at least 1")
    target = choose_device(device)
    generator, checkpoint = load_generator(checkpoint_path, target)
    noise_dim = checkpoint["config"]["noise_dim"]
    random = torch.Generator().manual_seed(seed)
    out_dir = Path(out_dir)
    pictures: list[Image.Image] = []
    for start in range(0, count, batch_size):
        noise = torch.randn(min(batch_size, count - start), noise_dim, generator=random)
        pictures += to_pictures(generate(generator, noise, target))
    written = []
    for index, picture in enumerate(pictures):
        path = out_dir / f"sample_{index:04d}.png"
        atomic_write(path, png_bytes(picture))
        written.append(path)
    atomic_write(out_dir / "grid.png", png_bytes(grid(pictures)))
    return written
