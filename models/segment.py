"""Character segmentation: train, evaluate and apply a torch encoder-decoder on index masks.

The data is what ``scrapy masks`` writes: ``DATA/images/**`` and ``DATA/annotations/**.png`` of
the same relative stem (the ADE20K / mmsegmentation layout), and ``DATA/labels.txt`` (line *i*
names mask value *i*; 255 is "ignore"). Any folder in that layout works; without ``labels.txt``
the classes are numbered from the masks.

* Split: train/val/test from a hash of each picture's relative stem (80/10/10 by default), so it
  does not depend on listing order, and adding pictures never moves the others. ``val`` picks the
  best epoch; ``test`` is only scored at the end, on the best checkpoint.
* Scale: a picture is resized so that its short side is ``image_size``, for training and for
  inference alike. Training takes random ``image_size`` squares from it after a random rescale
  (0.75-1.5), a horizontal flip and colour jitter; the geometry is applied to image and mask alike
  (bilinear for the image, nearest for the mask). Inference runs on the whole resized picture and
  scales the class scores back to the picture's own size, so the IoU is measured against the
  masks as annotated, not against resized ones.
* Network: a U-Net (``unet``: Conv-BN-ReLU pairs, ``depth`` poolings, ``width`` channels at the
  top) or a ResNet-18/34 encoder (``resnet18``, ``resnet34``) under the same U-Net decoder. The
  ResNet encoders use torchvision's parameter names, so torchvision's ImageNet files
  (``resnet18-f37072fd.pth``, ...) load into them with ``encoder_weights``; so does the encoder of
  one of our own checkpoints. The keys must match exactly (a classifier's ``fc.*`` excepted), or
  training refuses to start and says which keys differ. Without weights the encoder starts from
  scratch. The network takes RGB in 0..1 and normalises with ImageNet's mean and std itself.
* Loss: cross-entropy, 255 ignored; AdamW with a one-cycle schedule.
* Outputs of ``train``: ``best.pt`` (best validation mean IoU) and ``last.pt``, both plain dicts
  (see ``models.torch_common``) that rebuild the network from their config; ``segment.json``
  (config, data, per-epoch history, test metrics); ``evaluation-test.json`` (the test split);
  ``history.png`` (loss and validation IoU per epoch).
* Metrics: per-class IoU = TP / (TP + FP + FN) from one confusion matrix over every pixel of the
  split; a class that neither appears nor is predicted there has no IoU (``null``) and is left out
  of the means. ``mean_iou`` averages every class, background included (PASCAL VOC's figure);
  ``mean_iou_foreground`` leaves the background out.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from core.errors import ProjectError
from core.progress import progress_bar
from core.storage import atomic_write
from models import training
from models.classifier import expand_paths
from models.imaging import flatten_on_white
from models.labelme import (
    ANNOTATIONS_DIR,
    BACKGROUND,
    IGNORE_INDEX,
    IMAGES_DIR,
    LABELS_NAME,
    LabelmeError,
    mask_to_png,
    read_labels,
)
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
from models.training import split_value

log = logging.getLogger("models.segment")

CHECKPOINT_FORMAT = "anime-art-datasets/segmenter"
ENCODERS = ("unet", "resnet18", "resnet34")
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
CLASSIFIER_HEAD_KEYS = ("fc.weight", "fc.bias")  # an ImageNet file's classifier: not part of an encoder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
DEFAULT_SHARES = (0.8, 0.1, 0.1)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALE_RANGE = (0.75, 1.5)
KEEPS_COLOURS = ("RGB", "RGBA", "L", "LA", "P", "PA")  # modes whose RGBA conversion is exact


class SegmentError(ProjectError, ValueError):
    """The data, the weights or a checkpoint cannot be used; the message says why."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Sample:
    stem: str  # relative to images/ and annotations/, without suffix
    image_path: Path
    mask_path: Path


