"""The review page learns while a person labels: retrain, rescore, decide again, in the background.

After every ``REVIEW_RETRAIN_EVERY`` new labels (keep/drop decisions by hand), ``scrapy review`` starts
one background worker (a thread: the server stays responsive, the work is mostly numpy and torch,
which release the GIL) that

1. embeds every catalogued still picture not embedded before, through the network LABEL_FEATURES
   chooses (models/label_features.py; the feature cache, LABEL_FEATURES_CACHE: the slow part, once
   per picture), outside any lock;
2. trains the fast learner on every label so far and the weak positives (LABEL_WEAK_TAG) if any
   (jobs/catalog_labels.py ``train_linear``: a logistic regression over those features, standardised
   over every picture it sorts), into ``REVIEW_MODEL_DIR`` (default OUTPUT_DIR/review-model/), one
   numbered file per retrain, and scores every picture from the same features;
3. then, holding OUTPUT_DIR's lock and the page's own write lock (so a click waits a moment instead
   of racing it), stores the scores and decides every picture again as ``scrapy curate --stages
   classify`` would (the same ``Curator``, which finds the scores already there and only decides):
   the user's rules when one of them reads the classifier, else ``LABELLING_RULE`` (keep from the
   model's threshold, drop the rest). Manual decisions outrank every rule, as everywhere.

Nothing of a person's labels lives in the worker: each one is in the catalogue before its click is
answered, so a worker that fails (a full disk, a picture that breaks the model) loses none; the page
shows the failure and the next label tries again. ``status`` is what GET /api/model and the page show.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.store import Catalog, utc_now
from core.output_lock import OutputLock
from stages.rules import condition_of, load_rules

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

LABELLING_RULE = {"action": "keep", "if": "classifier"}  # from the model's threshold; CURATE_DEFAULT drop
LOCK_WAIT = 60.0  # seconds the worker waits for OUTPUT_DIR's lock (a crawl there) before giving up this round


class Learner:
    """One background retrain at a time, started by ``labels_changed``; ``status()`` says where it is."""

    def __init__(self, settings: BaseSettings, catalog_path: Path, root: Path, model_dir: Path, every: int,
                 write_lock: threading.Lock, output_lock: OutputLock, class_name: str = "wanted") -> None:
        self.settings = settings
        self.catalog_path = catalog_path
        self.root = root
        self.model_dir = model_dir
        self.every = every
        self.write_lock = write_lock
        self.output_lock = output_lock
        self.class_name = class_name
        self._extractor: Any = None  # the network the models read pictures through, loaded once
        self._guard = threading.Lock()  # over the fields below
        self._thread: threading.Thread | None = None
        self.trained_on: int | None = None  # labels the last started retrain had
        self.state = "idle"  # idle, training, waiting (for labels of both kinds), failed
        self.error: str | None = None
        self.model_path: Path | None = self._latest_model()
        self.last: dict[str, Any] | None = None

    def _latest_model(self) -> Path | None:
        found = sorted(self.model_dir.glob("classifier-linear-*.npz"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    def status(self) -> dict[str, Any]:
        with self._guard:
            return {"state": self.state, "error": self.error, "every": self.every, "trained_on": self.trained_on,
                    "model": str(self.model_path) if self.model_path else None, "last": self.last}

    def labels_changed(self, labels: int) -> bool:
        """Start a retrain when ``labels`` is ``every`` or more past the last one's (and none runs)."""
        if self.every <= 0:
            return False
        with self._guard:
            running = self._thread is not None and self._thread.is_alive()
            done = self.trained_on or 0
            # waiting for both kinds of label: any new label may be the missing kind
            due = labels - done >= self.every or (self.state == "waiting" and labels > done)
            if running or not due:
                return False
            self.trained_on, self.state, self.error = labels, "training", None
            self._thread = threading.Thread(target=self._work, args=(labels,), name="review-learner", daemon=True)
            self._thread.start()
        return True

    # --- the worker -------------------------------------------------------------------------------------
    def _work(self, labels: int) -> None:
        try:
            self._one_round(labels)
        finally:
            with self._guard:
                self._thread = None
            self._follow_up()

    def _follow_up(self) -> None:
        """Labels given while this round ran may already be due for the next one."""
        try:
            catalog = Catalog(self.catalog_path)
            try:
                labels = sum(catalog.manual_decision_counts())
            finally:
                catalog.close()
        except Exception:  # noqa: BLE001 - the next click checks again
            logger.exception("Review: could not count the labels after a retrain")
            return
        self.labels_changed(labels)

    def _one_round(self, labels: int) -> None:
        from jobs.catalog_labels import NotEnoughLabels

        started = time.perf_counter()
        try:
            result = self._retrain(labels)
        except NotEnoughLabels as exc:  # not a failure: the person has not labelled both kinds yet
            with self._guard:
                self.state, self.error = "waiting", str(exc)  # the next label tries again
            return
        except Exception as exc:  # noqa: BLE001 - whatever broke, the page must say so; the labels are safe
            logger.error("Review: the background retrain failed: %s", "".join(traceback.format_exception_only(exc)).strip())
            with self._guard:
                self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            return
        result["seconds"] = round(time.perf_counter() - started, 2)
        with self._guard:
            self.state, self.last, self.model_path = "idle", result, Path(result["model"])
        logger.info("Review: new model %s live (%d labels): %s", result["version"], labels, result["change"])

    def _retrain(self, labels: int) -> dict[str, Any]:
        from jobs.catalog_labels import embed_stored, features_cache, sortable_pictures, train_linear
        from models.label_features import extractor_for
        from stages.classify import Classify

        scratch = self.model_dir / f".training-{labels}"
        if self._extractor is None:
            self._extractor = extractor_for(self.settings)
        with features_cache(self.settings) as cache:
            pool = embed_stored(self.root, sortable_pictures(self.catalog_path), cache, self._extractor)
            path, card = train_linear(self.catalog_path, self.root, scratch, self.class_name, cache=cache,
                                      weak_tag=self.settings.get("LABEL_WEAK_TAG") or None,
                                      weak_weight=self.settings.getfloat("LABEL_WEAK_WEIGHT"), pool=pool,
                                      extractor=self._extractor)
        final = self.model_dir / f"classifier-linear-{labels:05d}.npz"
        path.replace(final)  # the arrays first, then the card: a model file is never without its card
        path.with_suffix(".json").replace(final.with_suffix(".json"))
        scratch.rmdir()
        stage = Classify(final)  # what the crawl and `scrapy curate` score with: the same results
        stage.load().extractor = self._extractor  # the network already loaded, not a second copy
        scores = dict(zip(pool.keys, stage.results_from_features(pool.features)))
        change = self._apply(final, stage, scores)
        return {"model": str(final), "version": stage.version, "labels": labels, "finished_at": utc_now(),
                "held_out": card["metrics"].get("cross_validated"), "change": change}

    def _apply(self, model_path: Path, stage: Any, scores: dict[tuple[str, int], dict[str, Any]]) -> dict[str, int]:
        """Store the scores and decide every picture again, under both locks; what changed."""
        from jobs.curate import Curator

        settings = self.settings.copy()
        settings.set("CLASSIFIER_MODEL", str(model_path), priority="cmdline")
        if not any(condition_of(rule) == "classifier" for rule in load_rules(self.settings)):
            settings.set("CURATE_RULES_FILE", "", priority="cmdline")
            settings.set("CURATE_RULES", [{**LABELLING_RULE, "min": stage.load().threshold}], priority="cmdline")
            settings.set("CURATE_DEFAULT", "drop", priority="cmdline")
        with self.write_lock:
            deadline = time.monotonic() + LOCK_WAIT
            while (holder := self.output_lock.acquire("scrapy review (retrain)")) is not None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"OUTPUT_DIR stayed busy ({holder}); the new model is saved but not applied")
                time.sleep(0.5)
            try:
                catalog = Catalog(self.catalog_path)
                try:
                    now = utc_now()
                    with catalog.batch():
                        for (artwork_id, page), result in scores.items():
                            catalog.set_classifier(artwork_id, page, result)
                            catalog.record_stage_run(artwork_id, page, "classify", stage.version, None, now)
                finally:
                    catalog.close()
                curator = Curator(settings, ["classify"], progress=False)  # finds the scores there: only decides
                try:
                    summary = curator.run(curator.collect([]))
                finally:
                    curator.close()
            finally:
                self.output_lock.release()
        return {"kept": summary.now_kept, "dropped": summary.now_dropped, "scored": len(scores)}
