"""Benchmark: the two anime face detectors alone and combined, on the shared Genshin fixtures.

For each detector and each combination method (``views``: the union of many views with a second
witness; ``verified``: cascade proposals confirmed by animeface on crops, the default): recall on
head icons (``faces/``) and full-body cards (``cards/``) as the share of pictures with at least one
box, the same share counting only boxes on a hand-checked face (``located``: IoU >= 0.3 with the
box in ``HEADS``), the boxes elsewhere on those pictures (``wrong``), the false-positive rate on
``negatives/`` (share of pictures with any box), and pictures per second on one core. Then the
throughput of both methods in two worker processes (the crawl's IMAGE_WORKERS on a 2-core machine)
on the cards at their real size and on every picture scaled to 512 px (a crawl-sized picture).
Then ablations of the ``views`` combination, computed from the same per-view boxes (their time is
the sum of the views they use, so it is marked ``~``).

Protocol: nothing is trained. The ``verified`` method's constants (models/faces.py: views,
VERIFY_ATTEMPTS, VERIFY_SCORE, HINT_SCORE, MAX_PROPOSALS) were chosen by looking at these same 90
pictures, so its numbers here are a fit, not a held-out estimate.

    .venv/bin/python bench/faces.py [--fixtures DIR] [--no-ablations] [--no-throughput]
        [--learned-cv STEPS [--seed N[,N...]] [--verifier-steps N]] [--yolo MODEL.onnx]

``--learned-cv 1500 --seed 0,1,2,3,4`` gives the pooled held-out figures of docs/curation.md (~3 h).

The fixtures are test data outside the repository (``../shared/fixtures/anime``, see its
SOURCE.txt); nothing of them is copied here. ``HEADS`` are our own labels: the box of the face
on each positive picture, checked by eye (x, y, w, h in picture pixels, animeface-like extent).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from models.faces import (  # noqa: E402
    ALL_VIEWS,
    CASCADE_SHA256,
    CASCADE_URL,
    AnimefaceDetector,
    CascadeDetector,
    Face,
    collect_candidates,
    combine,
    detect_faces,
    find_cascade,
    flatten,
    iou,
    suppress_overlaps,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "anime"
LABELS = REPO / "datasets" / "anime-faces"  # our labelme rectangles over the fixtures' pictures


def read_heads(labels: Path = LABELS) -> dict[str, tuple[int, int, int, int]]:
    """``kind/stem`` -> the hand-checked face box (x, y, w, h) of each labelled fixture picture."""
    heads = {}
    for path in sorted(labels.glob("*/*.json")):
        shapes = [s for s in json.loads(path.read_text(encoding="utf-8"))["shapes"] if s["shape_type"] == "rectangle"]
        (x0, y0), (x1, y1) = shapes[0]["points"]
        heads[f"{path.parent.name}/{path.stem}"] = (round(min(x0, x1)), round(min(y0, y1)), round(abs(x1 - x0)),
                                                   round(abs(y1 - y0)))
    return heads


HEADS = read_heads()
SETS = ("faces", "cards", "negatives")
MORE_SETS = ("views", "negatives-more")  # --more-data: 96 more labelled pictures of the same characters, 400 negatives
ALL_SETS = SETS + MORE_SETS


@dataclass
class Row:
    name: str
    seconds: float = 0.0
    estimated: bool = False
    runs: int = 1  # pooled held-out runs (learned rows with several seeds): each picture counted once a run
    found: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_SETS, 0))
    located: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_SETS, 0))
    wrong: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_SETS, 0))
    off_head: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALL_SETS, 0))  # pictures with a box elsewhere

    def add(self, key: str, kind: str, faces: list[Face]) -> None:
        head = HEADS.get(key)
        hits = [f for f in faces if head and iou(f, Face(*head, 0.0)) >= 0.3]
        self.found[kind] += bool(faces)
        self.located[kind] += bool(hits)
        self.wrong[kind] += len(faces) - len(hits)
        self.off_head[kind] += len(faces) > len(hits)


def load(folder: Path, kinds: Sequence[str] = SETS) -> list[tuple[str, str, Image.Image]]:
    pictures = []
    for kind in kinds:
        for path in sorted(p for p in (folder / kind).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")):
            with Image.open(path) as image:
                image.load()
            pictures.append((f"{kind}/{path.stem}", kind, image))
    return pictures


def scaled(faces: list[Face], side: float) -> list[Face]:
    """A single detector's boxes brought to animeface-like extent, for the ``located`` test only."""
    return [Face(round(f.x + f.w * (1 - side) / 2), round(f.y + f.h * (1 - side) / 2), round(f.w * side),
                 round(f.h * side), f.score, f.sources) for f in faces]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--no-throughput", action="store_true", help="skip the two-process pictures/s")
    parser.add_argument("--learned-cv", type=int, default=0, metavar="STEPS",
                        help="also train the learned detector (models/face_heatmap.py) for STEPS steps in a 3-fold "
                             "cross-validation by character, and score it on the held-out folds (~7 min a fold "
                             "at 1500 steps on 2 cores)")
    parser.add_argument("--seed", type=seed_list, default=(0,), metavar="N[,N...]",
                        help="the learned detector's training seed (default 0); several, comma-separated, run the "
                             "cross-validation once per seed and print the rows pooled over the runs")
    parser.add_argument("--threads", type=int, default=2, metavar="N",
                        help="torch threads for the learned detector's training (default 2; give 1 to each of two "
                             "runs sharing 2 cores: two runs of 2 threads each take three times as long)")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="keep each trained fold's net in DIR and use it again on a later run with the same "
                             "pictures, labels and recipe (e.g. output/bench-cache/faces): a cross-validation "
                             "that takes hours can be run a fold at a time, across sessions")
    parser.add_argument("--verifier-steps", type=int, default=None, metavar="N",
                        help="the learned detector's crop verifier's training steps (default: TrainConfig's)")
    parser.add_argument("--more-data", action="store_true",
                        help="also score views/ (labelled in datasets/anime-faces/views) and negatives-more/")
    parser.add_argument("--train-more", action="store_true",
                        help="with --more-data: the learned detector's training folds include them too (the "
                             "'after the new data' runs; without it, the 'before' runs on the same pictures)")
    parser.add_argument("--yolo", type=Path, metavar="MODEL.onnx",
                        help="also score a pretrained YOLO face detector (models/face_yolo.py; e.g. imgutils' "
                             "face_detect), alone and added to verified, at a few thresholds")
    args = parser.parse_args()
    if not all((args.fixtures / kind).is_dir() for kind in SETS):
        print(f"no fixtures at {args.fixtures} (need faces/, cards/, negatives/); nothing to measure")
        return 2
    xml = find_cascade(None)
    if xml is None:
        print(f"no {CASCADE_URL.rsplit('/', 1)[1]} found: put it in models/weights/ ({CASCADE_URL}, sha256 {CASCADE_SHA256})")
        return 2
    cascade, animeface = CascadeDetector(xml), AnimefaceDetector()
    detectors = [cascade, animeface]
    warnings.filterwarnings("ignore", "Palette images with Transparency")  # one negative; flatten handles it
    kinds = ALL_SETS if args.more_data else SETS
    pictures = load(args.fixtures, kinds)
    counts = {kind: sum(1 for _, k, _ in pictures if k == kind) for kind in kinds}

    rows = [Row("cascade alone"), Row("animeface alone"), Row("animeface alone, no white compositing"),
            Row("combined: views (all views, witness rule)"),
            Row("combined: verified (cascade proposes, animeface checks)")]
    per_picture = []  # (key, kind, candidates, per-view seconds) for the ablations
    verified: dict[str, list[Face]] = {}
    for key, kind, image in pictures:
        picture = flatten(image)
        for row, run in ((rows[0], lambda: scaled(cascade.detect(picture), cascade.box_scale)),
                         (rows[1], lambda: animeface.detect(picture)),
                         (rows[2], lambda: animeface.detect(image))):  # the package's own RGBA->RGB
            started = time.perf_counter()
            faces = run()
            row.seconds += time.perf_counter() - started
            row.add(key, kind, faces)
        timings: dict[tuple[str, str], float] = {}
        started = time.perf_counter()
        candidates = collect_candidates(image, detectors, ALL_VIEWS, timings=timings)
        faces = combine(candidates)
        rows[3].seconds += time.perf_counter() - started
        rows[3].add(key, kind, faces)
        per_picture.append((key, kind, candidates, timings))
        started = time.perf_counter()
        faces = detect_faces(image, detectors, method="verified")
        rows[4].seconds += time.perf_counter() - started
        rows[4].add(key, kind, faces)
        verified[key] = faces

    if not args.no_ablations:
        cheap = tuple(v for v in ALL_VIEWS if v not in animeface.views)
        variants = {
            "plain union (both detectors, plain view, no witness rule)": ({"plain"}, {"require_witness": False}),
            "all views, no witness rule": (set(ALL_VIEWS), {"require_witness": False}),
            "plain view only, witness rule": ({"plain"}, {}),
            "without mirror": (set(ALL_VIEWS) - {"mirror"}, {}),
            "without equalized": (set(ALL_VIEWS) - {"equalized"}, {}),
            "without top (tall pictures)": (set(ALL_VIEWS) - {"top"}, {}),
            "without the cascade-only views (upscaled, padded, tilts)": (set(ALL_VIEWS) - set(cheap), {}),
            "without upscaled": (set(ALL_VIEWS) - {"upscaled"}, {}),
            "without padded": (set(ALL_VIEWS) - {"padded"}, {}),
            "without tilts": (set(ALL_VIEWS) - {"tilt_left", "tilt_right"}, {}),
            "without padded and tilts": (set(ALL_VIEWS) - {"padded", "tilt_left", "tilt_right"}, {}),
            "witness only (no strong single box)": (set(ALL_VIEWS), {"strong_score": 2.0}),
        }
        for name, (views, options) in variants.items():
            row = Row(name, estimated=True)
            for key, kind, candidates, timings in per_picture:
                started = time.perf_counter()
                faces = combine([c for c in candidates if c.view in views], **options)
                row.seconds += time.perf_counter() - started + sum(s for (_, v), s in timings.items() if v in views)
                row.add(key, kind, faces)
            rows.append(row)

    learned_file = None
    if args.learned_cv:
        learned_file = Path(tempfile.mkdtemp()) / "last-fold.pt"
        rows += learned_rows(pictures, verified, rows[4].seconds, args.learned_cv, seeds=args.seed, keep=learned_file,
                             verifier_steps=args.verifier_steps, train_kinds=kinds if args.train_more else SETS,
                             threads=args.threads, cache=args.cache)
    if args.yolo:
        rows += yolo_rows(pictures, verified, rows[4].seconds, args.yolo)

    n = len(pictures)
    print(f"{n} pictures: {counts['faces']} head icons, {counts['cards']} full-body cards, {counts['negatives']} negatives\n")
    header = (f"{'detector':<72} {'faces found/located':>20} {'cards found/located':>20} "
              f"{'wrong boxes':>11} {'FP negatives':>13} {'pictures/s':>10}")
    print(header)
    print("-" * len(header))
    for row in rows:
        f, c = row.found, row.located
        of = {kind: counts[kind] * row.runs for kind in SETS}
        print(
            f"{row.name:<72} {f['faces']:>3}/{of['faces']} {c['faces']:>3}/{of['faces']} ({c['faces'] / of['faces']:4.0%})"
            f" {f['cards']:>3}/{of['cards']} {c['cards']:>3}/{of['cards']} ({c['cards'] / of['cards']:4.0%})"
            f" {row.wrong['faces'] + row.wrong['cards']:>11}"
            f" {f['negatives']:>3}/{of['negatives']} ({f['negatives'] / of['negatives']:4.0%})"
            f" {'~' if row.estimated else ' '}{n * row.runs / row.seconds:>9.2f}"
        )
        if row.name.startswith("combined: verified"):
            print("-" * len(header))  # ablations of the views method below
    if args.more_data:
        print_more_data(rows, counts)
    if not args.no_throughput:
        print_throughput(xml, pictures, heatmap=learned_file)
    return 0


