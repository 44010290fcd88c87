"""``scrapy faces ACTION ...``: train the learned face detector on labelled pictures, and measure one.

The work is in ``models.face_heatmap``; this reads the arguments, turns unusable data or weights
into a usage error (exit code 2, one clear message) and prints the results. torch is imported only
when an action runs. The crawl uses the weights through ``FACES_DETECTORS`` / ``FACES_HEATMAP_MODEL``.
"""

from __future__ import annotations

import argparse
from types import ModuleType

from scrapy.exceptions import UsageError

from crawler.command_base import ActionCommand

ACTIONS = {
    "train": (["LABELLED_DIR", "OUT"], "train on the pictures under LABELLED_DIR: a labelme .json of rectangles "
                                       "beside a picture gives its faces, a picture without one is face-free; "
                                       "writes the weights to OUT (a .pt file) and OUT.json (the run)"),
    "evaluate": (["MODEL", "LABELLED_DIR"], "run the weights (a .pt from train, or a YOLO face detector .onnx) on "
                                            "labelled pictures: pictures whose face was found (IoU >= 0.3), boxes "
                                            "elsewhere, face-free pictures with a box"),
}


class Command(ActionCommand):
    name = "faces"
    actions = ACTIONS
    about = (
        "A small fully convolutional net that marks face centres (models/face_heatmap.py), then a crop\n"
        "verifier taught on its mistakes (models/face_verifier.py). Runs on CUDA when there is a GPU, else\n"
        "on the CPU (~0.25 s a step of 32 patches, ~0.1 s a verifier step, on two cores)."
    )
    examples = (
        "scrapy faces train data/labelled models/faces.pt --steps 1800",
        "scrapy faces evaluate models/faces.pt data/held-out",
        "scrapy crawl pixiv -s FACES_DETECTORS=cascade,animeface,heatmap -s FACES_HEATMAP_MODEL=models/faces.pt",
    )

    def short_desc(self) -> str:
        return "Train the learned anime face detector on labelled pictures, and measure it (torch)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--labels", metavar="DIR",
                            help="read the labelme files from DIR, mirroring LABELLED_DIR's layout, instead of beside "
                                 "the pictures (e.g. datasets/anime-faces over ../shared/fixtures/anime)")
        group = parser.add_argument_group("train")
        group.add_argument("--steps", type=int, default=1800, metavar="N", help="optimiser steps (default 1800)")
        group.add_argument("--batch-size", type=int, default=32, metavar="N", help="patches a step (default 32)")
        group.add_argument("--lr", type=float, default=2e-3, metavar="RATE", help="peak learning rate (default 0.002)")
        group.add_argument("--verifier-steps", type=int, default=1500, metavar="N",
                           help="then train the crop verifier on the net's mistakes for N steps (0: none; default 1500)")
        group.add_argument("--seed", type=int, default=0, metavar="N", help="default 0")
        group.add_argument("--device", metavar="NAME", help="cpu, cuda, cuda:1 (default: cuda when available)")
        group = parser.add_argument_group("evaluate")
        group.add_argument("--threshold", type=float, default=None, metavar="P",
                           help="centre score that makes a face (default: FACES_HEATMAP_THRESHOLD)")

    def act(self, action: str, operands: list[str], opts: argparse.Namespace) -> None:
        from models import face_heatmap

        try:
            if action == "train":
                self.train(face_heatmap, operands, opts)
            else:
                self.evaluate(face_heatmap, operands, opts)
        except (ValueError, OSError) as exc:  # what reading a labelme folder or a picture raises
            raise UsageError(str(exc), print_help=False) from None

    def train(self, face_heatmap: ModuleType, operands: list[str], opts: argparse.Namespace) -> None:
        pictures = face_heatmap.read_labelme_boxes(operands[0], opts.labels)
        config = face_heatmap.TrainConfig(steps=opts.steps, batch_size=opts.batch_size,
                                          learning_rate=opts.lr, seed=opts.seed, verifier_steps=opts.verifier_steps)
        net, result = face_heatmap.train(pictures, config, log=print, device=opts.device)
        face_heatmap.save(net, operands[1], result)
        summary = {key: value for key, value in vars(result).items() if key not in ("losses", "verifier_losses")}
        summary["final_loss"] = sum(result.losses[-50:]) / max(len(result.losses[-50:]), 1)
        from models.training import created_now, write_card

        write_card(operands[1] + ".json", {**summary, "created": created_now()})
        print(f"Trained on {result.pictures} pictures ({result.faces} faces, {result.negatives} face-free) "
              f"in {result.seconds:.0f} s, final loss {summary['final_loss']:.3f}; weights {operands[1]}")

    def evaluate(self, face_heatmap: ModuleType, operands: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        if operands[0].lower().endswith(".onnx"):  # a pretrained YOLO face detector (models/face_yolo.py)
            from models.face_yolo import YoloFaceDetector

            threshold = opts.threshold if opts.threshold is not None else self.settings.getfloat("FACES_YOLO_THRESHOLD")
            detector = YoloFaceDetector(operands[0], threshold)
        else:
            threshold = opts.threshold if opts.threshold is not None else self.settings.getfloat("FACES_HEATMAP_THRESHOLD")
            detector = face_heatmap.HeatmapDetector(operands[0], threshold)
        score = face_heatmap.evaluate(detector.boxes, face_heatmap.read_labelme_boxes(operands[1], opts.labels))
        print(f"Faces found on {score.found}/{score.with_faces} pictures (recall {score.recall:.3f}), "
              f"{score.wrong_boxes} boxes elsewhere; face-free pictures with a box: "
              f"{score.false_positives}/{score.negatives} ({score.false_positive_rate:.3f})")
        for name in score.missed:
            print(f"  missed: {name}")
        for name in score.fired:
            print(f"  false positive: {name}")
