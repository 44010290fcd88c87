"""The recognizer's network: a compact ResNet-style CNN on 64×64 crops, in plain torch.

Sized for a CPU: two stride-2 convolutions take 64×64 to 16×16 before any residual block (the
icons are 32 px pixel art, so 16×16 cells of 48 channels still see every art pixel's colour), then
three stages of basic blocks (48, 96, 192 channels; 16, 8, 4 px), global average pooling and one
linear layer. About 1 M parameters; a training step costs about 2.7 ms a sample on two CPU cores
(bench/isaac.py), 20 times less than a ResNet-18 at this size, which is what makes a run over the
907 classes fit in hours on a CPU.

The network takes uint8 RGB (N, 3, H, W) and scales it itself, so callers and the card need no
normalisation constants. Its last class is "no item" when built with ``negative=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

PIXEL_MEAN = 0.45  # of 0..1 pixels, over the synthetic crops; a rough centring is all BatchNorm needs
PIXEL_STD = 0.25


def conv_bn_relu(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions and a shortcut (a strided 1×1 one when the shape changes)."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1) -> None:
        super().__init__()
        self.first = conv_bn_relu(inputs, outputs, stride)
        self.second = nn.Sequential(nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False), nn.BatchNorm2d(outputs))
        nn.init.zeros_(self.second[1].weight)  # type: ignore[arg-type]  # a BatchNorm's weight: a tensor; each block starts as the identity: steadier early training
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.second(self.first(x)) + self.shortcut(x), inplace=True)


class IconNet(nn.Module):
    """Icon classifier: uint8 images in, one logit per class out."""

    def __init__(
        self, classes: int, widths: tuple[int, ...] = (48, 96, 192), blocks: tuple[int, ...] = (1, 2, 1),
        stem: int = 24, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, stem, 2), conv_bn_relu(stem, widths[0], 2))
        layers: list[nn.Module] = []
        channels = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for index in range(count):
                layers.append(BasicBlock(channels, width, 2 if stage > 0 and index == 0 else 1))
                channels = width
        self.stages = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, classes)
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN * 255.0), persistent=False)
        self.register_buffer("scale", torch.tensor(1.0 / (PIXEL_STD * 255.0)), persistent=False)

    mean: torch.Tensor  # buffers (register_buffer)
    scale: torch.Tensor

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The last feature map (N, C, H/16, W/16)."""
        x = (images.float() - self.mean) * self.scale
        return self.stages(self.stem(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.features(images).mean(dim=(2, 3))
        return self.head(self.dropout(pooled))


def build_net(config: dict[str, Any]) -> IconNet:
    """The network a card or checkpoint describes (``net`` section: classes, widths, blocks, stem)."""
    return IconNet(
        int(config["classes"]), tuple(config.get("widths", (48, 96, 192))), tuple(config.get("blocks", (1, 2, 1))),
        int(config.get("stem", 24)), float(config.get("dropout", 0.1)),
    )


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