def print_more_data(rows: list[Row], counts: dict[str, int]) -> None:
    """The table that counts a face only on the head: pictures with a box on the labelled face
    (``located``), pictures with a box anywhere else (``off head``: a chest ornament, a prop), and
    face-free pictures with any box, per set."""
    print(f"\non the head only (views: {counts['views']} portraits, splash art, side icons, cards; "
          f"{counts['negatives'] + counts['negatives-more']} negatives)")
    header = (f"{'detector':<72} {'icons on head':>14} {'cards on head':>14} {'cards off head':>15} "
              f"{'views on head':>14} {'views off head':>15} {'FP all negatives':>17}")
    print(header)
    print("-" * len(header))
    for row in rows:
        of = {kind: counts[kind] * row.runs for kind in counts}
        negatives = row.found["negatives"] + row.found["negatives-more"]
        print(f"{row.name:<72} {row.located['faces']:>5}/{of['faces']} ({row.located['faces'] / of['faces']:4.0%})"
              f" {row.located['cards']:>5}/{of['cards']} ({row.located['cards'] / of['cards']:4.0%})"
              f" {row.off_head['cards']:>6}/{of['cards']} ({row.off_head['cards'] / of['cards']:4.0%})"
              f" {row.located['views']:>5}/{of['views']} ({row.located['views'] / of['views']:4.0%})"
              f" {row.off_head['views']:>6}/{of['views']} ({row.off_head['views'] / of['views']:4.0%})"
              f" {negatives:>7}/{of['negatives'] + of['negatives-more']}"
              f" ({negatives / (of['negatives'] + of['negatives-more']):5.1%})")


