"""The review page's keep/drop decisions as a classifier's training data (``scrapy classifier train
--from-catalog``).

A person who labels pictures in ``scrapy review`` has already made the "mona/" and "other/" folders
the classifier trains on; they just live in the catalogue. This lays them out as those folders (hard
links where the file system allows, else copies; the pictures stay where they are) and hands them to
the same trainer, so the split, the class weights and the card are the folder trainer's own, and the
card says where the labels came from. Keep is the target class, drop is ``other``. ``train_linear``
is the fast learner instead (models/label_learner.py): no folders, features of the labelled pictures.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog.schema import connect_read_only
from catalog.store import utc_now
from core.errors import DataError

OTHER_CLASS = "other"  # models.classifier.target_class treats this name as the negative class


class NotEnoughLabels(DataError, ValueError):
    """Too few manual decisions (or their files are gone) to train on: the data's fault, not the
    command line's (exit code 1, no usage banner)."""


@dataclass(frozen=True)
class CatalogLabels:
    """What was laid out: the labels by class, and the decided pictures whose file is missing."""

    per_class: dict[str, int]
    missing: int
    catalog: str

    def card_section(self) -> dict[str, object]:
        return {"source": "catalogue manual decisions (scrapy review)", "catalog": self.catalog,
                "labels": dict(self.per_class), "labels_without_a_file": self.missing}


def manual_labels(catalog: Path) -> list[tuple[str, int, str, str]]:
    """(artwork id, page, keep|drop, stored path) of every manual decision whose picture has a file."""
    with closing(connect_read_only(catalog)) as conn:
        try:
            return conn.execute(
                """SELECT m.artwork_id, m.page, m.decision, i.path FROM manual_decisions m
                   JOIN images i ON i.artwork_id = m.artwork_id AND i.page = m.page
                   WHERE i.path IS NOT NULL ORDER BY m.artwork_id, m.page"""
            ).fetchall()
        except sqlite3.OperationalError as exc:  # a catalogue from before manual decisions existed
            raise NotEnoughLabels(f"{catalog}: no manual decisions to train on ({exc})") from None


def _enough(catalog: Path, counts: dict[str, int], target: str, missing: int) -> None:
    """Refuse fewer than two labels of either class, saying how many there are."""
    if min(counts.values()) < 2:
        raise NotEnoughLabels(
            f"{catalog}: {counts[target]} pictures kept and {counts[OTHER_CLASS]} dropped by hand"
            + (f" ({missing} more without a readable file)" if missing else "")
            + "; training needs at least two of each: label more in scrapy review")


def lay_out(catalog: Path, root: Path, folder: Path, target: str = "wanted") -> CatalogLabels:
    """Write ``folder/{target}/`` (kept by hand) and ``folder/other/`` (dropped by hand) from the
    catalogue's manual decisions; ``root`` is where relative picture paths live (FILES_STORE)."""
    if target.lower() in ("other", "others", "negative") or not target or "/" in target or target.startswith("."):
        raise NotEnoughLabels(f"--class-name {target!r} cannot name the kept pictures' class")
    counts = {target: 0, OTHER_CLASS: 0}
    missing = 0
    for artwork_id, page, decision, stored in manual_labels(catalog):
        source = root / stored  # an absolute stored path (a picture curated from a folder) stays as it is
        if not source.is_file():
            missing += 1
            continue
        name = target if decision == "keep" else OTHER_CLASS
        safe_id = "".join(c if c.isalnum() or c in "-_" else "_" for c in artwork_id)
        destination = folder / name / f"{safe_id}_p{page}{source.suffix.lower()}"
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, destination)
        except OSError:  # another file system, or links not allowed: a copy
            shutil.copyfile(source, destination)
        counts[name] += 1
    _enough(catalog, counts, target, missing)
    return CatalogLabels(counts, missing, str(catalog))


LINEAR_MODEL_NAME = "classifier-linear.npz"


def train_linear(catalog: Path, root: Path, out_dir: Path, target: str = "wanted") -> tuple[Path, dict[str, Any]]:
    """The fast learner (models/label_learner.py) on the catalogue's manual decisions: features of each
    labelled picture, a logistic regression, its held-out figures by cross-validation over the labels;
    written to ``out_dir/classifier-linear.npz`` with its card. Returns the model's path and card."""
    import time

    from models.label_learner import LinearClassifier, PictureFeatures, cross_validated
    from stages.picture_model import open_pictures

    started = time.perf_counter()
    labelled = manual_labels(catalog)
    images, readable, _errors = open_pictures(root, [stored for *_, stored in labelled])  # as the classify stage reads them
    wanted = [labelled[i][2] == "keep" for i in readable]
    missing = len(labelled) - len(readable)
    counts = {target: sum(wanted), OTHER_CLASS: len(wanted) - sum(wanted)}
    _enough(catalog, counts, target, missing)
    features = PictureFeatures()(images)
    model = LinearClassifier.fit(features, wanted, (target, OTHER_CLASS))
    held_out = cross_validated(features, wanted)
    labels = CatalogLabels(counts, missing, str(catalog))
    path = out_dir / LINEAR_MODEL_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(path, {"data": {"images": len(wanted), "per_class": counts, **labels.card_section()},
                      "metrics": {"cross_validated": held_out}, "seconds": round(time.perf_counter() - started, 2),
                      "created": utc_now()})
    return path, model.card
