"""Benchmark: how many labels the review page's learning loop needs before it sorts the rest (issue 32).

A simulated person labels pictures in the order the tool offers them and answers from the truth; every
``--every`` labels the learner retrains, as ``scrapy review`` does after REVIEW_RETRAIN_EVERY labels,
and the bench measures precision and recall of "kept" (score at or over the threshold, 0.5: the
labelling rule) on every picture not labelled yet. It prints how many labels it took to reach
precision >= 0.95 and recall >= 0.95 together, and the figures after 20, 40 and 60 labels, for:

* orders: ``uncertain`` (the tool's own: ``jobs.review_queue.order_queue``, so the diverse sample
  before the first model, then the scores nearest the threshold) against ``random`` (the naive way:
  labelling whatever comes, averaged over ``--random-seeds`` shuffles);
* learners: ``linear`` (models/label_learner.py, the review server's: frozen EfficientNet-Lite0
  features computed once, standardised over every picture of the set as the server standardises over
  the catalogue, a logistic regression per retrain); ``linear+weak``, the same with weak positives:
  the target's pictures that carry her tag, as on the demo site (``mocksites.pixiv``: 40% of hers;
  drawn the same way for the anime set), trained on at weight 0.3 (``LABEL_WEAK_WEIGHT``) unless
  labelled by hand, and measured with the rest (they are not labelled by a person); with ``--naive``,
  two rows that show what the changes of issue 32's second round did: ``no-explore``, the same
  learner with the queue asking only nearest the threshold (no question in five from the diverse
  sample), and ``naive``, the learner as first built (features standardised over the labelled
  pictures alone, C 0.05) with that queue; and, with ``--cnn``, the small CNN from
  scratch (models/classifier.py, ``scrapy classifier train --from-catalog --learner cnn``), which
  trains on the labelled pictures' folders at each retrain (minutes each: it runs every
  ``--cnn-every`` labels only);
* data: ``demo``, the demo site's own generator (mocksites/images.py ``write_labelled``: its target
  character, a witch hat with a gold star, among decoys), 1 picture in 3 the target as in the demo
  crawl; and ``anime``, the shared Genshin fixtures (``../shared/fixtures/anime``, outside the
  repository): one character's icon, card and views, each with augmented copies (mirror, crops,
  brightness), against every other character's pictures and face-free negatives. Augmented copies of
  one picture can be labelled while their siblings are measured, which is easier than new art: read
  the anime rows as an upper bound.

Each data set is drawn ``--seeds`` times (default 7,8,9: the demo generator's seed; the anime set's
augmentation and negatives); the uncertain order's labels needed are given per seed, random's per
seed too (one shuffle each). Its "P/R at" columns are the first seed's.

    .venv/bin/python bench/labelling.py [--data demo,anime] [--seeds 7,8,9] [--every 10] [--naive] [--cnn]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

from jobs.review_queue import EXPLORE_EVERY, QueuedPicture, order_queue  # noqa: E402
from stages.dedup import phash_image  # noqa: E402

FIXTURES = REPO.parent / "shared" / "fixtures" / "anime"
THRESHOLD = 0.5
GOAL = 0.95
CHECKPOINTS = (20, 40, 60)


@dataclass
class Dataset:
    name: str
    images: list[Image.Image]
    wanted: np.ndarray  # bool per picture
    phashes: list[str]
    note: str
    tagged: np.ndarray  # bool per picture: carries the target's tag (a weak positive)


def with_hashes(name: str, images: list[Image.Image], wanted: Sequence[bool], note: str, seed: int) -> Dataset:
    """Shuffled once (the tool's newest-first order would otherwise follow how the set was built); the
    target's pictures tagged as the demo site tags them."""
    from mocksites.pixiv import TARGET_TAGGED_SHARE

    order = list(range(len(images)))
    rng = random.Random(seed)
    rng.shuffle(order)
    images = [images[i] for i in order]
    flags = np.array([wanted[i] for i in order], dtype=bool)
    tagged = np.array([bool(w) and rng.random() < TARGET_TAGGED_SHARE for w in flags], dtype=bool)
    return Dataset(name, images, flags, [f"{phash_image(image):016x}" for image in images],
                   f"{note}; {int(tagged.sum())} of the target's tagged", tagged)


def demo_data(total: int, seed: int) -> Dataset:
    from mocksites.images import TARGET_CHARACTER, write_labelled

    target = total // 3
    with tempfile.TemporaryDirectory() as folder:
        write_labelled(folder, total - target, image_size=256, seed=seed)
        images, wanted = [], []
        for path in sorted(Path(folder).rglob("*.*")):
            is_target = path.parent.name == TARGET_CHARACTER
            if is_target and sum(wanted) >= target:
                continue
            with Image.open(path) as image:
                images.append(ImageOps.exif_transpose(image).convert("RGB"))
            wanted.append(is_target)
    return with_hashes("demo", images, wanted, f"demo generator: {sum(wanted)} target of {len(wanted)}", seed)


def augmented(image: Image.Image, rng: random.Random) -> Image.Image:
    """A mirror, a crop of 80-95% at a random place, and brightness +-15%: what a re-post or a crop is."""
    out = ImageOps.mirror(image) if rng.random() < 0.5 else image
    width, height = out.size
    share = rng.uniform(0.8, 0.95)
    w, h = round(width * share), round(height * share)
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    out = out.crop((left, top, left + w, top + h))
    return ImageEnhance.Brightness(out).enhance(rng.uniform(0.85, 1.15))


def anime_data(fixtures: Path, character: str, copies: int, negatives: int, seed: int) -> Dataset:
    rng = random.Random(seed)

    def read(path: Path) -> Image.Image:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB")

    def character_of(path: Path) -> str:
        return path.stem.split("__")[0]

    images, wanted = [], []
    for kind in ("faces", "cards", "views"):
        for path in sorted((fixtures / kind).glob("*.*")):
            if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
                continue
            picture = read(path)
            mine = character_of(path) == character
            images.append(picture)
            wanted.append(mine)
            for _ in range(copies if mine else 0):
                images.append(augmented(picture, rng))
                wanted.append(True)
    free = sorted(p for kind in ("negatives", "negatives-more") for p in (fixtures / kind).glob("*.*")
                  if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    for path in rng.sample(free, min(negatives, len(free))):
        try:
            images.append(read(path))
        except (OSError, Image.DecompressionBombError):
            continue
        wanted.append(False)
    note = (f"{character}: {sum(wanted)} pictures ({copies} augmented copies of each of its own) against "
            f"{len(wanted) - sum(wanted)} of other characters and no character")
    return with_hashes("anime", images, wanted, note, seed)


# --- the simulated person -------------------------------------------------------------------------

Learner = Callable[[list[int], list[bool]], np.ndarray]  # labelled indexes and answers -> every picture's score


def simulate(data: Dataset, learn: Learner, order: str, every: int, max_labels: int, seed: int = 0,
             explore: bool = True, weak: int = 0) -> list[tuple[int, float, float]]:
    """(labels, precision, recall) on the unlabelled pictures after each retrain."""
    rng = random.Random(seed)
    shuffled = list(range(len(data.images)))
    rng.shuffle(shuffled)
    labelled: dict[int, bool] = {}
    scores: np.ndarray | None = None
    points = []
    while len(labelled) < min(max_labels, len(data.images) - 1):
        if order == "random":
            batch = [i for i in shuffled if i not in labelled][:every]
        else:
            rows = [QueuedPicture(str(i + 1), 0, "kept", None, None,
                                  None if i not in labelled else ("keep" if labelled[i] else "drop"),
                                  None if scores is None else float(scores[i]), None, None, f"sha{i}",
                                  data.phashes[i], None, None) for i in range(len(data.images))]
            ordered = order_queue(rows, "uncertain", THRESHOLD, explore_every=EXPLORE_EVERY if explore else 0)
            batch = [int(p.artwork_id) - 1 for p in ordered[:every]]
        for i in batch:
            labelled[i] = bool(data.wanted[i])
        answers = list(labelled.values())
        if sum(answers) + weak < 2 or len(answers) - sum(answers) < 2:
            continue  # the learner waits for two of each (weak positives count), as the review server does
        scores = learn(list(labelled), answers)
        rest = np.array([i for i in range(len(data.images)) if i not in labelled])
        kept = scores[rest] >= THRESHOLD
        truth = data.wanted[rest]
        precision = float((kept & truth).sum() / kept.sum()) if kept.any() else 0.0
        recall = float((kept & truth).sum() / truth.sum()) if truth.any() else 1.0
        points.append((len(labelled), precision, recall))
    return points


def linear_learner(features: np.ndarray, weak: np.ndarray | None = None, naive: bool = False) -> Learner:
    """The review server's learner; ``weak``: which pictures are weak positives; ``naive``: as first built."""
    from jobs.catalog_labels import WEAK_WEIGHT
    from models.label_learner import LinearClassifier

    def learn(indexes: list[int], answers: list[bool]) -> np.ndarray:
        if naive:
            return LinearClassifier.fit(features[indexes], answers, regularisation=0.05).scores(features)
        extra: list[int] = [] if weak is None else [int(i) for i in np.flatnonzero(weak) if i not in set(indexes)]
        model = LinearClassifier.fit(features[indexes], answers, pool=features, weak=(features[extra], WEAK_WEIGHT))
        return model.scores(features)

    return learn


def cnn_learner(data: Dataset, epochs: int) -> Learner:
    """The small CNN from scratch on the labelled pictures laid out as class folders, each retrain."""
    from models import classifier

    def learn(indexes: list[int], answers: list[bool]) -> np.ndarray:
        with tempfile.TemporaryDirectory() as folder:
            for i, answer in zip(indexes, answers):
                target = Path(folder) / "data" / ("wanted" if answer else "other")
                target.mkdir(parents=True, exist_ok=True)
                data.images[i].convert("RGB").save(target / f"{i}.png")
            result = classifier.train(Path(folder) / "data", Path(folder) / "out", epochs=epochs, progress=False)
            model = classifier.CharacterClassifier.load(result.model_path)
            return np.array([p.target_score for p in model.predict(data.images)])

    return learn


def reached(points: list[tuple[int, float, float]]) -> int | None:
    return next((n for n, p, r in points if p >= GOAL and r >= GOAL), None)


def at(points: list[tuple[int, float, float]], labels: int) -> str:
    before = [(p, r) for n, p, r in points if n <= labels]
    return f"{before[-1][0]:.2f}/{before[-1][1]:.2f}" if before else "  -  "


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="demo,anime", help="demo, anime or both (default)")
    parser.add_argument("--seeds", default="7,8,9", help="draws of each data set (default 7,8,9)")
    parser.add_argument("--every", type=int, default=10, help="labels between retrains (default 10)")
    parser.add_argument("--max-labels", type=int, default=200)
    parser.add_argument("--demo-size", type=int, default=300, help="demo pictures, a third the target (default 300)")
    parser.add_argument("--character", default="barbara", help="the anime fixtures' target (default barbara)")
    parser.add_argument("--copies", type=int, default=9, help="augmented copies of each target picture (default 9)")
    parser.add_argument("--negatives", type=int, default=150, help="face-free pictures from the fixtures (default 150)")
    parser.add_argument("--naive", action="store_true", help="also the queue without exploration, and the "
                        "learner and queue as first built")
    parser.add_argument("--cnn", action="store_true", help="also the small CNN from scratch (slow)")
    parser.add_argument("--cnn-every", type=int, default=40)
    parser.add_argument("--cnn-epochs", type=int, default=15)
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]

    from models.label_features import Lite0Features

    makers: dict[str, Callable[[int], Dataset]] = {}
    for name in args.data.split(","):
        if name == "demo":
            makers[name] = lambda seed: demo_data(args.demo_size, seed=seed)
        elif name == "anime":
            if not (args.fixtures / "views").is_dir():
                print(f"no anime fixtures at {args.fixtures}; skipping that data set")
                continue
            makers[name] = lambda seed: anime_data(args.fixtures, args.character, args.copies, args.negatives, seed=seed)
        else:
            parser.error(f"unknown data set {name!r}")
    embed = Lite0Features()
    header = (f"{'data':<6} {'learner':<12} {'order':<10} {'labels to P,R >= 0.95, per seed':>32} "
              + " ".join(f"{f'P/R at {n}':>11}" for n in CHECKPOINTS) + f" {'seconds':>8}")
    rows = []
    for name, make in makers.items():
        results: dict[tuple[str, str], list[list[tuple[int, float, float]]]] = {}
        seconds: dict[tuple[str, str], float] = {}
        for seed in seeds:
            data = make(seed)
            started = time.perf_counter()
            features = embed(data.images)
            print(f"{data.name} seed {seed}: {data.note}; features of {len(data.images)} pictures in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            weak = int(data.tagged.sum())
            runs: list[tuple[str, Learner, int, bool, int]] = [
                ("linear", linear_learner(features), args.every, True, 0),
                ("linear+weak", linear_learner(features, data.tagged), args.every, True, weak)]
            if args.naive:
                runs.append(("no-explore", linear_learner(features), args.every, False, 0))
                runs.append(("naive", linear_learner(features, naive=True), args.every, False, 0))
            if args.cnn:
                runs.append(("cnn", cnn_learner(data, args.cnn_epochs), args.cnn_every, True, 0))
            for learner_name, learn, every, explore, weak_count in runs:
                for order in ("uncertain", "random"):
                    started = time.perf_counter()
                    points = simulate(data, learn, order, every, args.max_labels, seed, explore, weak_count)
                    results.setdefault((learner_name, order), []).append(points)
                    seconds[(learner_name, order)] = seconds.get((learner_name, order), 0.0) + time.perf_counter() - started
        for (learner_name, order), per_seed in results.items():
            needed = ", ".join("-" if (n := reached(points)) is None else str(n) for points in per_seed)
            rows.append(f"{name:<6} {learner_name:<12} {order:<10} {needed:>32} "
                        + " ".join(f"{at(per_seed[0], n):>11}" for n in CHECKPOINTS)
                        + f" {seconds[(learner_name, order)] / len(per_seed):>8.1f}")
            print(rows[-1], flush=True)
    print()
    print(f"retrain every {args.every} labels (cnn: every {args.cnn_every}); P/R: precision/recall of kept "
          f"(score >= {THRESHOLD}) on the pictures not labelled by hand; '-': not reached by {args.max_labels} "
          f"labels; seeds {args.seeds} (random: one shuffle per seed; P/R columns: the first seed)")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