LEARNED_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
VERIFIER_THRESHOLDS = (0.5, 0.6, 0.7)
YOLO_THRESHOLDS = (0.25, 0.4, 0.5)


def yolo_rows(pictures: list[tuple[str, str, Image.Image]], verified: dict[str, list[Face]],
              verified_seconds: float, model: Path) -> list[Row]:
    """A user's pretrained YOLO face detector: nothing here trained it, so every row is held out
    (unless its training set held these official pictures). Alone, and added to ``verified``."""
    from models.face_yolo import YoloFaceDetector

    detector = YoloFaceDetector(model, threshold=min(YOLO_THRESHOLDS))
    alone = {t: Row(f"yolo alone, threshold {t}") for t in YOLO_THRESHOLDS}
    union = {t: Row(f"verified + yolo, threshold {t}") for t in YOLO_THRESHOLDS}
    for key, kind, image in pictures:
        score_at_thresholds(detector, key, kind, image, verified[key], alone, union)
    for t in YOLO_THRESHOLDS:
        union[t].seconds = alone[t].seconds + verified_seconds
    return [*alone.values(), *union.values()]


def score_at_thresholds(detector, key: str, kind: str, image: Image.Image, verified: list[Face],  # noqa: ANN001
                        alone: dict[float, Row], union: dict[float, Row]) -> None:
    """Run a whole-picture detector once and score its boxes at each threshold of ``alone``, alone
    and added to the ``verified`` boxes (``union``); the run's time goes to the ``alone`` rows."""
    started = time.perf_counter()
    found = detector.detect(image)
    seconds = time.perf_counter() - started
    for t in alone:
        mine = [f for f in found if f.score >= t]
        alone[t].seconds += seconds
        alone[t].add(key, kind, mine)
        union[t].add(key, kind, suppress_overlaps([*verified, *mine]))


