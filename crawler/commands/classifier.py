"""``scrapy classifier ACTION ...``: train the "Mona or not" classifier, score it, run it on pictures.

The work is in ``models.classifier``; this reads the arguments, turns unusable data or a broken
model into a usage error (exit code 2, one clear message) and prints the results: JSON for
``train`` and ``evaluate``, ``path<TAB>label<TAB>confidence`` lines for ``predict``. Keras is
imported only when an action runs. The crawl uses the model through ``CLASSIFIER_MODEL``.
"""

from __future__ import annotations

import argparse
import json
import sys
from types import ModuleType

from crawler.command_base import ActionCommand

ACTIONS = {
    "train": (["DATA", "OUT"], "train on DATA (one sub-folder per class: mona/, other/); writes OUT/classifier.keras, "
                               "its card classifier.json and the plots history.png, confusion.png"),
    "evaluate": (["MODEL", "DATA"], "score MODEL on a labelled folder (same layout): accuracy, per-class "
                                    "precision and recall, confusion matrix, as JSON"),
    "predict": (["MODEL", "PATH..."], "print path<TAB>label<TAB>confidence for each picture (files or folders)"),
}


class Command(ActionCommand):
    name = "classifier"
    actions = ACTIONS
    variadic = frozenset({"predict"})
    about = (
        "A small Keras CNN, or a frozen keras.applications backbone with --backbone (models/classifier.py)."
    )
    examples = (
        "scrapy classifier train data/ models/mona/          # data/mona/*.png, data/other/*.jpg",
        "scrapy classifier evaluate models/mona/classifier.keras labelled/",
        "scrapy classifier predict models/mona/classifier.keras some/folder/",
        "scrapy crawl pixiv -a tag=原神 -s CLASSIFIER_MODEL=models/mona/classifier.keras",
    )

    def short_desc(self) -> str:
        return "Train the character classifier on labelled folders, score it, run it on pictures (Keras)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        group = parser.add_argument_group("train")
        group.add_argument("--epochs", type=int, default=30, metavar="N", help="default 30")
        group.add_argument("--image-size", type=int, default=96, metavar="PX", help="square input side (default 96)")
        group.add_argument("--backbone", metavar="NAME", help="a keras.applications name, e.g. MobileNetV2")
        group.add_argument("--seed", type=int, default=1337, metavar="N", help="default 1337")
        group = parser.add_argument_group("all actions")
        group.add_argument("--batch-size", type=int, default=32, metavar="N", help="default 32")

    def act(self, action: str, operands: list[str], opts: argparse.Namespace) -> None:
        from models import classifier

        if action == "train":
            result = classifier.train(operands[0], operands[1], epochs=opts.epochs, image_size=opts.image_size,
                                      batch_size=opts.batch_size, backbone=opts.backbone, seed=opts.seed)
            print(json.dumps({"model": str(result.model_path), **result.card["metrics"]}, indent=2))
        elif action == "evaluate":
            scores = classifier.evaluate(operands[0], operands[1], batch_size=opts.batch_size, progress=True)
            print(json.dumps(scores, indent=2))
        else:
            self.predict(classifier, operands[0], operands[1:], opts.batch_size)

    @staticmethod
    def predict(classifier: ModuleType, model: str, arguments: list[str], batch_size: int) -> None:
        loaded = classifier.CharacterClassifier.load(model)
        paths = classifier.expand_paths(arguments)
        from core.progress import progress_bar

        bar = progress_bar("predicting", len(paths))
        for kept, images in classifier.iter_batches(paths, batch_size):
            for path, prediction in zip(kept, loaded.predict(images, batch_size=batch_size)):
                print(f"{path}\t{prediction.label}\t{prediction.confidence:.4f}")
            sys.stdout.flush()
            bar.update(batch_size)
        bar.close()
