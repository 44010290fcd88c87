"""``scrapy isaac ACTION ...``: train, measure and use the Isaac item recognizer.

One command with a sub-parser per action (train, evaluate, identify, locate, preview), thin over
``models.isaac``. Icons come from the catalogue's ``sprites`` table when it has labelled ones,
else from slicing the captured wiki files (``ISAAC_FIXTURES_DIR``). The model lives in
``ISAAC_MODEL_DIR`` (default ``OUTPUT_DIR/isaac-model``) unless ``--model`` says otherwise.

Scrapy parses the command line with ``parse_known_args`` on one parser that
``ScrapyCommand.add_options`` fills with its global options (``-s``, ``-L``, ...). argparse parses
whatever follows a sub-command with the sub-parser alone, so those options are repeated on each
sub-parser under another name and folded back in ``process_options``: ``scrapy isaac train -s
OUTPUT_DIR=x`` works as well as ``scrapy isaac -s OUTPUT_DIR=x train``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from scrapy.exceptions import UsageError
from scrapy.utils.log import configure_logging

from core.storage import catalog_path, output_dir
from crawler.command_base import OfflineCommand

logger = logging.getLogger(__name__)

ACTIONS = {
    "train": "train (or resume) the recognizer on synthetic camera-like crops",
    "evaluate": "top-1/top-5 per kind on held-out crops, worst confusions, locate precision/recall; JSON + plots",
    "identify": "name the item in each cropped picture: top-k, both names, description, confidence",
    "locate": "find every item in whole screenshots or photos: boxes and names",
    "preview": "write a grid of synthetic samples (or scenes) to a PNG",
}
AFTER_ACTION = "after_action_"  # dest prefix of the global options repeated on the sub-parsers


class _OptionRecorder:
    """Stands in for a parser to record ``ScrapyCommand.add_options``' calls, so they can be repeated."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def add_argument_group(self, *args: Any, **kwargs: Any) -> _OptionRecorder:
        return self

    def add_argument(self, *args: str, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))


def _dest(args: tuple[str, ...], kwargs: dict[str, Any]) -> str:
    if "dest" in kwargs:
        return kwargs["dest"]
    long = next((a for a in args if a.startswith("--")), args[0])
    return long.lstrip("-").replace("-", "_")


