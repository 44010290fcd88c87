"""``scrapy isaac ACTION ...``: train, measure and use the Isaac item recognizer.

Thin over ``models.isaac``, on the shared ``ActionCommand`` dispatch (crawler/command_base.py). Icons
come from the catalogue's ``sprites`` table when it has labelled ones, else from slicing the captured
wiki files (``ISAAC_FIXTURES_DIR``). The model lives in ``ISAAC_MODEL_DIR`` (default
``OUTPUT_DIR/isaac-model``) unless ``--model`` says otherwise.

``--split`` and ``--scenes`` are shared by two actions with different defaults: evaluate reads the
test (or val) backgrounds and locates in 100 scenes; preview draws from train and, with a bare
``--scenes``, draws whole scenes instead of crops.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from scrapy.exceptions import UsageError

from core.storage import catalog_path, output_dir
from crawler.command_base import ActionCommand

logger = logging.getLogger(__name__)

# the recognizer trained with the default recipe, shipped (its README says how it was made)
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "shipped" / "isaac-recognizer"
WEIGHTS_NAME = "isaac-recognizer.pt"  # models/isaac/train.py's (not imported here: that would import torch)

ACTIONS = {
    "train": ([], "train (or resume) the recognizer on synthetic camera-like crops"),
    "evaluate": ([], "top-1/top-5 per kind on held-out crops, worst confusions, locate precision/recall; "
                     "JSON + plots"),
    "identify": (["IMAGE..."], "name the item in each cropped picture: top-k, both names, description, confidence"),
    "locate": (["SCREENSHOT..."], "find every item in whole screenshots or photos: boxes and names"),
    "preview": (["PNG"], "write a grid of synthetic samples (or scenes) to a PNG"),
}
PREVIEW_SCENES = -1  # what a bare --scenes stores: preview draws whole scenes


class Command(ActionCommand):
    name = "isaac"
    actions = ACTIONS
    variadic = frozenset({"identify", "locate"})
    about = "Recognises Binding of Isaac items in photos of the screen (models/isaac/)."
    examples = (
        "scrapy isaac train --steps 16000",
        "scrapy isaac train --stop-after 2000      # in parts: run it again to resume",
        "scrapy isaac evaluate --scenes 100",
        "scrapy isaac identify photo.jpg --top 5",
        "scrapy isaac locate screenshot.png --draw boxes.png --json",
        "scrapy isaac preview grid.png --split train --count 64",
    )

    def short_desc(self) -> str:
        return "Isaac item recognizer: train, evaluate, identify, locate, preview"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        group = parser.add_argument_group("all actions")
        group.add_argument("--model", metavar="DIR", help="the model folder (default ISAAC_MODEL_DIR or OUTPUT_DIR/isaac-model)")
        group.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

        group = parser.add_argument_group("train")
        group.add_argument("--steps", type=int, default=16_000, metavar="N", help="optimiser steps (default 16000)")
        group.add_argument("--batch-size", type=int, default=128, metavar="N", help="crops per step (default 128)")
        group.add_argument("--lr", type=float, default=3e-3, metavar="X", help="peak learning rate (default 0.003)")
        group.add_argument("--seed", type=int, default=0, metavar="N",
                           help="train: data and initialisation seed; preview: sample seed (default 0)")
        group.add_argument("--classes", type=int, metavar="N", help="train on N classes spread over the set (quick runs)")
        group.add_argument("--workers", type=int, default=-1, metavar="N", help="loader processes (default: spare cores)")
        group.add_argument("--device", metavar="NAME", help="cpu, cuda, cuda:1 (default: CUDA when present)")
        group.add_argument("--checkpoint-every", type=int, default=250, metavar="N", help="steps between checkpoints")
        group.add_argument("--eval-every", type=int, default=2000, metavar="N", help="steps between validations")
        group.add_argument("--stop-after", type=int, metavar="N", help="stop after N steps of this call (resume later)")

        group = parser.add_argument_group("evaluate")
        group.add_argument("--per-class", type=int, default=10, metavar="N", help="test crops per class (default 10)")
        group.add_argument("--negatives", type=int, default=500, metavar="N", help="crops with no item (default 500)")
        group.add_argument("--scenes", type=int, nargs="?", const=PREVIEW_SCENES, metavar="N",
                           help="evaluate: test scenes for locate, 0: none (default 100); preview (bare): draw whole "
                                "scenes with their boxes, for locate")
        group.add_argument("--split", choices=("train", "val", "test"),
                           help="held-out backgrounds to evaluate on (test or val, default test); the split "
                                "preview draws from (default train)")
        group.add_argument("--out", metavar="DIR", help="where the report and plots go (default: the model folder)")

        group = parser.add_argument_group("identify and locate")
        group.add_argument("--top", type=int, default=5, metavar="K", help="identify: guesses per picture (default 5)")
        group.add_argument("--json", action="store_true", help="one JSON object per picture")
        group.add_argument("--draw", metavar="PNG", help="locate: also write the (first) picture with its boxes and names")
        group.add_argument("--icon-sizes", metavar="MIN,MAX", default="24,96",
                           help="locate: the smallest and largest item size to look for, in picture pixels "
                                "(default 24,96)")
        group.add_argument("--threshold", type=float, default=0.5, metavar="P",
                           help="locate: least confidence kept (default 0.5)")

        group = parser.add_argument_group("preview")
        group.add_argument("--count", type=int, default=64, metavar="N", help="samples (default 64)")
        group.add_argument("--start", type=int, default=0, metavar="I", help="first sample index (default 0)")

    def act(self, action: str, operands: list[str], opts: argparse.Namespace) -> None:
        getattr(self, f"_{action}")(operands, opts)

    # ---- helpers
    def model_dir(self, opts: argparse.Namespace, reading: bool = True) -> Path:
        """--model, else ISAAC_MODEL_DIR, else OUTPUT_DIR/isaac-model; a reading action falls back to the
        recognizer that ships with the project (models/shipped/isaac-recognizer/) when nothing was trained."""
        assert self.settings is not None
        if opts.model:
            return Path(opts.model)
        from models.registry import resolve_setting

        chosen = resolve_setting(self.settings, "ISAAC_MODEL_DIR")
        if chosen:
            return Path(chosen)
        trained = output_dir(self.settings) / "isaac-model"
        if reading and not (trained / WEIGHTS_NAME).is_file() and (SHIPPED_MODEL_DIR / WEIGHTS_NAME).is_file():
            return SHIPPED_MODEL_DIR
        return trained

    def report_dir(self, opts: argparse.Namespace) -> Path:
        """Where evaluate writes: --out, else the model folder, but never into the shipped one."""
        if opts.out:
            return Path(opts.out)
        model = self.model_dir(opts)
        assert self.settings is not None
        return output_dir(self.settings) / "isaac-evaluation" if model == SHIPPED_MODEL_DIR else model

    def icons(self) -> Any:
        from jobs.isaac_icons import load_icons
        from models.isaac.icons import FIXTURES_DIR

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
    def _train(self, operands: list[str], opts: argparse.Namespace) -> None:
        from models.isaac.train import RunOptions, TrainConfig, seconds_text, train

        icons = self.icons()
        if opts.classes:
            icons = icons.spread(opts.classes)
        config = TrainConfig(steps=opts.steps, batch_size=opts.batch_size, learning_rate=opts.lr, seed=opts.seed)
        run = RunOptions(checkpoint_every=opts.checkpoint_every, eval_every=opts.eval_every, workers=opts.workers,
                         device=opts.device, progress=not opts.no_progress, stop_after=opts.stop_after)
        result = train(icons, self.model_dir(opts, reading=False), config, run)
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

    def _evaluate(self, operands: list[str], opts: argparse.Namespace) -> None:
        from models.isaac.evaluate import REPORT_NAME, evaluate

        split = opts.split or "test"
        if split == "train":
            raise UsageError("evaluate --split takes test or val: the train backgrounds are the ones it learned on",
                             print_help=False)
        scenes = 100 if opts.scenes is None else opts.scenes
        if scenes < 0:
            raise UsageError("evaluate --scenes takes a number of scenes (0: none)", print_help=False)
        report = evaluate(self.model_dir(opts), self.icons(), per_class=opts.per_class, negatives=opts.negatives,
                          scenes=scenes, split=split, out_dir=self.report_dir(opts), progress=not opts.no_progress,
                          update_card=self.model_dir(opts) != SHIPPED_MODEL_DIR)  # the shipped card is the repository's
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
        print(f"report: {self.report_dir(opts) / REPORT_NAME}", flush=True)

    def _identify(self, operands: list[str], opts: argparse.Namespace) -> None:
        from models.isaac.identify import identify_files

        for result in identify_files(self.recognizer(opts), operands, opts.top):
            if opts.json:
                print(json.dumps({k: v for k, v in result.items() if k != "lines"}, ensure_ascii=False))
            elif "error" in result:
                print(f"{result['path']}: {result['error']}")
            else:
                print(result["path"])
                for rank, line in enumerate(result["lines"], 1):
                    print(f"  {rank}. {line}")
        sys.stdout.flush()

    def _locate(self, operands: list[str], opts: argparse.Namespace) -> None:
        from PIL import Image

        from models.isaac.evaluate import check_icons
        from models.isaac.locate import LocateOptions, Locator, draw_detections

        try:
            low, high = (float(v) for v in opts.icon_sizes.split(","))
        except ValueError:
            raise UsageError("--icon-sizes takes MIN,MAX in pixels, e.g. 24,96", print_help=False) from None
        recognizer = self.recognizer(opts)
        icons = self.icons()
        check_icons(recognizer, icons)
        locator = Locator(recognizer, icons.pixels, LocateOptions(icon_sizes=(low, high), accept_threshold=opts.threshold))
        for position, path in enumerate(operands):
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

    def _preview(self, operands: list[str], opts: argparse.Namespace) -> None:
        from models.isaac.synthesis import Backgrounds, SyntheticIcons, preview_grid, preview_scenes

        if opts.scenes not in (None, PREVIEW_SCENES):
            raise UsageError("preview takes a bare --scenes (how many: --count)", print_help=False)
        png, split, scenes = operands[0], opts.split or "train", opts.scenes == PREVIEW_SCENES
        icons = self.icons()
        if scenes:
            image = preview_scenes(icons.pixels, Backgrounds.load(), split, opts.seed, max(1, opts.count), opts.start)
        else:
            dataset = SyntheticIcons(icons, split, seed=opts.seed, length=opts.start + opts.count, negative_every=20)
            image = preview_grid(dataset, opts.count, start=opts.start)
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        image.save(png)
        print(f"{png}: {opts.count} {'scenes' if scenes else 'samples'} of {split} (seed {opts.seed})")
