"""Re-curation without the crawler: the library under ``scrapy curate`` (crawler/commands/curate.py).

Someone with a crawl made before a better classifier, or a folder of 10,000 pictures and a
DeepDanbooru model, wants the curation stages run again over what they already have, without
crawling, and without paying twice for what the same model has already seen. So:

* Inputs are the catalogue's stored pictures (kept or dropped) or plain folders and files, which
  become ``local:{sha256[:20]}`` artworks of one page (content-addressed: the same picture in two
  folders is one row). A user's files are read where they are and never moved or deleted.
* It runs synchronously, batch after batch, in the command's process (no reactor). Each batch's
  results are written in one transaction, so a run killed half-way resumes where it stopped.
* ``curation_runs`` says which version of each stage last looked at a picture; a picture is
  skipped for a stage when that version is the current one and it ran without an error.
* With curation rules configured, every input picture is decided again from what is stored about
  it (including the results of stages skipped this run), exactly as the crawl's decision stage
  would, and a crawled picture's file moves between ``images/`` and ``dropped/`` to match.
* A picture without pixel statistics (stages/filters.py: a catalogue older than them, a folder
  picture) gets them, read from its file once, so the monochrome rule can decide it.
* A ``duplicate`` rule groups the run's pictures after every other decision: among the pictures
  the rules keep when no picture counts as a duplicate, copies with the same sha256 or perceptual
  hashes at most its ``distance`` apart (``CURATE_PHASH_DISTANCE`` by default) are one group
  (stages/dedup.py's matching). The best copy stays as decided: the most pixels, then the most
  bookmarks, then the lowest artwork id (numeric ids before local: ones) and page. Every other copy
  is decided again with the rule matching, its reason naming the kept copy. Only this run's
  pictures are grouped: with no PATH, the whole catalogue.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from catalog.store import LOCAL_PREFIX, Catalog, StoredPicture, utc_now
from catalog.tags import read_index
from core.progress import progress_bar
from core.storage import DROPPED_DIR, IMAGES_DIR, atomic_write, catalog_path, files_root, move_to_status, status_path
from core.workers import start_worker, worker_count
from jobs.curate_run import (
    CatalogueInput,
    CurateError,
    FileInput,
    ModelLoadError,
    Picture,
    Summary,
    absolute,
    from_printable,
    is_catalogue_file,
    picture_files,
    printable,
)
from models.registry import resolve_setting
from stages.classify import Classify
from stages.convert import BadImage, open_checked
from stages.decide import decide
from stages.dedup import Candidate, find_duplicates
from stages.faces import FaceSearch, page_faces
from stages.filters import picture_stats_bytes
from stages.picture_model import PictureModel
from stages.rules import condition_of, default_action, load_rules
from stages.tag import Tag

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

STAGES = ("faces", "classify", "tag", "identity")  # identity: after the batches (jobs/identity.py)


# --- stages ---------------------------------------------------------------------------------------
# Each knows its version without loading its model (a file hash), so a run with nothing to do never
# imports TensorFlow; ``load`` loads it when a batch needs it; ``run`` gives one result, or the reason
# as a str, per picture, in order; ``write`` stores a result in the catalogue.


class _PictureModelStage:
    """A model stage (stages/picture_model.py) run from here: loaded on the first batch that needs it."""

    name = ""
    stage: PictureModel
    version: str
    source: Path  # the model file or folder, for the log line

    def load(self) -> None:
        if self.stage.model is None:
            self.stage.load()
            logger.info("%s: %s loaded from %s", self.name.capitalize(), self.stage.version, self.source)

    def run(self, pictures: list[Picture]) -> list[Any]:
        return self.stage.results(Path("/"), [str(p.file) for p in pictures])


class ClassifyStage(_PictureModelStage):
    name = "classify"

    def __init__(self, settings: BaseSettings):
        model_path = Path(resolve_setting(settings, "CLASSIFIER_MODEL"))
        if not model_path.is_file():
            raise CurateError(f"CLASSIFIER_MODEL={str(model_path)!r}: no such file")
        self.stage, self.source = Classify(model_path), model_path
        self.version = self.stage.version

    def write(self, catalog: Catalog, picture: Picture, result: Any) -> None:
        catalog.set_classifier(picture.artwork_id, picture.page, result)


class TagStage(_PictureModelStage):
    name = "tag"

    def __init__(self, settings: BaseSettings):
        from models.tagger import TaggerError

        self.stage = Tag(resolve_setting(settings, "TAGGER_PROJECT"), settings.getfloat("TAGGER_THRESHOLD"),
                         dict(settings.getdict("TAGGER_CATEGORY_THRESHOLDS")))
        self.source = self.stage.project
        try:
            self.version = self.stage.version  # DeepDanbooru or WD14
        except TaggerError as exc:
            raise CurateError(f"TAGGER_PROJECT: {exc}") from None

    def write(self, catalog: Catalog, picture: Picture, result: Any) -> None:
        catalog.replace_model_tags(picture.artwork_id, picture.page, self.version, result)


class FacesStage:
    name = "faces"

    def __init__(self, settings: BaseSettings, root: Path):
        try:
            search = FaceSearch(settings)
        except ValueError as exc:
            raise CurateError(str(exc)) from None
        if not search.detectors:
            raise CurateError("no face detector can run here: " + search.why_none())
        for problem in search.problems:
            logger.warning(problem)
        self.settings = search.settings
        self.version = search.version
        self.root = str(root)
        self.workers = worker_count(settings.getint("IMAGE_WORKERS"))
        self.pool: ProcessPoolExecutor | None = None

    def load(self) -> None:
        """Nothing to load: the detectors are built where they run (here or in the workers)."""

    def run(self, pictures: list[Picture]) -> list[Any]:
        jobs = [(self.root, p.artwork_id, {"page": p.page, "path": str(p.file)}, self.settings) for p in pictures]
        if self.workers == 0 or len(jobs) < 2:
            outcomes = [page_faces(*job) for job in jobs]
        else:
            if self.pool is None:  # spawn, as the crawl's pool; workers die with this process
                self.pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=start_worker, initargs=(os.getpid(),),
                )
            outcomes = list(self.pool.map(page_faces, *zip(*jobs)))
        return [o["faces"] if o["faces_error"] is None else o["faces_error"] for o in outcomes]

    def write(self, catalog: Catalog, picture: Picture, result: Any) -> None:
        catalog.replace_faces(picture.artwork_id, picture.page, result)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


BatchStage = FacesStage | ClassifyStage | TagStage  # the stages run batch by batch (identity: after)


def choose_stages(settings: BaseSettings, requested: str | None) -> list[str]:
    """The stages to run: those named (each needs its model), else every configured one."""
    configured = {
        "faces": settings.getbool("FACES_ENABLED"),
        "classify": bool(settings.get("CLASSIFIER_MODEL")),
        "tag": bool(settings.get("TAGGER_PROJECT")),
        "identity": settings.getbool("IDENTITY_ENABLED"),  # the built-in embedder needs no model file
    }
    if requested is None:
        return [name for name in STAGES if configured[name]]
    names = [n.strip().lower() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise CurateError(f"unknown stage {unknown[0]!r} in --stages; known: {', '.join(STAGES)}")
    needs = {"classify": "CLASSIFIER_MODEL (-s CLASSIFIER_MODEL=path/to/classifier.keras)",
             "tag": "TAGGER_PROJECT (-s TAGGER_PROJECT=path/to/deepdanbooru-project or wd14-folder)"}
    for name in names:
        if name in needs and not configured[name]:
            raise CurateError(f"--stages {name} needs {needs[name]}, which is not set")
    return [name for name in STAGES if name in names]  # faces first: the order the crawl runs them


# --- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reported:
    """One line of the report: a picture in the catalogue (key), or a file that could not be read."""

    key: tuple[str, int] | None
    label: str
    from_catalogue: bool
    error: str | None = None


# --- the run --------------------------------------------------------------------------------------


class Curator:
    """Runs the chosen stages over pictures, batch by batch, into the project's catalogue."""

    def __init__(self, settings: BaseSettings, stages: Sequence[str], *, batch_size: int | None = None,
                 force: bool = False, progress: bool = True, reference: str | None = None):
        self.root = absolute(files_root(settings))
        self.catalog_path = absolute(catalog_path(settings))
        self.batch_size = batch_size or settings.getint("CURATE_BATCH_SIZE")
        if self.batch_size < 1:
            raise CurateError(f"the batch size must be at least 1, not {self.batch_size}")
        self.force = force
        self.progress = progress
        self.max_pixels = settings.getint("IMAGE_MAX_PIXELS")
        self.rules = load_rules(settings)
        self.default = default_action(settings) if self.rules else "keep"  # (without rules nothing is decided)
        self.delete_dropped = settings.getbool("CURATE_DELETE_DROPPED")
        makers: dict[str, Callable[[], BatchStage]] = {
            "faces": lambda: FacesStage(settings, self.root), "classify": lambda: ClassifyStage(settings),
            "tag": lambda: TagStage(settings),
        }
        self.stages: list[BatchStage] = [makers[name]() for name in stages if name != "identity"]
        if reference is not None and "identity" not in stages:
            raise CurateError("--reference is for the identity stage (--stages identity)")
        from jobs.identity import IdentityStage  # it imports this module

        self.identity = IdentityStage(settings, reference) if "identity" in stages else None
        self.catalog = Catalog(self.catalog_path)
        self.tags = read_index(self.catalog_path) if self.rules else None  # the tag rule reads aliases
        self.summary = Summary(versions={s.name: s.version for s in [*self.stages, self.identity] if s is not None})
        self._said_library_stays = False
        duplicate_rule = next((r for r in self.rules if condition_of(r) == "duplicate"), None)
        self.duplicate_distance = None if duplicate_rule is None else int(
            duplicate_rule.get("distance", settings.getint("CURATE_PHASH_DISTANCE")))
        self._undecided: list[Picture] = []  # with a duplicate rule: decided once every batch is in

    def close(self) -> None:
        for stage in self.stages:
            if isinstance(stage, FacesStage):
                stage.close()
        self.catalog.close()

    # --- inputs -----------------------------------------------------------------------------------
    def collect(self, paths: Sequence[str]) -> list[CatalogueInput | FileInput]:
        """The input pictures, in order: no PATH means the project's catalogue."""
        if not paths:
            return self._catalogue_inputs()
        inputs: list[CatalogueInput | FileInput] = []
        for argument in paths:
            path = absolute(argument)
            if path.is_dir() and (path / "catalog.db").is_file():
                self._check_is_ours(path / "catalog.db", argument)
                inputs.extend(self._catalogue_inputs())
            elif path.is_file() and is_catalogue_file(path):
                self._check_is_ours(path, argument)
                inputs.extend(self._catalogue_inputs())
            elif path.is_dir():
                inputs.extend(FileInput(p) for p in picture_files(path))
            elif path.is_file():
                inputs.append(FileInput(path))
            else:
                raise CurateError(f"{argument}: no such file or folder")
        return inputs

    def _check_is_ours(self, db: Path, argument: str) -> None:
        if db.resolve() != self.catalog_path.resolve():
            raise CurateError(
                f"{argument} is another catalogue than the project's ({self.catalog_path}), where results go; "
                f"re-curate it with -s OUTPUT_DIR={db.parent} (or -s CATALOG_DB={db})"
            )

    def _catalogue_inputs(self) -> list[CatalogueInput | FileInput]:
        return [CatalogueInput(p.artwork_id, p.page) for p in self.catalog.curatable_pictures()]

    # --- the run ----------------------------------------------------------------------------------
    def run(self, inputs: Sequence[CatalogueInput | FileInput], report: str | None = None) -> Summary:
        reported: list[Reported] = []
        seen: set[tuple[str, int]] = set()
        bar = progress_bar("curating", len(inputs), self.progress)
        try:
            for start in range(0, len(inputs), self.batch_size):
                chunk = inputs[start:start + self.batch_size]
                batch = []
                for source in chunk:
                    picture, error, label = self._picture(source)
                    if picture is None:
                        if error:  # a file that cannot even be read: reported, logged, not catalogued
                            reported.append(Reported(None, label, False, error))
                            self.summary.from_folders += 1
                            self.failed(label, error)
                        continue
                    reported.append(Reported(picture.key, picture.label, picture.from_catalogue))
                    if picture.key in seen:  # the same picture again (a copy in another folder)
                        self.summary.duplicates += 1
                        continue
                    seen.add(picture.key)
                    if picture.from_catalogue:
                        self.summary.from_catalogue += 1
                        self.summary.animations += not picture.still
                    else:
                        self.summary.from_folders += 1
                    batch.append(picture)
                self._curate(batch)
                bar.update(len(chunk))
        finally:
            bar.close()
        if self.identity is not None:  # over the whole run, before any picture is decided
            self.summary.identity = self.identity.finish(self, self._undecided)
        if self._undecided and self.rules:
            decisions = {} if self.duplicate_distance is None else self._duplicate_decisions(self._undecided)
            self._write_decisions(self._undecided, decisions)
        self.summary.pictures = len(reported) - self.summary.duplicates
        if report:
            self.write_report(report, reported)
        return self.summary

    def _picture(self, source: CatalogueInput | FileInput) -> tuple[Picture | None, str | None, str]:
        """The input as a Picture, or (None, why, its name) when there is no picture to curate."""
        if isinstance(source, FileInput):
            return self._file_picture(source.path)
        stored = self.catalog.picture(source.artwork_id, source.page)
        if stored is None or stored.path is None:  # gone since the listing (a crawl running beside)
            return None, None, f"{source.artwork_id} page {source.page}"
        return self._stored_picture(stored, stored.path), None, stored.path

    def _stored_picture(self, stored: StoredPicture, label: str) -> Picture:
        """A catalogued picture. A crawled file found in the other of images/ and dropped/ was moved
        by a run killed before it committed the move: it goes back to where the catalogue says."""
        assert stored.path is not None
        picture = Picture(stored.artwork_id, stored.page, self._file_of(stored.path), stored.path, stored.status,
                          stored.reason, label, from_catalogue=True)
        if not picture.file.is_file() and not picture.local:
            name = Path(stored.path).name
            for folder in (IMAGES_DIR, DROPPED_DIR):
                moved = self.root / folder / name
                if moved.is_file() and moved != picture.file:
                    picture.file.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(moved, picture.file)
                    logger.info("Curate: %s moved back to %s (a killed run had moved it)", moved, stored.path)
                    break
        if stored.status == "failed":
            picture.error = stored.reason
        elif not picture.file.is_file():
            picture.error = f"the file {printable(picture.file)} is missing"
        return picture

    def _file_of(self, stored_path: str) -> Path:
        file = Path(stored_path) if Path(stored_path).is_absolute() else self.root / stored_path
        if "\\x" in stored_path and not os.path.lexists(file):  # a name printable() had to write
            return from_printable(str(file))
        return file

    def _stored_path(self, file: Path) -> str:
        """Relative to OUTPUT_DIR inside it, else absolute (see the images table); printable."""
        try:
            return printable(file.relative_to(self.root).as_posix())
        except ValueError:
            return printable(file)

    def _file_picture(self, file: Path) -> tuple[Picture | None, str | None, str]:
        label = printable(file)
        path = self._stored_path(file)
        if not Path(path).is_absolute():  # inside OUTPUT_DIR: maybe a crawled picture, by its path
            stored = self.catalog.picture_at(path)
            if stored is not None:
                return self._stored_picture(stored, path), None, path
        try:
            data = file.read_bytes()
        except OSError as exc:  # no content, no content address: reported and logged, not catalogued
            if file.is_symlink():
                return None, f"a broken symbolic link to {printable(os.readlink(file))}: {exc.strerror}", label
            return None, printable(f"cannot read the file: {exc}"), label
        sha256 = hashlib.sha256(data).hexdigest()
        artwork_id = f"{LOCAL_PREFIX}{sha256[:20]}"
        stored = self.catalog.picture(artwork_id, 0)
        if stored is not None:
            picture = Picture(artwork_id, 0, file, path, stored.status, stored.reason, label)
            picture.path_changed = stored.path != path
            if stored.status == "failed":
                picture.error = stored.reason
            return picture, None, label
        row: dict[str, Any] = {"path": path, "sha256": sha256, "status": "kept", "reason": None}
        try:
            image = open_checked(data, self.max_pixels)
            row.update(width=image.width, height=image.height, format=(image.format or "unknown").lower())
        except BadImage as exc:
            row.update(status="failed", reason=str(exc))
        except (OSError, SyntaxError, ValueError) as exc:  # what Pillow's decoders raise past open_checked
            row.update(status="failed", reason=f"not a readable picture: {exc}")
        picture = Picture(artwork_id, 0, file, path, row["status"], row["reason"], label, error=row["reason"],
                          new_row={"title": printable(file.name), **row})
        return picture, None, label

    def failed(self, label: str, reason: str, stage: str | None = None) -> None:
        if stage:
            self.summary.failed[stage] += 1
        if label not in self.summary.failures:
            self.summary.failures[label] = reason
            logger.warning("Curate (failed): %s: %s", label, reason)

    def _curate(self, batch: list[Picture]) -> None:
        """One batch: run the stages (no transaction open meanwhile), then write it all in one."""
        outcomes: list[tuple[Any, list[tuple[Picture, Any]]]] = []
        for stage in self.stages:
            todo = []
            for picture in batch:
                if not picture.still:
                    continue
                if picture.error is not None:
                    self.failed(picture.label, picture.error, stage.name)
                elif not self.force and picture.new_row is None and self.catalog.stage_done(
                    picture.artwork_id, picture.page, stage.name, stage.version
                ):
                    self.summary.skipped[stage.name] += 1
                else:
                    todo.append(picture)
            results: list[Any] = []
            if todo:
                try:
                    stage.load()
                except Exception as exc:  # every batch would fail alike: end the run
                    raise ModelLoadError(f"the {stage.name} model cannot be loaded: {type(exc).__name__}: {exc}") from exc
                try:
                    results = stage.run(todo)
                except Exception as exc:  # noqa: BLE001 - a model that fails costs this batch, not the run
                    logger.exception("Curate: the %s stage failed on a batch", stage.name)
                    results = [f"the {stage.name} stage failed: {type(exc).__name__}: {exc}"] * len(todo)
            outcomes.append((stage, list(zip(todo, results, strict=True))))

        measured = self._measure(batch)
        now = utc_now()
        deletions: list[Path] = []
        with self.catalog.batch() as catalog:
            for picture in batch:
                if picture.new_row is not None:
                    row = dict(picture.new_row)
                    catalog.add_local_picture(picture.artwork_id, row.pop("title"), row, now)
                    self.summary.new_pictures += 1
                elif picture.path_changed:
                    catalog.set_picture_path(picture.artwork_id, picture.page, picture.path)
            for stage in self.stages:  # the reason a picture could not be read, as each stage's outcome
                for picture in batch:
                    if picture.error is not None:
                        catalog.record_stage_run(picture.artwork_id, picture.page, stage.name, stage.version,
                                                 picture.error, now)
            for stage, results in outcomes:
                for picture, result in results:
                    if isinstance(result, str):
                        result = printable(result)  # a reason may quote the file's name
                        self.failed(picture.label, f"{stage.name}: {result}", stage.name)
                        catalog.record_stage_run(picture.artwork_id, picture.page, stage.name, stage.version,
                                                 result, now)
                        continue
                    stage.write(catalog, picture, result)
                    catalog.record_stage_run(picture.artwork_id, picture.page, stage.name, stage.version, None, now)
                    self.summary.processed[stage.name] += 1
            for picture, stats in measured:
                catalog.set_picture_stats(picture.artwork_id, picture.page, stats)
                self.summary.measured += 1
            if self.duplicate_distance is not None or self.identity is not None:
                self._undecided.extend(batch)
            elif self.rules:
                for picture in batch:
                    deletion = self._decide(catalog, picture)
                    if deletion is not None:
                        deletions.append(deletion)
        for file in deletions:  # once the committed catalogue no longer points at it
            file.unlink(missing_ok=True)

    def _measure(self, batch: list[Picture]) -> list[tuple[Picture, dict[str, Any]]]:
        """The pixel statistics of the batch's readable pictures that have none stored yet."""
        measured = []
        for picture in batch:
            if not picture.still or picture.error is not None or (
                picture.new_row is None and self.catalog.picture_stats(picture.artwork_id, picture.page) is not None
            ):
                continue
            try:
                stats = picture_stats_bytes(picture.file.read_bytes())
            except (OSError, SyntaxError, ValueError) as exc:  # what reading and Pillow's decoders raise
                self.failed(picture.label, printable(f"pixel statistics: not a readable picture: {exc}"))
                continue
            measured.append((picture, stats.as_record()))
        return measured

    def _duplicate_decisions(self, pictures: list[Picture]) -> dict[tuple[str, int], tuple[str, str]]:
        """Decide every picture, with the duplicate rule matching the lesser copies among those the
        other rules keep (see the module's docstring)."""
        decisions: dict[tuple[str, int], tuple[str, str]] = {}
        for picture in pictures:
            if picture.error is None and picture.status in ("kept", "dropped"):
                state = self.catalog.curation_state(picture.artwork_id, picture.page)
                decisions[picture.key] = decide(state["record"], state["artwork"], self.rules, self.default, self.tags)
        facts = self.catalog.duplicate_facts()
        # the kept pictures that have a perceptual hash (one that cannot be read has none)
        pool = [key for key, (action, _) in decisions.items() if action == "keep" and key in facts and facts[key][1]]

        def rank(key: tuple[str, int]) -> tuple[Any, ...]:
            artwork_id, page = key
            _sha, _phash, pixels, bookmarks = facts[key]
            by_id = (0, int(artwork_id), "") if artwork_id.isdigit() else (1, 0, artwork_id)
            return -pixels, -(bookmarks or 0), by_id, page

        names = {key: f"{key[0]} p{key[1]}" for key in pool}
        by_name = {name: key for key, name in names.items()}
        candidates = (
            Candidate(names[key], facts[key][0] or f"no sha256: {names[key]}", int(facts[key][1] or "0", 16))
            for key in sorted(pool, key=rank)  # (the pool holds only pictures with a phash)
        )
        assert self.duplicate_distance is not None  # there is a duplicate rule
        _kept, duplicates = find_duplicates(candidates, self.duplicate_distance)
        for duplicate in duplicates:
            key = by_name[duplicate.key]
            state = self.catalog.curation_state(*key)
            state["record"]["duplicate_of"] = {"of": duplicate.duplicate_of, "kind": duplicate.kind,
                                               "distance": duplicate.distance}
            decisions[key] = decide(state["record"], state["artwork"], self.rules, self.default, self.tags)
        self.summary.duplicates_found = len(duplicates)
        return decisions

    def _write_decisions(self, pictures: list[Picture], decisions: dict[tuple[str, int], tuple[str, str]]) -> None:
        """Decide the deferred pictures (taking those already ``decisions``), batch by batch; a file
        to delete goes once its batch is committed."""
        for start in range(0, len(pictures), self.batch_size):
            with self.catalog.batch() as catalog:
                deletions = [self._decide(catalog, p, decisions.get(p.key)) for p in pictures[start:start + self.batch_size]]
            for file in filter(None, deletions):
                file.unlink(missing_ok=True)

    def _decide(self, catalog: Catalog, picture: Picture, decision: tuple[str, str] | None = None) -> Path | None:
        """Decide one picture again from what is stored (or take ``decision``), and put a crawled
        file where its status says (images/ or dropped/); a file to delete (CURATE_DELETE_DROPPED)
        is handed back, to go after the commit. A picture from a folder only changes in the catalogue."""
        if picture.error is not None or picture.status not in ("kept", "dropped"):
            return None
        if decision is None:
            state = catalog.curation_state(picture.artwork_id, picture.page)
            decision = decide(state["record"], state["artwork"], self.rules, self.default, self.tags)
        action, reason = decision
        status = "kept" if action == "keep" else "dropped"
        self.summary.decided += 1
        path: str | None = picture.path
        if not picture.local:
            if status == "dropped" and self.delete_dropped:
                path = None
            else:
                path = status_path(picture.path, status)
        if (status, reason, path) == (picture.status, picture.reason, picture.path):
            return None
        deletion = None
        if path is None:
            deletion = picture.file
        elif path != picture.path:
            try:
                move_to_status(self.root, picture.path, status)
            except OSError as exc:
                self.failed(picture.label, printable(f"cannot move it to {path}: {exc}"))
                return None
        elif picture.local and status == "dropped" != picture.status and not self._said_library_stays:
            logger.info("Curate: pictures from folders are never moved or deleted; a drop is recorded in the "
                        "catalogue only")
            self._said_library_stays = True
        catalog.set_decision(picture.artwork_id, picture.page, status, reason, path)
        if status != picture.status:
            self.summary.now_dropped += status == "dropped"
            self.summary.now_kept += status == "kept"
        elif reason != picture.reason:
            self.summary.reasons_updated += 1
        picture.status, picture.reason, picture.path = status, reason, path or picture.path
        return deletion

    # --- the report -------------------------------------------------------------------------------
    def report_line(self, entry: Reported) -> dict[str, Any]:
        """What the catalogue now says about one input picture."""
        if entry.key is None:
            return {"path": entry.label, "faces": None, "classifier": None, "tags": {}, "decision": "failed",
                    "reason": entry.error}
        state = self.catalog.curation_state(*entry.key)
        picture, record = state["picture"], state["record"]
        line = {
            # a catalogued picture where it is now (the decision may have moved it); a file as given
            "path": picture.path if entry.from_catalogue and picture.path is not None else entry.label,
            "faces": None if record["faces"] is None else [[f["x"], f["y"], f["w"], f["h"]] for f in record["faces"]],
            "classifier": record["classifier"],
            "tags": {t["tag"]: t["score"] for t in record["model_tags"]},
            "decision": picture.status,
            "reason": picture.reason,
        }
        if record.get("identity"):  # the identity stage's match, once it has looked at the picture
            identity = record["identity"]
            line["identity"] = {"matched": identity["matched"], "distance": identity["distance"],
                                "reason": identity["reason"]}
        return line

    def write_report(self, path: str, reported: Sequence[Reported]) -> None:
        lines = [json.dumps(self.report_line(entry), ensure_ascii=False) + "\n" for entry in reported]
        atomic_write(path, "".join(lines).encode("utf-8"))