def list_samples(data_dir: str | Path) -> tuple[list[str], list[Sample]]:
    """Class names (by mask value) and the image/mask pairs of a data folder, sorted by stem."""
    data_dir = Path(data_dir)
    images_dir, masks_dir = data_dir / IMAGES_DIR, data_dir / ANNOTATIONS_DIR
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise SegmentError(f"{folder}: missing (expected {IMAGES_DIR}/ and {ANNOTATIONS_DIR}/, as `scrapy masks` "
                               "writes them)")
    masks = {p.relative_to(masks_dir).with_suffix("").as_posix(): p for p in masks_dir.rglob("*.png") if p.is_file()}
    samples, unmatched = [], 0
    for path in sorted(images_dir.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = path.relative_to(images_dir).with_suffix("").as_posix()
        if stem in masks:
            samples.append(Sample(stem, path, masks[stem]))
        else:
            unmatched += 1
    if unmatched:
        log.warning("%s: %d pictures have no mask in %s/ and are left out", data_dir, unmatched, ANNOTATIONS_DIR)
    if not samples:
        raise SegmentError(f"{data_dir}: no picture with a mask of the same name")
    labels_path = data_dir / LABELS_NAME
    if labels_path.is_file():
        try:
            classes = read_labels(labels_path)
        except LabelmeError as error:
            raise SegmentError(f"{labels_path}: {error}") from None
    else:
        top = max(int(v) for s in samples for v in np.unique(read_mask(s.mask_path)) if v != IGNORE_INDEX)
        classes = [BACKGROUND, *(f"class_{v}" for v in range(1, top + 1))]
        log.warning("%s: no %s; numbering %d classes from the masks", data_dir, LABELS_NAME, len(classes))
    return classes, samples


def split_samples(samples: Sequence[Sample], shares: Sequence[float] = DEFAULT_SHARES) -> dict[str, list[Sample]]:
    """train/val/test by the hash of each stem; val and test get one picture each at least when there are 3+."""
    if len(shares) != 3 or min(shares) < 0 or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
        raise SegmentError(f"split shares must be three non-negative numbers summing to 1, not {list(shares)}")
    bounds = (shares[0], shares[0] + shares[1])
    parts: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for sample in samples:
        value = split_value(sample.stem)
        parts["train" if value < bounds[0] else "val" if value < bounds[1] else "test"].append(sample)
    for name in ("test", "val"):
        if not parts[name] and len(parts["train"]) > 1 and shares[SPLITS.index(name)] > 0:
            moved = max(parts["train"], key=lambda s: split_value(s.stem))
            parts["train"].remove(moved)
            parts[name].append(moved)
    return parts


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as mask:
        if mask.mode not in ("P", "L"):
            raise SegmentError(f"{path}: a mask must be an 8-bit index PNG (mode P or L), not mode {mask.mode}")
        return np.asarray(mask, dtype=np.uint8).copy()


def read_picture(path: Path) -> Image.Image:
    """RGB, transparency on white (as the crawl stores pictures)."""
    with Image.open(path) as image:
        image.load()
        return flatten_on_white(image).convert("RGB")


def read_pair(sample: Sample, class_count: int) -> tuple[Image.Image, np.ndarray]:
    """The picture and its mask, checked to have one size and known values."""
    image, mask = read_picture(sample.image_path), read_mask(sample.mask_path)
    if image.size != (mask.shape[1], mask.shape[0]):
        turned = ImageOps.exif_transpose(image)
        if turned.size != (mask.shape[1], mask.shape[0]):
            raise SegmentError(f"{sample.stem}: picture {image.size[0]}x{image.size[1]} but mask "
                               f"{mask.shape[1]}x{mask.shape[0]}")
        image = turned
    bad = sorted(int(v) for v in np.unique(mask) if v >= class_count and v != IGNORE_INDEX)
    if bad:
        raise SegmentError(f"{sample.stem}: mask values {bad} but only {class_count} classes")
    return image, mask


def short_side_size(size: tuple[int, int], short: int) -> tuple[int, int]:
    """(W, H) scaled so that the shorter side is ``short``."""
    w, h = size
    scale = short / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def image_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 from an RGB picture."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


@dataclass
class LoadedSplit:
    """Pictures and masks of one split, resized to the working scale, in memory (uint8)."""

    stems: list[str] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)  # (3, H, W) uint8
    masks: list[torch.Tensor] = field(default_factory=list)  # (H, W) uint8