def seed_list(text: str) -> tuple[int, ...]:
    """``--seed``: "3" or "0,1,2"."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a seed or comma-separated seeds: {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed given twice: {text!r}")
    return seeds


def learned_rows(pictures: list[tuple[str, str, Image.Image]], verified: dict[str, list[Face]],
                 verified_seconds: float, steps: int, folds: int = 3, seeds: Sequence[int] = (0,),
                 keep: Path | None = None, verifier_steps: int | None = None,
                 train_kinds: Sequence[str] = SETS, threads: int = 2, cache: Path | None = None) -> list[Row]:
    """The learned detector, each picture scored by a net that never saw its character (nor, for a
    negative, that picture): characters and negatives are dealt into ``folds`` folds in name order,
    a net is trained on the ``HEADS`` boxes of the other folds and run on this one. Alone, and added
    to the ``verified`` method's boxes (what FACES_DETECTORS = "cascade,animeface,heatmap" does);
    without the net's crop verifier, then with it (models/face_verifier.py) at ``VERIFIER_THRESHOLDS``:
    the verifier judges the net's candidates from ``ASK_FROM`` and vetoes the pair's boxes it is sure
    are no face, as the face stage does; last, the rule before the veto (asked from 0.3, no veto).
    With several ``seeds`` the whole cross-validation runs once per seed into the same rows: one run
    is 90 pictures, where one picture moves a rate by 2.5-4 points, so pooled rates are the ones to read.
    With ``cache`` each trained fold is kept there under a name made of its training data (pictures and
    boxes), recipe and seed, and used again instead of training (``cached_fold``)."""
    import cv2

    from models import face_heatmap

    cv2.setNumThreads(1)  # OpenCV's idle pool otherwise slows torch's training threads
    character = {key: key.split("/", 1)[1].split("__")[0] if not kind.startswith("negatives") else key
                 for key, kind, _ in pictures}  # views/albedo__card is albedo's
    names = sorted(set(character.values()))
    fold_of = {name: i % folds for i, name in enumerate(names)}
    runs = len(seeds)
    cv = f"{folds}-fold CV" + (f" x {runs} seeds" if runs > 1 else "")
    alone = {t: Row(f"learned alone, threshold {t} ({cv} by character)", runs=runs) for t in LEARNED_THRESHOLDS}
    union = {t: Row(f"verified + learned, threshold {t} ({cv})", runs=runs) for t in LEARNED_THRESHOLDS}
    checked = {t: Row(f"verified + learned + its verifier, threshold {t} ({cv})", estimated=True, runs=runs)
               for t in VERIFIER_THRESHOLDS}
    earlier = Row(f"the same at 0.6, earlier rule: asked from 0.3, no veto ({cv})", estimated=True, runs=runs)
    for seed, fold in itertools.product(seeds, range(folds)):
        training = face_heatmap.labelled_from_boxes(
            (image, (HEADS[key],) if key in HEADS else (), key)
            for key, kind, image in pictures if fold_of[character[key]] != fold and kind in train_kinds)
        config = face_heatmap.TrainConfig(steps=steps, seed=seed, threads=threads)
        if verifier_steps is not None:
            config.verifier_steps = verifier_steps
        stored = cached_fold(cache, training, config) if cache else None
        if stored is not None and stored.is_file():
            net = face_heatmap.load(stored)
            print(f"seed {seed}, fold {fold + 1}/{folds}: trained earlier ({stored})", file=sys.stderr)
        else:
            net, result = face_heatmap.train(training, config, device="cpu")
            print(f"seed {seed}, fold {fold + 1}/{folds}: trained on {result.pictures} pictures in {result.seconds:.0f} s, "
                  f"its verifier in {result.verifier_seconds:.0f} s", file=sys.stderr, flush=True)
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                partial = stored.with_name(stored.name + ".part")
                face_heatmap.save(net, partial, result)
                os.replace(partial, stored)  # a run killed while saving leaves no half file under the name
        detector = face_heatmap.HeatmapDetector(net, threshold=min(LEARNED_THRESHOLDS), use_verifier=False)
        held_out = [(key, kind, image) for key, kind, image in pictures if fold_of[character[key]] == fold]
        for key, kind, image in held_out:
            score_at_thresholds(detector, key, kind, image, verified[key], alone, union)
        rules = [(row, face_heatmap.HeatmapDetector(net, threshold=t), True) for t, row in checked.items()]
        rules.append((earlier, face_heatmap.HeatmapDetector(net, threshold=0.6, ask_from=0.3), False))
        for row, detector, veto in rules:  # the verifier's rule depends on the threshold: one run each
            for key, kind, image in held_out:
                started = time.perf_counter()
                found = detector.detect(image)
                pair = detector.vetoed(image, verified[key]) if veto else verified[key]  # as detect_faces does
                row.seconds += time.perf_counter() - started
                row.add(key, kind, suppress_overlaps([*pair, *found]))
    if keep:  # the last fold's net (and its verifier), for print_throughput
        face_heatmap.save(net, keep)
    for t in LEARNED_THRESHOLDS:  # the two run one after the other
        union[t].seconds, union[t].estimated = alone[t].seconds + verified_seconds * runs, True
    for row in (*checked.values(), earlier):
        row.seconds += verified_seconds * runs
    return [row for t in LEARNED_THRESHOLDS for row in (alone[t], union[t])] + [*checked.values(), earlier]


def cached_fold(cache: Path, training: Sequence, config) -> Path:  # noqa: ANN001
    """Where a fold trained on ``training`` with ``config`` is kept: named by a hash of every
    picture's pixels and boxes and of the recipe, so changed data or steps never reuse a net."""
    recipe = {k: v for k, v in vars(config).items() if k != "threads"}  # threads do not change the recipe
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode())
    for picture in training:
        digest.update(picture.image.tobytes())
        digest.update(json.dumps([list(box) for box in picture.boxes]).encode())
    return cache / f"fold-{digest.hexdigest()[:20]}.pt"


