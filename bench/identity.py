"""Benchmark: "is this the character?" without labels, our embedding against raw pixels.

On the shared Genshin fixtures (``../shared/fixtures/anime``, see its SOURCE.txt; nothing copied
here): ``faces/`` holds one 256 px head icon per character, ``cards/`` one full-body card of the
same characters, ``negatives/`` 40 pictures of no character. Each character has one icon and one
card, so the protocol builds what it lacks from augmented copies, and says so:

* **Reference mode** (``scrapy curate --stages identity --reference DIR``), for each of the 24
  characters with both: references = its icon's head region plus 2 augmented views of it (a
  mirror image; a 88% crop at a random offset, scaled back), queries = all 24 cards and the 40
  negatives; the character's own card is the one positive. ``models.identity.match`` decides, as
  the stage does (distance to the references' centroid, or the references' HDBSCAN cluster).
  Precision and recall per character, then their mean (a character with nothing matched has
  precision 0). Threshold-free: how often the own card is the nearest card (top-1) and its mean
  rank among the 24 cards.
* **No-reference mode** (the dominant cluster): for each character, a mixed set where it dominates:
  12 augmented copies of its icon (mirror, crops, scales, brightness +-10%) and its card, beside
  every other character's icon and card and the 40 negatives (101 pictures, 13 of the character).
  The dominant HDBSCAN cluster is kept; precision and recall of "is the character", and whether
  the real card (not an augmented copy) got in.

The head region is what the stage embeds: the face box grown to take the hair in (or the upper
part of a tall picture without a face). Face boxes come from ``--faces``: ``detect`` (default: the
face stage's detectors, as the pipeline runs them), ``labelled`` (bench/faces.py's hand-checked
boxes) or ``none`` (no face: every card embedded by its upper part).

    .venv/bin/python bench/identity.py [--faces detect|labelled|none] [--boxes FILE] [--fixtures DIR]

Detection takes about two minutes; ``--boxes FILE`` keeps the detected boxes there (JSON) and reads
them back on the next run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

from models.identity import DEFAULT_THRESHOLD, ColourEmbedder, head_region, match, unit  # noqa: E402

FIXTURES = REPO.parent / "shared" / "fixtures" / "anime"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SEED = 15


class PixelEmbedder:
    """The naive way: the region composited on white, downscaled to 16x16 RGB, L2-normalised."""

    version = "pixels-16"

    def embed(self, regions):
        from models.imaging import flatten_on_white

        return np.stack([unit(np.asarray(flatten_on_white(r).convert("RGB").resize((16, 16)), np.float32).ravel())
                         for r in regions])


def face_boxes(mode: str, pictures: dict[str, Image.Image]) -> dict[str, dict | None]:
    if mode == "none":
        return {key: None for key in pictures}
    if mode == "labelled":
        sys.path.insert(0, str(REPO / "bench"))
        from faces import HEADS  # bench/faces.py

        return {key: dict(zip("xywh", HEADS[key])) if key in HEADS else None for key in pictures}
    from scrapy.settings import Settings

    from models.faces import detect_faces
    from stages.faces import FaceSearch, cached_detectors

    settings = Settings()
    settings.setmodule("crawler.settings")  # the FACES_* defaults, with the two classic detectors
    settings.set("FACES_DETECTORS", "cascade,animeface")
    search = FaceSearch(settings)
    for problem in search.problems:
        print(f"  note: {problem}")
    detectors = cached_detectors(search.settings)
    boxes = {}
    for key, image in pictures.items():
        faces = detect_faces(image, detectors)
        boxes[key] = None if not faces else {"x": faces[0].x, "y": faces[0].y, "w": faces[0].w, "h": faces[0].h}
    return boxes


def augment(region: Image.Image, rng: random.Random, kind: str) -> Image.Image:
    """A colour-preserving view: mirror, crop at a random offset scaled back, or brightness jitter."""
    width, height = region.size
    if kind == "mirror":
        return ImageOps.mirror(region)
    if kind == "crop":
        share = rng.uniform(0.82, 0.92)
        w, h = round(width * share), round(height * share)
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        return region.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.BICUBIC)
    if kind == "scale":
        share = rng.uniform(0.6, 1.4)
        return region.resize((max(8, round(width * share)), max(8, round(height * share))), Image.Resampling.BICUBIC)
    rgb, alpha = region.convert("RGB"), region.getchannel("A")
    rgb = ImageEnhance.Brightness(rgb).enhance(rng.uniform(0.9, 1.1))
    rgb.putalpha(alpha)
    return rgb


def scores(predicted: list[bool], truth: list[bool]) -> tuple[float, float]:
    tp = sum(p and t for p, t in zip(predicted, truth))
    chosen, positives = sum(predicted), sum(truth)
    return (tp / chosen if chosen else 0.0), (tp / positives if positives else 0.0)


def reference_mode(embedder, icons, cards, negatives, threshold, rng):
    names = sorted(set(icons) & set(cards))
    query_names = [f"card:{n}" for n in sorted(cards)] + [f"neg:{n}" for n in sorted(negatives)]
    queries = embedder.embed([cards[n] for n in sorted(cards)] + [negatives[n] for n in sorted(negatives)])
    precision, recall, top1, ranks = [], [], 0, []
    for name in names:
        references = embedder.embed([icons[name], augment(icons[name], rng, "mirror"), augment(icons[name], rng, "crop")])
        results = match(queries, references, threshold=threshold, version=embedder.version)
        p, r = scores([m.matched for m in results], [q == f"card:{name}" for q in query_names])
        precision.append(p)
        recall.append(r)
        card_distances = {q: m.distance for q, m in zip(query_names, results) if q.startswith("card:")}
        order = sorted(card_distances, key=card_distances.get)
        rank = order.index(f"card:{name}") + 1
        ranks.append(rank)
        top1 += rank == 1
    return float(np.mean(precision)), float(np.mean(recall)), top1 / len(names), float(np.mean(ranks)), len(names)


def dominant_mode(embedder, icons, cards, negatives, rng):
    names = sorted(set(icons) & set(cards))
    kinds = ("mirror", "crop", "scale", "brightness")
    precision, recall, card_in = [], [], 0
    for name in names:
        regions, truth, is_card = [], [], []
        for k in range(12):
            regions.append(augment(icons[name], rng, kinds[k % len(kinds)]))
            truth.append(True)
            is_card.append(False)
        regions.append(cards[name])
        truth.append(True)
        is_card.append(True)
        for other in names:
            if other != name:
                regions += [icons[other], cards[other]]
                truth += [False, False]
                is_card += [False, False]
        regions += [negatives[n] for n in sorted(negatives)]
        truth += [False] * len(negatives)
        is_card += [False] * len(negatives)
        results = match(embedder.embed(regions), None, version=embedder.version)
        p, r = scores([m.matched for m in results], truth)
        precision.append(p)
        recall.append(r)
        card_in += results[is_card.index(True)].matched
    return float(np.mean(precision)), float(np.mean(recall)), card_in / len(names), len(regions)


def load(folder: Path) -> dict[str, Image.Image]:
    return {p.stem: Image.open(p).convert("RGBA") for p in sorted(folder.iterdir())
            if p.suffix.lower() in (".png", ".webp", ".jpg", ".jpeg")}


def metric_cv(fixtures: Path, folds: int = 3, seed: int = 0, cache: Path | None = None) -> None:
    """The trained embedder (models/identity_metric.py) held out by character, beside colour-v1.

    Characters (and the character-free pictures) are dealt into ``folds`` folds in name order. For
    each fold, a head is trained on the other folds' pictures (icons, cards, views, negatives, all
    augmented), and its colour weight and threshold are chosen by a 2-fold cross-validation inside
    those training folds (nothing of this fold is looked at). Then this fold's characters, which it
    never saw, are scored (``identity_metric.reference_protocol``): for each, references = its icon's
    head region and 2 augmented views of it; queries = every card and view of this fold's characters
    and this fold's character-free pictures; positives = its own card and views. Precision and recall
    per character (``models.identity.match``, as the stage decides), pooled over characters; colour-v1
    on the very same references and queries at its default threshold."""
    from models import identity_metric as metric

    samples = metric.load_samples(fixtures)
    config = metric.MetricConfig(seed=seed)
    started = time.perf_counter()
    if cache and cache.is_file():
        features = np.load(cache)
    else:
        features = metric.view_features(samples, config.views, seed, log=lambda m: print(f"  {m}", flush=True))
        if cache:
            np.save(cache, features)
    colour = metric.colour_vectors(samples, seed)
    print(f"features of {len(samples)} pictures x {config.views} views: {time.perf_counter() - started:.0f} s")
    labels = [s.label for s in samples]
    fold_of = metric.folds_of(labels, folds)
    rows: dict[str, list[tuple[float, float, int]]] = {}
    for fold in range(folds):
        train = [i for i, label in enumerate(labels) if fold_of[label] != fold]
        held = [i for i, label in enumerate(labels) if fold_of[label] == fold]
        characters = sorted({labels[i] for i in held if "/" not in labels[i]})
        inner = metric.cross_validate([samples[i] for i in train], features[train], colour, config, folds=2)
        weight, threshold = inner.best()
        alone = metric.Scores({k: v for k, v in inner.table.items() if k[0] == 0.0}).best()
        head = metric.train_head(features[train], [labels[i] for i in train], config)
        runs = {"lite0-metric-v1: colour weight and threshold chosen inside the training folds": (weight, threshold),
                "  the head alone (colour weight 0), its threshold chosen likewise": alone,
                "colour-v1 alone, threshold 0.5 (its default)": (1.0, DEFAULT_THRESHOLD)}
        runs |= {f"  fixed: colour weight {w}, threshold {t}": (w, t) for w in (0.3, 0.5, 0.7) for t in (0.6, 0.65, 0.7, 0.75)}
        scores = metric.reference_protocol([samples[i] for i in held], metric.embed_features(head, features[held]),
                                           colour, characters, set(runs.values()))
        print(f"fold {fold + 1}/{folds}: trained on {len(train)} pictures; chosen inside: colour weight {weight}, "
              f"threshold {threshold}; {len(characters)} held-out characters", flush=True)
        for label, setting in runs.items():
            rows.setdefault(label, []).append((*scores.table[setting], len(characters)))
    print(f"\nHeld out by character ({folds} folds): references = the icon + 2 augmented views; queries = the "
          "fold's cards, views and character-free pictures; pooled over characters")
    print(f"{'embedder':84} {'precision':>9} {'recall':>7} {'characters':>10}")
    for label, parts in rows.items():
        n = sum(k for *_, k in parts)
        print(f"{label:84} {sum(p * k for p, _, k in parts) / n:9.2f} {sum(r * k for _, r, k in parts) / n:7.2f} {n:>10}")
    print(f"\nTotal {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--faces", choices=("detect", "labelled", "none"), default="detect")
    parser.add_argument("--boxes", type=Path, help="with --faces detect: keep the boxes in this JSON file")
    parser.add_argument("--metric-cv", action="store_true",
                        help="instead: the trained lite0-metric-v1 embedder held out by character, beside colour-v1 "
                             "(labelled boxes, views/ and negatives-more/ too; ~10 min on 2 cores)")
    parser.add_argument("--features-cache", type=Path, help="with --metric-cv: keep the backbone's features here (.npy)")
    args = parser.parse_args()
    if args.metric_cv:
        metric_cv(args.fixtures, cache=args.features_cache)
        return
    if not (args.fixtures / "cards").is_dir():
        sys.exit(f"{args.fixtures}: the shared anime fixtures are needed (faces/, cards/, negatives/)")
    sets = {name: load(args.fixtures / name) for name in ("faces", "cards", "negatives")}
    started = time.perf_counter()
    pictures = {f"{s}/{k}": image for s in ("faces", "cards") for k, image in sets[s].items()}
    pictures.update({f"negatives/{k}": image for k, image in sets["negatives"].items()})
    if args.faces == "detect" and args.boxes and args.boxes.is_file():
        boxes = json.loads(args.boxes.read_text())
    else:
        boxes = face_boxes(args.faces, pictures)
        if args.faces == "detect" and args.boxes:
            args.boxes.write_text(json.dumps(boxes))
    found = {s: sum(boxes[f"{s}/{k}"] is not None for k in sets[s]) for s in sets}
    print(f"Face boxes ({args.faces}, {time.perf_counter() - started:.1f} s): icons {found['faces']}/{len(sets['faces'])}, "
          f"cards {found['cards']}/{len(sets['cards'])}, negatives {found['negatives']}/{len(sets['negatives'])}; "
          "without one a tall picture is embedded by its upper part\n")
    regions = {key: head_region(image, boxes[key])[0] for key, image in pictures.items()}
    icons = {k: regions[f"faces/{k}"] for k in sets["faces"]}
    cards = {k: regions[f"cards/{k}"] for k in sets["cards"]}
    negatives = {k: regions[f"negatives/{k}"] for k in sets["negatives"]}

    embedders = (("ours: colour-v1 (hair/eye Lab histograms + texture)", ColourEmbedder()),
                 ("naive: raw 16x16 pixels", PixelEmbedder()))
    print("Reference mode: 3 references (icon + 2 augmented views), queries = 24 cards + 40 negatives, "
          "one positive each; mean over characters")
    print(f"{'embedder':54} {'threshold':>9} {'precision':>9} {'recall':>7} {'top-1':>6} {'mean rank':>9}")
    for label, embedder in embedders:
        for threshold in THRESHOLDS:
            p, r, top1, rank, n = reference_mode(embedder, icons, cards, negatives, threshold, random.Random(SEED))
            mark = " <- default" if embedder.version == "colour-v1" and threshold == DEFAULT_THRESHOLD else ""
            print(f"{label:54} {threshold:9.2f} {p:9.2f} {r:7.2f} {top1:6.2f} {rank:9.1f}{mark}")
    print(f"({n} characters; top-1 and mean rank of the own card among the 24 cards are threshold-free; "
          "a random order gives top-1 0.04, mean rank 12.5)\n")
    print("No-reference mode: the dominant HDBSCAN cluster (min_cluster_size 5) of a mixed set: 12 augmented "
          "icon copies + the card of one character among every other icon and card and the negatives")
    print(f"{'embedder':54} {'precision':>9} {'recall':>7} {'real card in':>12}")
    for label, embedder in embedders:
        p, r, card_in, size = dominant_mode(embedder, icons, cards, negatives, random.Random(SEED))
        print(f"{label:54} {p:9.2f} {r:7.2f} {card_in:12.2f}")
    print(f"({size} pictures per set, 13 of the character; 'real card in': share of characters whose card, the "
          f"one picture that is not an augmented icon, is in the kept cluster)")
    print(f"\nTotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
