"""``scrapy classifier ACTION ...``: train the "Mona or not" classifier, score it, run it on pictures.

The work is in ``models.classifier``; this reads the arguments, turns unusable data or a broken
model into a usage error (exit code 2, one clear message) and prints the results: JSON for
``train`` and ``evaluate``, ``path<TAB>label<TAB>confidence`` lines for ``predict``. Keras is
imported only when an action runs. The crawl uses the model through ``CLASSIFIER_MODEL``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from scrapy.exceptions import UsageError

from core.storage import catalog_path, files_root
from crawler.command_base import ActionCommand

ACTIONS = {
    "train": (["DATA", "OUT"], "train on DATA (one sub-folder per class: mona/, other/); writes OUT/classifier.keras, "
                               "its card classifier.json and the plots history.png, confusion.png. The target class "
                               "is the first folder not named other/others/negative; a picture is that class when "
                               "its score reaches the card's threshold (0.5). With --from-catalog, only OUT: the "
                               "pictures kept and dropped by hand in scrapy review are the two classes, learned "
                               "by --learner"),
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
        "scrapy classifier train --from-catalog --class-name mona models/mona/   # labels from scrapy review",
        "scrapy curate --stages classify -s CLASSIFIER_MODEL=models/mona/classifier-linear.npz",
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
        group.add_argument("--from-catalog", action="store_true",
                           help="train on the catalogue's manual decisions (OUTPUT_DIR's): keep is the target "
                                "class, drop is other; then train takes only OUT")
        group.add_argument("--class-name", default="wanted", metavar="NAME",
                           help="the target class's name with --from-catalog (default wanted)")
        group.add_argument("--learner", choices=("linear", "cnn"), default="linear",
                           help="with --from-catalog: linear (default; a logistic regression over a frozen "
                                "network's features, LABEL_FEATURES: CCIP, the tagger's penultimate layer or "
                                "EfficientNet-Lite0; seconds; writes OUT/classifier-linear.npz) or cnn (the small "
                                "CNN above, from scratch, writes OUT/classifier.keras)")
        group.add_argument("--weak-tag", metavar="TAG",
                           help="with the linear learner: pictures carrying TAG (any alias) that nobody labelled "
                                "count as the target class, weighted down (default: LABEL_WEAK_TAG, none)")
        group.add_argument("--weak-weight", type=float, metavar="W",
                           help="a weak positive's weight against a label's 1 (default: LABEL_WEAK_WEIGHT, 0.3)")
        group = parser.add_argument_group("all actions")
        group.add_argument("--batch-size", type=int, default=32, metavar="N", help="default 32")

    def operands_wanted(self, action: str, opts: argparse.Namespace) -> list[str]:
        if opts.from_catalog:
            if action != "train":
                raise UsageError("--from-catalog goes with train only", print_help=False)
            return ["OUT"]
        return super().operands_wanted(action, opts)

    def act(self, action: str, operands: list[str], opts: argparse.Namespace) -> None:
        from models import classifier

        if action == "train" and opts.from_catalog:
            self.train_from_catalog(operands[0], opts)
        elif action == "train":
            with contextlib.redirect_stdout(sys.stderr):  # Keras's epoch bars: stdout is the JSON result's
                result = classifier.train(operands[0], operands[1], epochs=opts.epochs, image_size=opts.image_size,
                                          batch_size=opts.batch_size, backbone=opts.backbone, seed=opts.seed)
            print(json.dumps({"model": str(result.model_path), **result.card["metrics"]}, indent=2))
        elif action == "evaluate":
            scores = classifier.evaluate(operands[0], operands[1], batch_size=opts.batch_size, progress=True)
            print(json.dumps(scores, indent=2))
        else:
            self.predict(classifier, operands[0], operands[1:], opts.batch_size)

    def train_from_catalog(self, out: str, opts: argparse.Namespace) -> None:
        """The labels ``scrapy review`` stored, laid out as class folders in a scratch folder and trained
        on as any folder is; the card's ``data`` says they came from the catalogue."""
        from jobs.catalog_labels import lay_out
        from models import classifier, training

        assert self.settings is not None
        catalog = catalog_path(self.settings)
        if not catalog.is_file():
            raise UsageError(f"no catalogue at {catalog}: crawl first, or set OUTPUT_DIR or CATALOG_DB", print_help=False)
        if opts.learner == "linear":
            from jobs.catalog_labels import features_cache, train_linear
            from models.label_features import extractor_for

            weight = self.settings.getfloat("LABEL_WEAK_WEIGHT") if opts.weak_weight is None else opts.weak_weight
            if not 0 < weight <= 1:
                raise UsageError(f"--weak-weight must be over 0 and at most 1, not {weight}", print_help=False)
            with features_cache(self.settings) as cache:
                path, card = train_linear(catalog, files_root(self.settings), Path(out), opts.class_name, cache=cache,
                                          weak_tag=opts.weak_tag or self.settings.get("LABEL_WEAK_TAG") or None,
                                          weak_weight=weight, extractor=extractor_for(self.settings))
            weak = card["data"].get("weak_positives")
            print(json.dumps({"model": str(path), "features": card["extractor"]["version"], "labels": card["data"]["labels"],
                              **({"weak_positives": weak} if weak else {}), **card["metrics"]}, indent=2,
                             ensure_ascii=False))
            return
        if opts.weak_tag or opts.weak_weight is not None:
            raise UsageError("--weak-tag and --weak-weight go with the linear learner", print_help=False)
        with tempfile.TemporaryDirectory(prefix="labels-") as scratch:
            labels = lay_out(catalog, files_root(self.settings), Path(scratch), opts.class_name)
            with contextlib.redirect_stdout(sys.stderr):
                result = classifier.train(scratch, out, epochs=opts.epochs, image_size=opts.image_size,
                                          batch_size=opts.batch_size, backbone=opts.backbone, seed=opts.seed)
        card = {**result.card, "data": {**result.card["data"], **labels.card_section()}}
        training.write_card(result.card_path, card)
        print(json.dumps({"model": str(result.model_path), "labels": labels.per_class, **card["metrics"]}, indent=2))

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