_worker_detectors: list = []


def _start_worker(xml: str, heatmap: str | None = None) -> None:
    import cv2

    cv2.setNumThreads(1)  # one core per worker, as in the crawl's process pool
    _worker_detectors[:] = [CascadeDetector(xml), AnimefaceDetector()]
    if heatmap:
        from models.face_heatmap import HeatmapDetector

        _worker_detectors.append(HeatmapDetector(heatmap, threads=1))


def _detect(job: tuple[str, Image.Image]) -> int:
    method, image = job
    return len(detect_faces(image, _worker_detectors, method=method))


def print_throughput(xml: Path, pictures: list[tuple[str, str, Image.Image]], workers: int = 2,
                     heatmap: Path | None = None) -> None:
    """Pictures per second of each method in ``workers`` processes, like the crawl's worker pool; with
    ``heatmap`` (a learned detector's weights file), ``verified`` with it added too."""
    cards = [image for _, kind, image in pictures if kind == "cards"]
    crawl_sized = []
    for _, _, image in pictures:
        scale = 512 / max(image.size)
        crawl_sized.append(image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                        Image.Resampling.LANCZOS))
    sets = {f"{len(cards)} cards at their real size (320x1024)": cards,
            f"all {len(crawl_sized)} pictures scaled to 512 px": crawl_sized}
    print(f"\nthroughput, {workers} worker processes (one core each):")
    runs = [("", str(xml), None, ("views", "verified"))]
    if heatmap:
        runs.append((" + learned", str(xml), str(heatmap), ("verified",)))
    for added, *initargs, methods in runs:
        with multiprocessing.get_context("spawn").Pool(workers, _start_worker, tuple(initargs)) as pool:
            pool.map(_detect, [("verified", cards[0])] * workers)  # start-up (self-test, loading) not counted
            for label, images in sets.items():
                for method in methods:
                    started = time.perf_counter()
                    pool.map(_detect, [(method, image) for image in images], chunksize=1)
                    elapsed = time.perf_counter() - started
                    print(f"  {label:<45} method {method + added:<20} {len(images) / elapsed:7.2f} pictures/s")


if __name__ == "__main__":
    raise SystemExit(main())