class Command(OfflineCommand):

    def syntax(self) -> str:
        return "ACTION [options] [ARGUMENT ...]"

    def short_desc(self) -> str:
        return "Isaac item recognizer: train, evaluate, identify, locate, preview"

    def long_desc(self) -> str:
        return (
            "Recognises Binding of Isaac items in photos of the screen. Actions: "
            + "; ".join(f"{name}: {what}" for name, what in ACTIONS.items())
            + ". Run `scrapy isaac ACTION -h` for an action's options. Examples: scrapy isaac train --steps 16000; "
            "scrapy isaac evaluate --scenes 100; scrapy isaac identify photo.jpg; scrapy isaac locate screenshot.png "
            "--draw boxes.png; scrapy isaac preview grid.png"
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        recorder = _OptionRecorder()
        super().add_options(recorder)  # type: ignore[arg-type]
        self._global_dests = [_dest(args, kwargs) for args, kwargs in recorder.calls]
        actions = parser.add_subparsers(dest="action", metavar="ACTION", title="actions", prog="scrapy isaac")
        subs = {name: actions.add_parser(name, help=what, description=what) for name, what in ACTIONS.items()}
        for sub in subs.values():
            group = sub.add_argument_group("Global Options")
            for args, kwargs in recorder.calls:
                group.add_argument(*args, **{**kwargs, "dest": AFTER_ACTION + _dest(args, kwargs),
                                             "default": argparse.SUPPRESS})
            sub.add_argument("--model", metavar="DIR", help="the model folder (default ISAAC_MODEL_DIR or OUTPUT_DIR/isaac-model)")
            sub.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

        train = subs["train"]
        train.add_argument("--steps", type=int, default=16_000, metavar="N", help="optimiser steps (default 16000)")
        train.add_argument("--batch-size", type=int, default=128, metavar="N", help="crops per step (default 128)")
        train.add_argument("--lr", type=float, default=3e-3, metavar="X", help="peak learning rate (default 0.003)")
        train.add_argument("--seed", type=int, default=0, metavar="N", help="data and initialisation seed (default 0)")
        train.add_argument("--classes", type=int, metavar="N", help="train on N classes spread over the set (quick runs)")
        train.add_argument("--workers", type=int, default=-1, metavar="N", help="loader processes (default: spare cores)")
        train.add_argument("--device", metavar="NAME", help="cpu, cuda, cuda:1 (default: CUDA when present)")
        train.add_argument("--checkpoint-every", type=int, default=250, metavar="N", help="steps between checkpoints")
        train.add_argument("--eval-every", type=int, default=2000, metavar="N", help="steps between validations")
        train.add_argument("--stop-after", type=int, metavar="N", help="stop after N steps of this call (resume later)")

        evaluate = subs["evaluate"]
        evaluate.add_argument("--per-class", type=int, default=10, metavar="N", help="test crops per class (default 10)")
        evaluate.add_argument("--negatives", type=int, default=500, metavar="N", help="crops with no item (default 500)")
        evaluate.add_argument("--scenes", type=int, default=100, metavar="N", help="test scenes for locate, 0: none (default 100)")
        evaluate.add_argument("--split", choices=("test", "val"), default="test", help="held-out backgrounds to use")
        evaluate.add_argument("--out", metavar="DIR", help="where the report and plots go (default: the model folder)")

        identify = subs["identify"]
        identify.add_argument("images", nargs="+", metavar="IMAGE")
        identify.add_argument("--top", type=int, default=5, metavar="K", help="guesses per picture (default 5)")
        identify.add_argument("--json", action="store_true", help="one JSON object per picture")

        locate = subs["locate"]
        locate.add_argument("images", nargs="+", metavar="SCREENSHOT")
        locate.add_argument("--json", action="store_true", help="one JSON object per picture")
        locate.add_argument("--draw", metavar="PNG", help="also write the (first) picture with its boxes and names")
        locate.add_argument("--icon-sizes", metavar="MIN,MAX", default="24,96",
                            help="the smallest and largest item size to look for, in picture pixels (default 24,96)")
        locate.add_argument("--threshold", type=float, default=0.5, metavar="P", help="least confidence kept (default 0.5)")

        preview = subs["preview"]
        preview.add_argument("png", metavar="PNG")
        preview.add_argument("--split", choices=("train", "val", "test"), default="train")
        preview.add_argument("--seed", type=int, default=0, metavar="N")
        preview.add_argument("--count", type=int, default=64, metavar="N", help="samples (default 64)")
        preview.add_argument("--start", type=int, default=0, metavar="I", help="first sample index (default 0)")
        preview.add_argument("--scenes", action="store_true", help="whole scenes with their boxes, for locate")

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        for dest in getattr(self, "_global_dests", []):
            if hasattr(opts, AFTER_ACTION + dest):
                value = getattr(opts, AFTER_ACTION + dest)
                before = getattr(opts, dest, None)
                setattr(opts, dest, before + value if isinstance(before, list) else value)
        super().process_options(args, opts)

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        if args:
            raise UsageError(f"unexpected argument {args[0]!r}", print_help=False)
        if not getattr(opts, "action", None):
            raise UsageError(f"say what to do: one of {', '.join(ACTIONS)}", print_help=False)
        configure_logging(self.settings)
        from models.isaac.icons import IconSourceError
        from models.isaac.identify import RecognizerError
        from models.torch_common import CheckpointError

        try:
            getattr(self, f"_{opts.action}")(opts)
        except (IconSourceError, RecognizerError, CheckpointError) as error:
            raise UsageError(str(error), print_help=False) from None

    # ---- helpers
    def model_dir(self, opts: argparse.Namespace) -> Path:
        assert self.settings is not None
        return Path(opts.model or self.settings.get("ISAAC_MODEL_DIR") or output_dir(self.settings) / "isaac-model")

    def icons(self) -> Any:
        from models.isaac.icons import FIXTURES_DIR, load_icons

        assert self.settings is not None
        fixtures = self.settings.get("ISAAC_FIXTURES_DIR") or FIXTURES_DIR
        catalog = catalog_path(self.settings)
        icons = load_icons(catalog if catalog.is_file() else None, fixtures, output_dir(self.settings))
        logger.info("Isaac (icons): %d classes from %s", len(icons), icons.source)
        return icons

    def recognizer(self, opts: argparse.Namespace) -> Any:
        from models.isaac.identify import Recognizer

        return Recognizer.load(self.model_dir(opts))

    # ---- actions
    def _train(self, opts: argparse.Namespace) -> None:
        from models.isaac.train import RunOptions, TrainConfig, TrainError, seconds_text, train

        icons = self.icons()
        if opts.classes:
            icons = icons.spread(opts.classes)
        config = TrainConfig(steps=opts.steps, batch_size=opts.batch_size, learning_rate=opts.lr, seed=opts.seed)
        run = RunOptions(checkpoint_every=opts.checkpoint_every, eval_every=opts.eval_every, workers=opts.workers,
                         device=opts.device, progress=not opts.no_progress, stop_after=opts.stop_after)
        try:
            result = train(icons, self.model_dir(opts), config, run)
        except TrainError as error:
            raise UsageError(str(error), print_help=False) from None
        if not result.finished:
            print(f"stopped at step {result.step} of {config.steps}; run the same command again to resume", flush=True)
            return
        training, metrics = result.card["training"], result.card["metrics"]
        print(
            f"{result.weights_path}: {len(icons)} classes + none, {training['samples']} samples in "
            f"{seconds_text(training['seconds'])} ({training['samples_per_second']}/s, loader wait "
            f"{training['loader_wait_seconds']}s, model {training['model_seconds']}s); validation top-1 "
            f"{metrics['val_top1']:.4f}, top-5 {metrics['val_top5']:.4f}",
            flush=True,
        )

    def _evaluate(self, opts: argparse.Namespace) -> None:
        from models.isaac.evaluate import REPORT_NAME, EvaluationError, evaluate

        try:
            report = evaluate(self.model_dir(opts), self.icons(), per_class=opts.per_class, negatives=opts.negatives,
                              scenes=opts.scenes, split=opts.split, out_dir=opts.out, progress=not opts.no_progress)
        except EvaluationError as error:
            raise UsageError(str(error), print_help=False) from None
        crops = report["crops"]
        print(f"{crops['split']}: {crops['images']} crops, top-1 {crops['top1']:.4f}, top-5 {crops['top5']:.4f}")
        for kind, numbers in crops["per_kind"].items():
            print(f"  {kind}: {numbers['images']} crops, top-1 {numbers['top1']:.4f}, top-5 {numbers['top5']:.4f}")
        print(f"  items called 'no item' {crops['items_called_none']:.4f}; empty crops called 'no item' "
              f"{crops['empty_called_none']:.4f}")
        for pair in crops["worst_pairs"][:5]:
            print(f"  {pair['true']['name_en']} → {pair['predicted']['name_en']}: {pair['count']} of {pair['of']}")
        if "locate" in report:
            found = report["locate"]
            print(f"locate: {found['scenes']} scenes, {found['items']} items: precision {found['precision']:.4f}, "
                  f"recall {found['recall']:.4f} (boxes alone {found['box_precision']:.4f}/{found['box_recall']:.4f}, "
                  f"mean IoU {found['mean_iou']:.3f}), {found['seconds_per_scene']}s a scene")
        print(f"report: {Path(opts.out or self.model_dir(opts)) / REPORT_NAME}", flush=True)

    def _identify(self, opts: argparse.Namespace) -> None:
        from models.isaac.identify import identify_files

        for result in identify_files(self.recognizer(opts), opts.images, opts.top):
            if opts.json:
                print(json.dumps({k: v for k, v in result.items() if k != "lines"}, ensure_ascii=False))
            elif "error" in result:
                print(f"{result['path']}: {result['error']}")
            else:
                print(result["path"])
                for rank, line in enumerate(result["lines"], 1):
                    print(f"  {rank}. {line}")
        sys.stdout.flush()

    def _locate(self, opts: argparse.Namespace) -> None:
        from PIL import Image

        from models.isaac.evaluate import EvaluationError, check_icons
        from models.isaac.locate import LocateOptions, Locator, draw_detections

        try:
            low, high = (float(v) for v in opts.icon_sizes.split(","))
        except ValueError:
            raise UsageError("--icon-sizes takes MIN,MAX in pixels, e.g. 24,96", print_help=False) from None
        recognizer = self.recognizer(opts)
        icons = self.icons()
        try:
            check_icons(recognizer, icons)
        except EvaluationError as error:
            raise UsageError(str(error), print_help=False) from None
        locator = Locator(recognizer, icons.pixels, LocateOptions(icon_sizes=(low, high), accept_threshold=opts.threshold))
        for position, path in enumerate(opts.images):
            try:
                with Image.open(path) as image:
                    image.load()
                    picture = image.copy()
            except OSError as error:
                print(f"{path}: not a readable image ({error})")
                continue
            detections = locator.locate(picture)
            if opts.json:
                print(json.dumps({"path": path, "items": [d.as_dict() for d in detections]}, ensure_ascii=False))
            else:
                print(f"{path}: {len(detections)} items")
                for found in detections:
                    x0, y0, x1, y1 = found.box
                    item = found.item
                    print(f"  [{x0:.0f},{y0:.0f},{x1:.0f},{y1:.0f}] {item.name_en} / {item.name_zh} "
                          f"[{item.kind} {item.game_id}] {found.confidence:.3f}")
            if opts.draw and position == 0:
                draw_detections(picture, detections).save(opts.draw)
        sys.stdout.flush()

    def _preview(self, opts: argparse.Namespace) -> None:
        from models.isaac.synthesis import Backgrounds, SyntheticIcons, preview_grid, preview_scenes

        icons = self.icons()
        if opts.scenes:
            image = preview_scenes(icons.pixels, Backgrounds.load(), opts.split, opts.seed, max(1, opts.count), opts.start)
        else:
            dataset = SyntheticIcons(icons, opts.split, seed=opts.seed, length=opts.start + opts.count, negative_every=20)
            image = preview_grid(dataset, opts.count, start=opts.start)
        Path(opts.png).parent.mkdir(parents=True, exist_ok=True)
        image.save(opts.png)
        print(f"{opts.png}: {opts.count} {'scenes' if opts.scenes else 'samples'} of {opts.split} (seed {opts.seed})")