def load_split(samples: Sequence[Sample], class_count: int, image_size: int, progress: bool, label: str) -> LoadedSplit:
    loaded = LoadedSplit()
    bar = progress_bar(f"reading {label}", len(samples), progress)
    for sample in samples:
        try:
            image, mask = read_pair(sample, class_count)
        except (SegmentError, OSError, ValueError) as error:
            log.warning("%s: left out (%s)", sample.stem, error)
        else:
            size = short_side_size(image.size, image_size)
            loaded.stems.append(sample.stem)
            loaded.images.append(image_tensor(image.resize(size, Image.Resampling.BILINEAR)))
            loaded.masks.append(torch.from_numpy(np.asarray(
                Image.fromarray(mask).resize(size, Image.Resampling.NEAREST), dtype=np.uint8).copy()))
        bar.update(1)
    bar.close()
    return loaded


def data_hash(samples: Iterable[Sample]) -> str:
    """sha256 over the stems and the sizes of both files: says which data a model saw."""
    return training.data_hash((s.stem, s.image_path.stat().st_size, s.mask_path.stat().st_size)
                              for s in sorted(samples, key=lambda s: s.stem))


# --------------------------------------------------------------------------- augmentation


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def augment(
    image: torch.Tensor, mask: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``size`` square of a rescaled, maybe mirrored, colour-jittered picture and its mask.

    ``image`` (3, H, W) uint8 and ``mask`` (H, W) uint8 in, on any device; float (3, size, size) in
    0..1 and long (size, size) out, on the same device. The random draws come from ``generator``
    (on the CPU), so a seed gives the same crops on every device. Where the rescaled picture is
    smaller than ``size``, the mask is padded with 255 (ignored by the loss).
    """
    scale = uniform(generator, *SCALE_RANGE)
    height, width = mask.shape
    new_size = (max(1, round(height * scale)), max(1, round(width * scale)))
    pixels = F.interpolate(image[None].float() / 255, size=new_size, mode="bilinear", align_corners=False,
                           antialias=scale < 1)[0]
    labels = F.interpolate(mask[None, None].float(), size=new_size, mode="nearest")[0, 0].long()
    pad_h, pad_w = max(0, size - new_size[0]), max(0, size - new_size[1])
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h), value=0.5)
        labels = F.pad(labels, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    top = int(torch.randint(0, labels.shape[0] - size + 1, (), generator=generator))
    left = int(torch.randint(0, labels.shape[1] - size + 1, (), generator=generator))
    pixels, labels = pixels[:, top:top + size, left:left + size], labels[top:top + size, left:left + size]
    if float(torch.rand((), generator=generator)) < 0.5:
        pixels, labels = pixels.flip(-1), labels.flip(-1)
    brightness, contrast, saturation = (uniform(generator, 0.75, 1.25) for _ in range(3))
    pixels = pixels * brightness
    pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
    gray = (pixels * torch.tensor([0.299, 0.587, 0.114], device=pixels.device).view(3, 1, 1)).sum(0, keepdim=True)
    pixels = (pixels - gray) * saturation + gray
    return pixels.clamp(0, 1), labels


# --------------------------------------------------------------------------- networks


class ConvPair(nn.Sequential):
    """Two 3x3 Conv-BN-ReLU: the U-Net's unit."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNetEncoder(nn.Module):
    """``depth`` poolings; features at strides 1, 2, ... 2**depth, doubling the channels each time."""

    def __init__(self, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        self.channels = [width * 2**level for level in range(depth + 1)]
        self.stages = nn.ModuleList(
            ConvPair(3 if level == 0 else self.channels[level - 1], self.channels[level]) for level in range(depth + 1)
        )
        self.strides = [2**level for level in range(depth + 1)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level, stage in enumerate(self.stages):
            x = stage(x if level == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block, with torchvision's attribute names."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNetEncoder(nn.Module):
    """ResNet-18/34 without its classifier; features at strides 2, 4, 8, 16, 32.

    Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so its ImageNet
    state dicts load as they are.
    """

    def __init__(self, blocks: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        in_channels = 64
        for index, (count, width) in enumerate(zip(blocks, widths), 1):
            layer = [BasicBlock(in_channels, width, 1 if index == 1 else 2)]
            layer += [BasicBlock(width, width, 1) for _ in range(count - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
            in_channels = width
        self.channels = [64, *widths]
        self.strides = [2, 4, 8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


class UNetDecoder(nn.Module):
    """From the deepest feature up: upsample to the next skip's size, concatenate, ConvPair."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        # block `level` takes the decoded level+1 (channels[level + 1]) plus the skip (channels[level])
        self.blocks = nn.ModuleList(
            ConvPair(channels[level + 1] + channels[level], channels[level]) for level in range(len(channels) - 1)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for level in range(len(features) - 2, -1, -1):
            skip = features[level]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.blocks[level](torch.cat([x, skip], dim=1))
        return x


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that rebuilds the network: stored in every checkpoint."""

    classes: tuple[str, ...]
    encoder: str = "unet"
    width: int = 32  # unet only: channels at the top level
    depth: int = 4  # unet only: poolings
    image_size: int = 256  # short side the pictures are resized to; training squares of this size

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise SegmentError(f"unknown encoder {self.encoder!r}: one of {', '.join(ENCODERS)}")
        if len(self.classes) < 2:
            raise SegmentError("needs the background and at least one class")


class Segmenter(nn.Module):
    """RGB 0..1 in, (N, classes, H, W) class scores (logits) out, at the input's size."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        if config.encoder == "unet":
            self.encoder: nn.Module = UNetEncoder(config.width, config.depth)
        else:
            self.encoder = ResNetEncoder(RESNET_BLOCKS[config.encoder])
        channels = list(self.encoder.channels)
        self.decoder = UNetDecoder(channels)
        self.head = nn.Conv2d(channels[0], len(config.classes), 1)
        self.stride: int = self.encoder.strides[-1]  # inputs are padded to a multiple of this
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    mean: torch.Tensor  # buffers (register_buffer)
    std: torch.Tensor

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.mean) / self.std
        logits = self.head(self.decoder(self.encoder(x)))
        if logits.shape[-2:] != pixels.shape[-2:]:
            logits = F.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
        return logits


def load_encoder_weights(model: Segmenter, path: str | Path) -> None:
    """Load a state dict into ``model.encoder``, every key and shape matching, or say what differs.

    Accepted: a plain state dict (torchvision's ImageNet ResNet files included: their ``fc.*``
    classifier is dropped), one wrapped under ``state_dict``, or a segmenter checkpoint of ours
    (its ``encoder.*`` part). Batch-norm ``num_batches_tracked`` counters may be absent.
    """
    path = Path(path)
    if not path.is_file():
        raise SegmentError(f"encoder weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle, zip and runtime errors alike
        raise SegmentError(f"encoder weights {path}: not a torch state dict ({str(error).splitlines()[0]})") from None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        state = {k.removeprefix("encoder."): v for k, v in state["model"].items() if k.startswith("encoder.")}
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegmentError(f"encoder weights {path}: not a state dict (a mapping of names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items() if k not in CLASSIFIER_HEAD_KEYS}
    expected = model.encoder.state_dict()
    for key in set(expected) - set(state):
        if key.endswith(".num_batches_tracked"):  # a batch-norm counter older files lack; no weight
            state[key] = expected[key]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or reshaped:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        problems = [f"{len(missing)} missing ({some(missing)})" if missing else "",
                    f"{len(unexpected)} unexpected ({some(unexpected)})" if unexpected else "",
                    "shapes differ for " + some([f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                                                 for k in reshaped]) if reshaped else ""]
        raise SegmentError(
            f"encoder weights {path} do not fit the {model.config.encoder} encoder"
            + (f" (width {model.config.width}, depth {model.config.depth})" if model.config.encoder == "unet" else "")
            + ": keys " + "; ".join(p for p in problems if p)
        )
    model.encoder.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------- inference and metrics


def predict_logits(model: Segmenter, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(classes, H, W) float32 scores for one (3, H, W) 0..1 picture, on the CPU.

    The picture is padded (edge pixels repeated) to a multiple of the network's stride, and the
    padding is cut off the scores again.
    """
    height, width = pixels.shape[-2:]
    pad_h, pad_w = -height % model.stride, -width % model.stride
    batch = pixels[None].to(device)
    if pad_h or pad_w:
        batch = F.pad(batch, (0, pad_w, 0, pad_h), mode="replicate")
    with torch.no_grad(), autocast(device):
        logits = model(batch.contiguous(memory_format=memory_format(device)))
    return logits[0, :, :height, :width].float().cpu()


def confusion(truth: torch.Tensor, predicted: torch.Tensor, class_count: int) -> torch.Tensor:
    """(classes, classes) pixel counts, rows true class, columns predicted; 255 in ``truth`` skipped."""
    truth, predicted = truth.reshape(-1).long(), predicted.reshape(-1).long()
    keep = truth != IGNORE_INDEX
    pairs = truth[keep] * class_count + predicted[keep]
    return torch.bincount(pairs, minlength=class_count**2).reshape(class_count, class_count)


def iou_report(matrix: torch.Tensor | np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class IoU, their means and the pixel accuracy of a confusion matrix (see the module docstring)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    true_pos = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - true_pos
    per_class = {name: (float(true_pos[i] / union[i]) if union[i] else None) for i, name in enumerate(classes)}
    scored = [v for v in per_class.values() if v is not None]
    foreground = [v for name, v in per_class.items() if v is not None and name != classes[0]]
    total = int(matrix.sum())
    return {
        "classes": list(classes),
        "per_class_iou": per_class,
        "mean_iou": float(np.mean(scored)) if scored else 0.0,
        "mean_iou_foreground": float(np.mean(foreground)) if foreground else 0.0,
        "pixel_accuracy": float(true_pos.sum() / total) if total else 0.0,
        "pixels": total,
        "confusion": matrix.tolist(),  # rows: true class, columns: predicted class
    }


def score_loaded(model: Segmenter, loaded: LoadedSplit, device: torch.device) -> dict[str, Any]:
    """IoU over a split already in memory, at the working scale (the per-epoch validation)."""
    classes = model.config.classes
    matrix = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    model.eval()
    for image, mask in zip(loaded.images, loaded.masks):
        predicted = predict_logits(model, image.float() / 255, device).argmax(0)
        matrix += confusion(mask, predicted, len(classes))
    return iou_report(matrix, classes)


def scores_at_full_size(model: Segmenter, image: Image.Image, device: torch.device) -> torch.Tensor:
    """(classes, H, W) scores at the picture's own size: run at the working scale, scaled back."""
    resized = image.resize(short_side_size(image.size, model.config.image_size), Image.Resampling.BILINEAR)
    logits = predict_logits(model, image_tensor(resized).float() / 255, device)
    if logits.shape[-2:] != (image.height, image.width):
        logits = F.interpolate(logits[None], size=(image.height, image.width), mode="bilinear", align_corners=False)[0]
    return logits


# --------------------------------------------------------------------------- checkpoints


def build_checkpoint(model: Segmenter, optimizer: torch.optim.Optimizer | None, scheduler: Any, epoch: int,
                     metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config = asdict(model.config)
    config["classes"] = list(model.config.classes)
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "config": config,
        "epoch": epoch,
        "model": state_on_cpu(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "metrics": metrics,
        "torch_version": str(torch.__version__),
        **(extra or {}),
    }


def load_segmenter(path: str | Path, device: torch.device | None = None) -> tuple[Segmenter, dict[str, Any]]:
    """The network of a checkpoint, in eval mode on ``device`` (CUDA if there is one), and the checkpoint."""
    try:
        checkpoint = load_checkpoint(path, CHECKPOINT_FORMAT)
    except CheckpointError as error:
        raise SegmentError(str(error)) from None
    config = dict(checkpoint["config"])
    config["classes"] = tuple(config["classes"])
    model = Segmenter(SegmenterConfig(**config))
    model.load_state_dict(checkpoint["model"], strict=True)
    device = device or choose_device()
    model.to(device, memory_format=memory_format(device)).eval()  # type: ignore[call-overload]  # torch's stubs leave out Module.to(memory_format=)
    return model, checkpoint


# --------------------------------------------------------------------------- training


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Training loss and validation mean IoU per epoch."""
    epochs = [row["epoch"] for row in history]
    training.plot_panels(path, [
        training.Panel("training loss (cross-entropy)", [
            training.Line(epochs, [row["loss"] for row in history], style={"marker": "o"})]),
        training.Panel("validation mean IoU", [
            training.Line(epochs, [row.get("val_mean_iou") for row in history], style={"marker": "o", "color": "tab:green"})],
            ylim=(0, 1)),
    ])


@dataclass(frozen=True)
class TrainResult:
    best_path: Path
    last_path: Path
    card: dict[str, Any]
    test: dict[str, Any] | None  # evaluate() on the test split, if it has pictures


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    epochs: int = 40,
    image_size: int = 256,
    batch_size: int = 8,
    encoder: str = "unet",
    width: int = 32,
    depth: int = 4,
    encoder_weights: str | Path | None = None,
    learning_rate: float = 2e-3,
    split: Sequence[float] = DEFAULT_SHARES,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train on ``data_dir``, keep the best epoch by validation mean IoU, score it on the test split."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    classes, samples = list_samples(data_dir)
    config = SegmenterConfig(tuple(classes), encoder=encoder, width=width, depth=depth, image_size=image_size)
    torch.manual_seed(seed)
    model = _new_segmenter(config, encoder_weights)
    parts = split_samples(samples, split)
    train_data = load_split(parts["train"], len(classes), image_size, progress, "train")
    val_data = load_split(parts["val"], len(classes), image_size, progress, "val")
    if not train_data.images:
        raise SegmentError(f"{data_dir}: no readable training pictures")

    target = choose_device(device)
    prepare_device(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the best epoch: by validation mean IoU, or by minus the training loss without a validation split
    keeper = training.CheckpointKeeper(out_dir / "last.pt", out_dir / "best.pt", save_checkpoint)
    history, seconds = _fit(model, train_data, val_data, target, keeper, epochs=epochs, batch_size=batch_size,
                            learning_rate=learning_rate, seed=seed, split=split, progress=progress)

    assert keeper.best_path is not None  # given above
    test = evaluate(keeper.best_path, data_dir, subset="test", device=device, progress=progress) if parts["test"] else None
    if test is not None:
        atomic_write(out_dir / "evaluation-test.json", (json.dumps(test, indent=2) + "\n").encode())
    card = {
        "format": CHECKPOINT_FORMAT,
        "config": {**asdict(config), "classes": list(classes)},
        "encoder_weights": str(encoder_weights) if encoder_weights else None,
        "data": {
            "folder": str(data_dir),
            "sha256": data_hash(samples),
            "split_shares": list(split),
            **{name: len(parts[name]) for name in SPLITS},
        },
        "training": {
            "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
            "best_epoch": keeper.best_epoch, "seconds": round(seconds, 2), "device": str(target),
            "bf16_autocast": uses_bf16(target),
        },
        "history": history,
        "test": {k: v for k, v in test.items() if k != "confusion"} if test else None,
        "created": training.created_now(),
        "torch_version": str(torch.__version__),
    }
    training.write_card(out_dir / "segment.json", card)
    plot_history(history, out_dir / "history.png")
    return TrainResult(best_path=keeper.best_path, last_path=keeper.last_path, card=card, test=test)


def _new_segmenter(config: SegmenterConfig, encoder_weights: str | Path | None) -> Segmenter:
    """A fresh network (drawn from torch's seed), with the encoder's weights when given; refuses an
    image size the encoder's stride does not divide."""
    model = Segmenter(config)
    if config.image_size % model.stride:
        raise SegmentError(f"image size {config.image_size} must be a multiple of {model.stride} for the {config.encoder} encoder")
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    return model


def _fit(model: Segmenter, train_data: LoadedSplit, val_data: LoadedSplit, target: torch.device,
         keeper: training.CheckpointKeeper, *, epochs: int, batch_size: int, learning_rate: float, seed: int,
         split: Sequence[float], progress: bool) -> tuple[list[dict[str, Any]], float]:
    """The epochs on ``target``: AdamW with a one-cycle learning rate on augmented squares, the
    validation mean IoU after each epoch, and its checkpoint given to ``keeper``. The history (a row
    an epoch) and the seconds the epochs took."""
    image_size = model.config.image_size
    model.to(target, memory_format=memory_format(target))  # type: ignore[call-overload]  # torch's stubs leave out Module.to(memory_format=)
    # augment on the device: per-picture CPU work would starve a GPU (random draws stay on the CPU)
    train_data.images = [image.to(target) for image in train_data.images]
    train_data.masks = [mask.to(target) for mask in train_data.masks]
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(train_data.images) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    history: list[dict[str, Any]] = []
    started = time.monotonic()

    def step(index: int) -> dict[str, float]:
        chosen = order[index * batch_size:(index + 1) * batch_size]
        pairs = [augment(train_data.images[i], train_data.masks[i], image_size, generator) for i in chosen]
        pixels = torch.stack([p for p, _ in pairs]).to(target, non_blocking=True)
        labels = torch.stack([m for _, m in pairs]).to(target, non_blocking=True)
        with autocast(target):
            logits = model(pixels.contiguous(memory_format=memory_format(target)))
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return {"loss": float(loss.detach())}

    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_data.images), generator=generator).tolist()
        ran = training.run_epoch(f"epoch {epoch}/{epochs}", steps_per_epoch, step, batch_size, progress)
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": ran["loss"],
            "images_per_second": ran["images_per_second"],
            "learning_rate": scheduler.get_last_lr()[0],
        }
        if val_data.images:
            val = score_loaded(model, val_data, target)
            row["val_mean_iou"] = val["mean_iou"]
            row["val_per_class_iou"] = val["per_class_iou"]
        history.append(row)
        log.info("epoch %d/%d: loss %.4f, val mean IoU %s, %.1f images/s", epoch, epochs, row["loss"],
                 f"{row['val_mean_iou']:.4f}" if "val_mean_iou" in row else "-", row["images_per_second"])
        checkpoint = build_checkpoint(model, optimizer, scheduler, epoch, row, {"split_shares": list(split)})
        keeper.keep(checkpoint, epoch, row.get("val_mean_iou", -row["loss"]))
    return history, time.monotonic() - started


# --------------------------------------------------------------------------- evaluate and predict


def evaluate(
    checkpoint_path: str | Path,
    data_dir: str | Path,
    *,
    subset: str = "test",
    shares: Sequence[float] | None = None,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """IoU of a checkpoint on one split of ``data_dir`` (``all``: every picture), at the pictures' size.

    The split is made with ``shares``, by default those the checkpoint was trained with, so that
    ``test`` is the pictures training never saw. The data's classes must be the checkpoint's, by
    name and order.
    """
    target = choose_device(device)
    model, checkpoint = load_segmenter(checkpoint_path, target)
    classes, samples = list_samples(data_dir)
    if tuple(classes) != model.config.classes:
        raise SegmentError(f"{data_dir}: classes {classes} differ from the checkpoint's {list(model.config.classes)}")
    if subset != "all":
        if subset not in SPLITS:
            raise SegmentError(f"unknown split {subset!r}: one of {', '.join(SPLITS)}, all")
        shares = shares or checkpoint.get("split_shares") or DEFAULT_SHARES
        samples = split_samples(samples, shares)[subset]
    if not samples:
        raise SegmentError(f"{data_dir}: no pictures in the {subset} split")
    matrix = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    scored, bar = 0, progress_bar(f"evaluating {subset}", len(samples), progress)
    for sample in samples:
        try:
            image, mask = read_pair(sample, len(classes))
        except (SegmentError, OSError, ValueError) as error:
            log.warning("%s: left out (%s)", sample.stem, error)
        else:
            predicted = scores_at_full_size(model, image, target).argmax(0)
            matrix += confusion(torch.from_numpy(mask), predicted, len(classes))
            scored += 1
        bar.update(1)
    bar.close()
    return {
        "checkpoint": str(checkpoint_path),
        "epoch": checkpoint.get("epoch"),
        "data": str(data_dir),
        "split": subset,
        "images": scored,
        **iou_report(matrix, classes),
    }


@dataclass(frozen=True)
class Predicted:
    source: Path
    mask_path: Path
    cutout_path: Path
    class_pixels: dict[str, int]


def output_stems(arguments: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(picture, output stem) per input: a folder's pictures keep their path inside it."""
    pairs = []
    for argument in arguments:
        root = Path(argument)
        if root.is_dir():
            for path in expand_paths([str(root)]):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    pairs.append((path, path.relative_to(root).with_suffix("").as_posix()))
        else:
            pairs.append((root, root.stem))
    seen: dict[str, Path] = {}
    for path, stem in pairs:
        if stem in seen and seen[stem] != path:
            raise SegmentError(f"{seen[stem]} and {path} would both be written as {stem}.png: segment them separately")
        seen[stem] = path
    return list(dict.fromkeys(pairs))


def cutout(image: Image.Image, classes: torch.Tensor) -> Image.Image:
    """RGBA: the picture with every background (class 0) pixel fully transparent.

    A picture that had transparency of its own keeps it where the character is.
    """
    rgba = image.convert("RGBA")
    foreground = (classes != 0).numpy()
    alpha = np.where(foreground, np.asarray(rgba.getchannel("A")), 0).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def predict(
    checkpoint_path: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: str | None = None,
    progress: bool = False,
) -> list[Predicted]:
    """For each picture (files, or folders read recursively): ``OUT/masks/{stem}.png`` (index mask,
    as ``scrapy masks`` writes them) and ``OUT/cutouts/{stem}.png`` (RGBA, background transparent),
    at the picture's own size (EXIF orientation applied). Unreadable pictures are logged and skipped.
    """
    target = choose_device(device)
    model, _ = load_segmenter(checkpoint_path, target)
    out_dir = Path(out_dir)
    pairs = output_stems(inputs)
    if not pairs:
        raise SegmentError("no pictures to segment")
    results, bar = [], progress_bar("segmenting", len(pairs), progress)
    for path, stem in pairs:
        try:
            with Image.open(path) as opened:
                opened.load()
                original = ImageOps.exif_transpose(opened)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            log.warning("%s: skipped, not a readable picture (%s)", path, error)
            bar.update(1)
            continue
        rgb = flatten_on_white(original).convert("RGB")
        classes = scores_at_full_size(model, rgb, target).argmax(0)
        mask_path = out_dir / "masks" / f"{stem}.png"
        cutout_path = out_dir / "cutouts" / f"{stem}.png"
        atomic_write(mask_path, mask_to_png(classes.numpy().astype(np.uint8)))
        buffer = io.BytesIO()
        cutout(original if original.mode in KEEPS_COLOURS else rgb, classes).save(buffer, format="PNG")
        atomic_write(cutout_path, buffer.getvalue())
        counts = torch.bincount(classes.reshape(-1), minlength=len(model.config.classes)).tolist()
        results.append(Predicted(path, mask_path, cutout_path, dict(zip(model.config.classes, counts))))
        bar.update(1)
    bar.close()
    return results
