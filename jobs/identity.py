"""Stage: is this the wanted character? ``scrapy curate --stages identity [--reference DIR]``.

Curate-time only: matching needs the whole set at once (the references' centroid is per picture,
but the clusters, and without references the dominant character, are properties of the set), so
it cannot decide a picture as the crawl stores it. The curator (jobs/curate.py) runs the
other stages batch by batch, then calls ``IdentityStage.finish`` with every readable picture of
the run, and only then decides them, so an ``identity`` rule (stages/decide.py) reads this run's
matches:

1. Each picture's head region (models/identity.py: its first stored face grown to the hair, else
   the upper part of a tall picture, else the whole) is embedded, unless the catalogue already
   holds an embedding of the same region by the same embedder version (``--force`` redoes it).
   Run the face stage first (``--stages faces,identity``) so that there are faces to use.
2. The reference pictures (a folder) go through the same face detectors and the same embedder.
3. ``models.identity.match`` decides every picture of the run; the ``identity`` table keeps the
   embedding, whether it matched, the distance, the cluster and its size, and the reason.

With ``IDENTITY_EMBEDDER=ccip`` (models/ccip.py) the whole picture is embedded, as upstream runs CCIP
on character pictures, and ``models.identity.match_pairwise`` decides with CCIP's own metric model,
its published threshold (``IDENTITY_CCIP_THRESHOLD`` overrides it) and DBSCAN over its differences.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from catalog.store import utc_now
from jobs.curate_run import CurateError, ModelLoadError, Picture, Run, picture_files, printable
from models.identity import (
    BUILTIN_VERSION,
    DEFAULT_THRESHOLD,
    NORMALIZATIONS,
    EmbedderError,
    embedder_version,
    from_blob,
    head_region,
    load_embedder,
    match,
    match_pairwise,
    to_blob,
)
from models.registry import resolve_setting
from stages.convert import BadImage, open_checked

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

MIN_REFERENCES = 3  # fewer still run, with a warning: one picture is a poor centroid


class IdentityStage:
    name = "identity"

    def __init__(self, settings: BaseSettings, reference: str | None = None):
        self.embedder_path = resolve_setting(settings, "IDENTITY_EMBEDDER") or None  # a catalogue name made a path
        self.normalization = settings.get("IDENTITY_EMBEDDER_NORMALIZATION") or "0-1"
        if self.normalization not in NORMALIZATIONS:
            raise CurateError(f"IDENTITY_EMBEDDER_NORMALIZATION={self.normalization!r}: known are "
                              f"{', '.join(NORMALIZATIONS)}")
        from models.ccip import is_ccip_folder
        from models.identity_metric import is_metric_folder

        self.pairwise = bool(self.embedder_path) and is_ccip_folder(self.embedder_path or "")
        if self.embedder_path and self.embedder_path != BUILTIN_VERSION and not (
                Path(self.embedder_path).is_file() or self.pairwise or is_metric_folder(self.embedder_path)):
            raise CurateError(f"IDENTITY_EMBEDDER={self.embedder_path!r}: no such file (an ONNX image encoder), "
                              "CCIP or lite0-metric folder, or catalogue name (ccip, lite0-metric-v1, colour-v1)")
        ccip_threshold = settings.get("IDENTITY_CCIP_THRESHOLD")
        self.ccip_threshold = float(ccip_threshold) if ccip_threshold not in (None, "") else None
        self.version = embedder_version(self.embedder_path, self.normalization)
        threshold = settings.get("IDENTITY_THRESHOLD")
        # empty: the embedder's own (colour-v1's DEFAULT_THRESHOLD, a lite0-metric card's), known once it loads
        self.explicit_threshold = float(threshold) if threshold not in (None, "") else None
        self.threshold = DEFAULT_THRESHOLD if self.explicit_threshold is None else self.explicit_threshold
        self.min_cluster_size = settings.getint("IDENTITY_MIN_CLUSTER_SIZE")
        if self.min_cluster_size < 2:
            raise CurateError(f"IDENTITY_MIN_CLUSTER_SIZE must be at least 2, not {self.min_cluster_size}")
        self.reference = reference
        self.reference_files: list[Path] = []
        if reference is not None:
            folder = Path(reference)
            if not folder.is_dir():
                raise CurateError(f"--reference {reference}: not a folder of pictures of the wanted character")
            self.reference_files = [p for p in picture_files(folder) if p.is_file()]
            if not self.reference_files:
                raise CurateError(f"--reference {reference}: no pictures (.jpg, .png, .webp) in it")
            if len(self.reference_files) < MIN_REFERENCES:
                logger.warning("Identity: only %d reference pictures in %s; %d or more make a steadier centroid",
                               len(self.reference_files), reference, MIN_REFERENCES)
        from stages.faces import read_settings

        read_settings(settings)  # a bad FACES_METHOD stops the run here, before any picture is read
        self.settings = settings
        self.face_search: Any = None  # stages.faces.FaceSearch, built on the first reference picture
        self.max_pixels = settings.getint("IMAGE_MAX_PIXELS")
        self.embedder: Any = None

    def load(self) -> None:
        if self.embedder is None:
            try:
                self.embedder = load_embedder(self.embedder_path, self.normalization, self.ccip_threshold)
            except EmbedderError as exc:
                raise ModelLoadError(f"the identity embedder cannot be loaded: {exc}") from None
            if self.explicit_threshold is None:
                self.threshold = float(getattr(self.embedder, "default_threshold", DEFAULT_THRESHOLD))
            logger.info("Identity: embedder %s", self.embedder.version)

    # --- the references ---------------------------------------------------------------------------
    def _reference_face(self, image: Any) -> dict[str, int] | None:
        """The best face the face stage's detectors find on a reference picture (None: none, or no
        detector can run here), so references are embedded by the same region as the pictures."""
        from models.faces import detect_faces
        from stages.faces import FaceSearch, cached_detectors

        try:
            if self.face_search is None:
                self.face_search = FaceSearch(self.settings)
            if not self.face_search.detectors:
                return None
            detectors = cached_detectors(self.face_search.settings)
            faces = detect_faces(image, detectors, method=self.face_search.settings["method"])
        except (ValueError, OSError, RuntimeError) as exc:
            logger.info("Identity: no face detection on the references (%s); their upper part is embedded", exc)
            return None
        return None if not faces else {"x": faces[0].x, "y": faces[0].y, "w": faces[0].w, "h": faces[0].h}

    def reference_embeddings(self) -> np.ndarray:
        regions, sources = [], []
        for file in self.reference_files:
            try:
                image = open_checked(file.read_bytes(), self.max_pixels)
                image.load()
            except (BadImage, OSError, SyntaxError, ValueError) as exc:
                logger.warning("Identity: the reference %s cannot be read, left out: %s", printable(file), exc)
                continue
            region, source = (image, "whole") if self.pairwise else head_region(image, self._reference_face(image))
            regions.append(region)
            sources.append(f"{file.name}: {source}")
        if not regions:
            raise ModelLoadError(f"none of the reference pictures in {self.reference} can be read")
        logger.info("Identity: %d references embedded (%s)", len(regions), "; ".join(sources))
        embedded: np.ndarray = self.embedder.embed(regions)
        return embedded

    # --- the run ----------------------------------------------------------------------------------
    def finish(self, curator: Run, pictures: Sequence[Picture]) -> str:
        """Embed what needs it, match every readable picture of the run, store it all; a summary line."""
        catalog, summary = curator.catalog, curator.summary
        readable = [p for p in pictures if p.error is None and p.status in ("kept", "dropped")]
        keys: list[tuple[str, int]] = []
        vectors: list[np.ndarray] = []
        todo: list[tuple[Picture, dict[str, Any] | None]] = []
        for picture in readable:
            faces = catalog.curation_state(picture.artwork_id, picture.page)["record"]["faces"]
            face = faces[0] if faces else None
            stored = catalog.identity_embedding(picture.artwork_id, picture.page)
            if self.pairwise:  # CCIP takes the whole picture
                face = None
            same_region = stored is not None and (
                stored[1] == f"face {face['x']},{face['y']},{face['w']},{face['h']}" if face
                else stored[1] in (("whole",) if self.pairwise else ("upper", "whole")))
            if stored is not None and not curator.force and stored[0] == self.version and same_region and \
                    catalog.stage_done(picture.artwork_id, picture.page, self.name, self.version):
                keys.append(picture.key)
                vectors.append(from_blob(stored[2]))
                summary.skipped[self.name] += 1
            else:
                todo.append((picture, face))
        if todo or readable:
            self.load()
        for start in range(0, len(todo), curator.batch_size):
            chunk = todo[start:start + curator.batch_size]
            regions, done, failed = [], [], []
            for picture, face in chunk:
                try:
                    image = open_checked(picture.file.read_bytes(), self.max_pixels)
                    image.load()
                except (BadImage, OSError, SyntaxError, ValueError) as exc:
                    failed.append((picture, printable(f"not a readable picture: {exc}")))
                    continue
                region, source = (image, "whole") if self.pairwise else head_region(image, face)
                regions.append(region)
                done.append((picture, source))
            try:
                embedded = self.embedder.embed(regions)
            except Exception as exc:  # noqa: BLE001 - a model that fails costs this batch, not the run
                logger.exception("Curate: the identity embedder failed on a batch")
                failed += [(picture, f"the identity embedder failed: {type(exc).__name__}: {exc}") for picture, _ in done]
                done, embedded = [], []
            now = utc_now()
            with catalog.batch():
                for (picture, source), vector in zip(done, embedded):
                    catalog.set_identity_embedding(picture.artwork_id, picture.page, self.version, source, to_blob(vector))
                    catalog.record_stage_run(picture.artwork_id, picture.page, self.name, self.version, None, now)
                    keys.append(picture.key)
                    vectors.append(vector)
                    summary.processed[self.name] += 1
                for picture, reason in failed:
                    catalog.record_stage_run(picture.artwork_id, picture.page, self.name, self.version, reason, now)
                    curator.failed(picture.label, f"identity: {reason}", self.name)
        for picture in pictures:  # unreadable: the reason each other stage records, recorded here too
            if picture.error is not None:
                curator.failed(picture.label, picture.error, self.name)
                with catalog.batch():
                    catalog.record_stage_run(picture.artwork_id, picture.page, self.name, self.version,
                                             picture.error, utc_now())
        if not vectors:
            return "identity: no picture to match"
        references = self.reference_embeddings() if self.reference_files else None
        if self.pairwise:
            points = np.stack(vectors) if references is None else np.concatenate([np.stack(vectors), references])
            matches = match_pairwise(self.embedder.differences(points), len(vectors), threshold=self.embedder.threshold,
                                     version=self.version)
        else:
            matches = match(np.stack(vectors), references, threshold=self.threshold,
                            min_cluster_size=self.min_cluster_size, version=self.version)
        now = utc_now()
        for start in range(0, len(keys), curator.batch_size):
            with catalog.batch():
                for key, result in zip(keys[start:start + curator.batch_size], matches[start:start + curator.batch_size]):
                    catalog.set_identity_match(*key, {
                        "matched": result.matched, "distance": None if np.isnan(result.distance) else result.distance,
                        "cluster": result.cluster, "cluster_size": result.cluster_size, "reason": result.reason,
                    }, now)
        kept = sum(m.matched for m in matches)
        threshold = self.embedder.threshold if self.pairwise else self.threshold
        how = (f"{len(references)} references from {printable(self.reference or '')}, threshold {threshold:g}"
               if references is not None else "no references: the dominant cluster")
        line = f"identity: {kept} of {len(matches)} pictures are the character ({how})"
        logger.info("Curate: %s", line)
        return line
