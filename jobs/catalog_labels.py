"""The review page's keep/drop decisions as a classifier's training data (``scrapy classifier train
--from-catalog``).

A person who labels pictures in ``scrapy review`` has already made the "mona/" and "other/" folders
the classifier trains on; they just live in the catalogue. This lays them out as those folders (hard
links where the file system allows, else copies; the pictures stay where they are) and hands them to
the same trainer, so the split, the class weights and the card are the folder trainer's own, and the
card says where the labels came from. Keep is the target class, drop is ``other``. ``train_linear``
is the fast learner instead (models/label_learner.py): no folders, features of the labelled pictures
(kept in a feature cache by file hash, so a retrain embeds only pictures it has not seen), and the
weak positives: pictures tagged with the character's name that nobody labelled, weighted down.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog.schema import connect_read_only
from catalog.store import utc_now
from core.errors import DataError
from models.label_features import Extractor, FeatureCache

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


def _enough(catalog: Path, counts: dict[str, int], target: str, missing: int, weak: int = 0) -> None:
    """Refuse fewer than two labels of either class, saying how many there are."""
    if min(counts[target] + weak, counts[OTHER_CLASS]) < 2:
        raise NotEnoughLabels(
            f"{catalog}: {counts[target]} pictures kept and {counts[OTHER_CLASS]} dropped by hand"
            + (f" and {weak} weak positives from the tag" if weak else "")
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
FEATURES_CACHE_NAME = "label-features.sqlite"  # beside the catalogue unless LABEL_FEATURES_CACHE says otherwise
POOL_MAX = 3000  # pictures the features are standardised over: a seeded sample of a bigger catalogue
WEAK_WEIGHT = 0.3  # a weak positive's weight against a click's 1 (LABEL_WEAK_WEIGHT)


@dataclass
class Embedded:
    """Features of stored pictures: one row per picture in ``keys`` (artwork id, page) that could be
    read (the others are left out: ``scrapy curate`` says why a picture cannot be read)."""

    keys: list[tuple[str, int]]
    features: Any  # np.ndarray (len(keys), D)

    def sample(self, most: int) -> Any:
        """At most ``most`` rows of the features, the same ones every time for the same pictures."""
        return self.features[sample(list(range(len(self.keys))), most)]


def sample(items: list[Any], most: int, seed: int = 0) -> list[Any]:
    """At most ``most`` of ``items``, in their order; the same ones every time."""
    import random

    if len(items) <= most:
        return items
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), most))]


def features_cache(settings: Any) -> AbstractContextManager[FeatureCache | None]:
    """``with features_cache(settings) as cache``: the feature cache LABEL_FEATURES_CACHE names, closed
    at the end; None when it says off."""
    from core.storage import catalog_path

    where = str(settings.get("LABEL_FEATURES_CACHE") or "")
    if where.lower() == "off":
        return nullcontext(None)
    return FeatureCache(Path(where) if where else catalog_path(settings).parent / FEATURES_CACHE_NAME)


def embed_stored(root: Path, pictures: list[tuple[str, int, str]], cache: FeatureCache | None = None,
                 extractor: Extractor | None = None, known: Embedded | None = None) -> Embedded:
    """Features of (artwork id, page, stored path) pictures by ``extractor`` (default lite0), read as the
    classify stage reads them; those in ``known`` (embedded already in this run) taken from it, the
    others through ``cache`` (models.label_features.FeatureCache), keyed by the file's sha256 and the
    extractor's version, when given."""
    import hashlib

    import numpy as np

    from models.label_features import Lite0Features
    from stages.picture_model import open_pictures

    extractor = extractor if extractor is not None else Lite0Features()
    ready = dict(zip(known.keys, known.features)) if known is not None else {}
    digests: dict[int, str] = {}
    for i, (artwork_id, page, stored) in enumerate(pictures):
        if (artwork_id, page) not in ready:
            try:
                digests[i] = hashlib.sha256((root / stored).read_bytes()).hexdigest()
            except OSError:
                continue  # gone or unreadable: left out, as open_pictures leaves it out
    found = cache.get(list(digests.values()), extractor.version) if cache is not None else {}
    missing = [i for i, digest in digests.items() if digest not in found]
    if missing:
        images, readable, _reasons = open_pictures(root, [pictures[i][2] for i in missing])
        vectors = extractor(images) if images else np.zeros((0, 0), np.float32)
        fresh = {digests[missing[j]]: vectors[n] for n, j in enumerate(readable)}
        if cache is not None and fresh:
            cache.put(fresh, extractor.version)
        found = {**found, **fresh}
    for i, digest in digests.items():
        if digest in found:
            ready[pictures[i][:2]] = found[digest]
    keys = [(artwork_id, page) for artwork_id, page, _ in pictures if (artwork_id, page) in ready]
    features = np.stack([ready[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)
    return Embedded(keys, features)


def sortable_pictures(catalog: Path) -> list[tuple[str, int, str]]:
    """(artwork id, page, stored path) of every still picture the classifier sorts (as ``scrapy curate``)."""
    from catalog.store import Catalog

    store = Catalog(catalog)
    try:
        return [(p.artwork_id, p.page, p.path or "") for p in store.curatable_pictures() if p.still]
    finally:
        store.close()


def weak_positives(catalog: Path, tag: str, labelled: set[tuple[str, int]]) -> list[tuple[str, int, str]]:
    """Still pictures carrying ``tag`` (any alias, as a Pixiv or a model tag; catalog/tags.py) that
    nobody decided by hand: (artwork id, page, stored path)."""
    from catalog.curation import is_still
    from catalog.tags import pictures_with

    with closing(connect_read_only(catalog)) as conn:
        try:
            tagged = pictures_with(conn, tag, statuses=("kept", "dropped"))
        except sqlite3.OperationalError:  # a catalogue without the tag tables
            return []
    return [(p.artwork_id, p.page, p.path) for p in tagged
            if p.path and (p.artwork_id, p.page) not in labelled and is_still(p.artwork_id, p.path)]


def train_linear(catalog: Path, root: Path, out_dir: Path, target: str = "wanted", *, cache: FeatureCache | None = None,
                 weak_tag: str | None = None, weak_weight: float = WEAK_WEIGHT, pool: Embedded | None = None,
                 extractor: Extractor | None = None) -> tuple[Path, dict[str, Any]]:
    """The fast learner (models/label_learner.py) on the catalogue's manual decisions: features of each
    labelled picture, standardised over the pictures it will sort (``pool``; by default a sample of
    the catalogue's), a logistic regression, its held-out figures by cross-validation over the labels;
    with ``weak_tag``, the pictures carrying that tag and not labelled by hand join as positives of
    weight ``weak_weight``; features by ``extractor`` (models/label_features.py; default lite0; ``pool``
    must come from the same one; its pictures are not read again). Written to
    ``out_dir/classifier-linear.npz`` with its card; returns the model's path and card."""
    import time

    from models.label_features import Lite0Features, describe
    from models.label_learner import LinearClassifier, cross_validated

    extractor = extractor if extractor is not None else Lite0Features()
    started = time.perf_counter()
    labelled = manual_labels(catalog)
    decided = {(artwork_id, page): decision for artwork_id, page, decision, _ in labelled}
    embedded = embed_stored(root, [(a, p, stored) for a, p, _, stored in labelled], cache, extractor, pool)
    wanted = [decided[key] == "keep" for key in embedded.keys]
    weak = embed_stored(root, weak_positives(catalog, weak_tag, set(decided)), cache, extractor, pool) if weak_tag else None
    weak_count = len(weak.keys) if weak is not None else 0
    missing = len(labelled) - len(embedded.keys)
    counts = {target: sum(wanted), OTHER_CLASS: len(wanted) - sum(wanted)}
    _enough(catalog, counts, target, missing, weak_count)
    if pool is None:  # a sample before embedding: a first run on a big catalogue need not embed all of it
        pool = embed_stored(root, sample(sortable_pictures(catalog), POOL_MAX), cache, extractor)
    spread = pool.sample(POOL_MAX) if len(pool.keys) >= 2 else embedded.features
    weak_features = (weak.features, weak_weight) if weak is not None and weak_count else None
    model = LinearClassifier.fit(embedded.features, wanted, (target, OTHER_CLASS), pool=spread, weak=weak_features)
    held_out = cross_validated(embedded.features, wanted, pool=spread, weak=weak_features)
    labels = CatalogLabels(counts, missing, str(catalog))
    data: dict[str, Any] = {"images": len(wanted), "per_class": counts, **labels.card_section(),
                            "standardised_over": len(spread)}
    if weak_tag:
        data["weak_positives"] = {"tag": weak_tag, "pictures": weak_count, "weight": weak_weight}
    path = out_dir / LINEAR_MODEL_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(path, {"features": extractor.description, "extractor": describe(extractor), "data": data,
                      "metrics": {"cross_validated": held_out},
                      "seconds": round(time.perf_counter() - started, 2), "created": utc_now()})
    return path, model.card
