"""``scrapy segment ACTION ...``: train, evaluate and apply the character segmentation model.

One command with sub-actions (train, evaluate, predict), so that they share one ``--help``. The
work is in ``models.segment``; this reads the arguments, turns unusable data, weights or
checkpoints into a usage error (exit code 2, one clear message) and prints the results. torch is
imported only when an action runs, so ``scrapy -h`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from scrapy.exceptions import UsageError

from crawler.command_base import ActionCommand

# action: (operands, what it does). The order is the order --help lists them in.
ACTIONS = {
    "train": (["DATA", "OUT"], "train on DATA (images/, annotations/, labels.txt: what `scrapy masks` writes); "
                               "writes OUT/best.pt, last.pt, segment.json, history.png and the test split's "
                               "IoU in OUT/evaluation-test.json"),
    "evaluate": (["CKPT", "DATA"], "per-class IoU and mean IoU of a checkpoint on a split of DATA (--subset), at "
                                   "the pictures' own size; printed and saved as JSON (--json)"),
    "predict": (["CKPT", "IMAGE..."], "for each picture (files or folders): --out/masks/NAME.png, the index mask, "
                                      "and --out/cutouts/NAME.png, the picture with the background transparent"),
}


def parse_shares(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        shares = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--split takes TRAIN,VAL,TEST shares such as 0.8,0.1,0.1, not {text!r}",
                         print_help=False) from None
    if len(shares) != 3:
        raise UsageError(f"--split takes three shares (train, val, test), not {text!r}", print_help=False)
    return shares[0], shares[1], shares[2]


class Command(ActionCommand):
    name = "segment"
    actions = ACTIONS
    variadic = frozenset({"predict"})
    about = (
        "A U-Net (or a ResNet-18/34 encoder under the U-Net decoder) that labels every pixel with a class of\n"
        "DATA/labels.txt. Runs on CUDA with bf16 autocast when there is a GPU, else on the CPU."
    )
    examples = (
        "scrapy masks labelme/ data/seg",
        "scrapy segment train data/seg models/seg --epochs 60 --image-size 256",
        "scrapy segment train data/seg models/seg18 --encoder resnet18 \\",
        "    --encoder-weights resnet18-f37072fd.pth",
        "scrapy segment evaluate models/seg/best.pt data/seg --subset test",
        "scrapy segment predict models/seg/best.pt output/images/ --out cutouts/",
    )

    def short_desc(self) -> str:
        return "Train, evaluate and apply a segmentation model on labelme-made masks (torch)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        group = parser.add_argument_group("train")
        group.add_argument("--epochs", type=int, default=40, metavar="N", help="default 40")
        group.add_argument("--image-size", type=int, default=256, metavar="PX",
                           help="short side pictures are resized to, and the training crop (default 256; a multiple "
                                "of 16 for unet, 32 for resnet)")
        group.add_argument("--batch-size", type=int, default=8, metavar="N", help="default 8")
        group.add_argument("--encoder", choices=("unet", "resnet18", "resnet34"), default="unet", help="default unet")
        group.add_argument("--width", type=int, default=32, metavar="N",
                           help="unet: channels of its first level (default 32)")
        group.add_argument("--depth", type=int, default=4, metavar="N", help="unet: poolings (default 4)")
        group.add_argument("--encoder-weights", metavar="PATH",
                           help="a state dict for the encoder (e.g. torchvision's resnet18-f37072fd.pth, or one of "
                                "our checkpoints); every key must match")
        group.add_argument("--lr", type=float, default=2e-3, metavar="RATE", help="peak learning rate (default 0.002)")
        group.add_argument("--seed", type=int, default=0, metavar="N", help="default 0")
        group.add_argument("--split", metavar="TRAIN,VAL,TEST",
                           help="shares of the pictures per split, by a hash of their names (default 0.8,0.1,0.1; "
                                "evaluate: the checkpoint's)")
        group = parser.add_argument_group("evaluate and predict")
        group.add_argument("--subset", choices=("train", "val", "test", "all"), default="test",
                           help="evaluate: which split of DATA (default test)")
        group.add_argument("--json", metavar="FILE", help="evaluate: where to save the result "
                                                          "(default evaluation-SUBSET.json beside CKPT)")
        group.add_argument("--out", metavar="DIR", help="predict: the output folder (required)")
        group.add_argument("--device", metavar="NAME", help="cpu, cuda, cuda:1 (default: cuda when available)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")

    def act(self, action: str, operands: list[str], opts: argparse.Namespace) -> None:
        from models import segment

        getattr(self, f"_{action}")(segment, operands, opts)

    def _train(self, segment: ModuleType, operands: list[str], opts: argparse.Namespace) -> None:
        result = segment.train(
            operands[0], operands[1], epochs=opts.epochs, image_size=opts.image_size, batch_size=opts.batch_size,
            encoder=opts.encoder, width=opts.width, depth=opts.depth, encoder_weights=opts.encoder_weights,
            learning_rate=opts.lr, split=parse_shares(opts.split) or (0.8, 0.1, 0.1), seed=opts.seed,
            device=opts.device, progress=not opts.no_progress,
        )
        training = result.card["training"]
        print(f"Trained {training['epochs']} epochs in {training['seconds']:.0f} s on {training['device']}; "
              f"best epoch {training['best_epoch']}: {result.best_path}")
        if result.test is not None:
            print_report(result.test, Path(operands[1]) / "evaluation-test.json")
        else:
            print("No pictures in the test split: nothing to evaluate.")

    def _evaluate(self, segment: ModuleType, operands: list[str], opts: argparse.Namespace) -> None:
        report = segment.evaluate(operands[0], operands[1], subset=opts.subset, shares=parse_shares(opts.split),
                                  device=opts.device, progress=not opts.no_progress)
        path = Path(opts.json) if opts.json else Path(operands[0]).parent / f"evaluation-{opts.subset}.json"
        from core.storage import atomic_write

        atomic_write(path, (json.dumps(report, indent=2) + "\n").encode())
        print_report(report, path)

    def _predict(self, segment: ModuleType, operands: list[str], opts: argparse.Namespace) -> None:
        if not opts.out:
            raise UsageError("predict needs --out DIR", print_help=False)
        results = segment.predict(operands[0], operands[1:], opts.out, device=opts.device,
                                  progress=not opts.no_progress)
        for result in results:
            shown = ", ".join(f"{name} {count}" for name, count in result.class_pixels.items() if count)
            print(f"{result.source}\t{result.mask_path}\t{result.cutout_path}\t{shown}")
        print(f"Segmented {len(results)} pictures into {opts.out}/masks/ and {opts.out}/cutouts/")


def print_report(report: dict[str, Any], path: Path) -> None:
    """Per-class IoU as a table, then the means."""
    width = max(len(name) for name in report["classes"])
    print(f"{report['split']} split of {report['data']}: {report['images']} pictures, {report['pixels']} pixels")
    print(f"  {'class':<{width}}  IoU")
    for name, iou in report["per_class_iou"].items():
        print(f"  {name:<{width}}  {'-' if iou is None else f'{iou:.4f}'}")
    print(f"  mean IoU {report['mean_iou']:.4f} (foreground {report['mean_iou_foreground']:.4f}), "
          f"pixel accuracy {report['pixel_accuracy']:.4f}")
    print(f"  saved to {path}")
