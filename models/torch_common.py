"""What the torch trainers (``models.segment``, ``models.gan``) share: device, autocast, checkpoints.

* The device is CUDA when there is one, else the CPU. On CUDA the models run channels-last under
  bf16 autocast (no loss scaling needed, unlike fp16); on the CPU in plain float32, where bf16 is
  slower on most machines and channels-last gains nothing for these small networks.
* A checkpoint is a plain dict of state dicts, config, epoch and optimiser state, saved with
  ``torch.save`` and loaded with ``weights_only=True``: no pickled classes, so it reloads in any
  process that has this code, whatever moved in between, and loading one runs no code. It is
  written to a temporary file and renamed, so a kill mid-save leaves the previous one intact.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, ContextManager

import torch

from core.errors import ProjectError
from core.storage import atomic_write


class CheckpointError(ProjectError, ValueError):
    """A file is not a checkpoint of the expected kind; the message says why."""


def choose_device(name: str | None = None) -> torch.device:
    """``name`` when given (``cpu``, ``cuda``, ``cuda:1``), else CUDA when available, else the CPU."""
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CheckpointError(f"device {name!r} asked for, but torch sees no CUDA device")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def uses_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device) -> ContextManager[Any]:
    """bf16 autocast on a CUDA device that supports it; nothing elsewhere."""
    if uses_bf16(device):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on CUDA (tensor cores like NHWC), contiguous elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def prepare_device(device: torch.device) -> None:
    """Let cuDNN pick its fastest kernels: the input sizes of a training run repeat."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str | Path, expected_format: str) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (tensors on the CPU), checked to be of ``expected_format``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises pickle, zip and runtime errors alike
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: not a torch checkpoint this code can read ({first_line})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != expected_format:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a {expected_format} checkpoint (found {found!r})")
    return checkpoint


def state_on_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict detached onto the CPU, so a checkpoint loads on a machine without CUDA."""
    return {name: tensor.detach().cpu().clone() for name, tensor in module.state_dict().items()}
