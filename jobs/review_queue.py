"""The review page's labelling queue: which pictures to show a person next, and in which order.

A person who crawled a broad tag labels a few dozen pictures and lets a model sort the rest (issue
32). Which few dozen matters: labelling the pictures the classifier is already sure about teaches it
nothing, so the ``uncertain`` order puts first the pictures whose classifier score is nearest the
decision threshold (uncertainty sampling, as in active-learning tools). Before there is a classifier,
it offers a diverse sample instead: one picture per near-duplicate group (the perceptual hash of
stages/dedup.py, as the export's duplicate check), dealt in turn from each identity cluster where
``scrapy curate --stages identity`` has run, so the first labels cover the crawl's variety instead of
ten copies of one popular picture. Once there is a model, every fifth question still comes from
that diverse sample (``EXPLORE_EVERY``): a model is sure of a whole group of pictures it has never
seen a label of, rightly or wrongly, and only questions away from its threshold find the wrong ones.
On the shared anime fixtures' first draw, pure uncertainty needed 100 labels to reach precision and
recall 0.95 and this mix 50 (bench/labelling.py --naive); on the demo site the mix costs up to 10
labels (60, 60, 50 on three draws against 50, 50, 50).

Pictures that already carry a manual decision are labels, not questions: the ``uncertain`` order
leaves them out (the ``manual`` filter shows them). ``newest`` is the grid's order; ``score`` is the
classifier's score, highest first, unscored pictures last.

Plain functions over rows (``QueuedPicture``) read by ``Catalog.review_queue``; the page's JSON API
(jobs/review.py, ``GET /api/queue``) is their one caller.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from stages.dedup import Candidate, find_duplicates

ORDERS = ("newest", "score", "uncertain")
DEFAULT_THRESHOLD = 0.5  # the classifier's own default (models/classifier.py) when no card says otherwise
EXPLORE_EVERY = 5  # with a model, every fifth question comes from the diverse sample (REVIEW_EXPLORE_EVERY)


@dataclass(frozen=True)
class QueueFilter:
    """What the person narrowed the queue to; None means any."""

    status: str | None = None  # kept, dropped or failed
    tag: str | None = None  # a Pixiv or model tag, through the aliases (catalog/tags.py)
    min_score: float | None = None  # classifier score range, both ends included
    max_score: float | None = None
    manual: bool | None = None  # True: only pictures decided by hand; False: only the others


@dataclass(frozen=True)
class QueuedPicture:
    """One picture as the queue sees it (a row of ``Catalog.review_queue``)."""

    artwork_id: str
    page: int
    status: str
    reason: str | None
    title: str | None
    manual: str | None  # keep, drop, or None
    score: float | None  # the classifier's score of its target class
    label: str | None
    model: str | None  # the classifier's version that gave the score
    sha256: str | None
    phash: str | None  # 16 hex digits
    cluster: int | None  # the identity stage's cluster; -1: noise; None: not clustered
    created: str | None  # the artwork's create date (Pixiv), for the newest order
    has_file: bool = True

    def as_json(self, threshold: float) -> dict[str, Any]:
        return {
            "artwork_id": self.artwork_id,
            "page": self.page,
            "status": self.status,
            "reason": self.reason,
            "title": self.title,
            "manual": self.manual,
            "has_file": bool(self.has_file),
            "scores": {
                "classifier": self.score,
                "classifier_label": self.label,
                "classifier_model": self.model,
                "distance_to_threshold": None if self.score is None else round(abs(self.score - threshold), 6),
            },
            "identity_cluster": self.cluster,
        }


def newest_first(pictures: Iterable[QueuedPicture]) -> list[QueuedPicture]:
    """Newest artwork first (create date, then the id as a number: Pixiv ids grow), its pages in order."""
    by_page = sorted(pictures, key=lambda p: p.page)
    return sorted(by_page, reverse=True,  # a reversed sort is still stable: pages stay in order
                  key=lambda p: (p.created or "", int(p.artwork_id) if p.artwork_id.isdigit() else -1, p.artwork_id))


def diverse_sample(pictures: Sequence[QueuedPicture], max_distance: int = 6) -> list[QueuedPicture]:
    """Every picture, the most varied first: one per near-duplicate group (the newest of it), dealt in
    turn from each identity cluster, largest cluster first; then the near duplicates, newest first."""
    ordered = newest_first(pictures)
    by_key = {f"{p.artwork_id}:{p.page}": p for p in ordered}
    candidates = [Candidate(key, p.sha256 or key, int(p.phash, 16) if p.phash else 0) for key, p in by_key.items()]
    hashed = [c for c in candidates if by_key[c.key].phash]
    kept, duplicates = find_duplicates(hashed, max_distance)
    representatives = {c.key for c in kept} | {c.key for c in candidates if not by_key[c.key].phash}
    buckets: dict[Any, list[QueuedPicture]] = defaultdict(list)
    for key, picture in by_key.items():
        if key in representatives:
            buckets[picture.cluster if picture.cluster is not None and picture.cluster >= 0 else "none"].append(picture)
    queues = sorted(buckets.values(), key=lambda bucket: -len(bucket))  # stable: ties keep first-seen order
    dealt: list[QueuedPicture] = []
    while any(queues):
        for bucket in queues:
            if bucket:
                dealt.append(bucket.pop(0))
    repeated = {d.key for d in duplicates}
    return dealt + [p for key, p in by_key.items() if key in repeated]


def order_queue(pictures: Sequence[QueuedPicture], order: str, threshold: float = DEFAULT_THRESHOLD,
                max_distance: int = 6, explore_every: int = EXPLORE_EVERY) -> list[QueuedPicture]:
    """``pictures`` in the queue's ``order`` (module docstring); ``explore_every`` 0: nearest only."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    if order == "newest":
        return newest_first(pictures)
    if order == "score":
        by_newest = newest_first(pictures)
        return sorted(by_newest, key=lambda p: (p.score is None, -(p.score or 0.0)))
    open_questions = [p for p in pictures if p.manual is None and p.has_file]
    scored = [p for p in open_questions if p.score is not None]
    unscored = [p for p in open_questions if p.score is None]
    nearest = sorted(newest_first(scored), key=lambda p: abs((p.score or 0.0) - threshold))
    if explore_every > 0:
        nearest = explored(nearest, diverse_sample(open_questions, max_distance), explore_every)
    return nearest + diverse_sample(unscored, max_distance)


def explored(nearest: list[QueuedPicture], varied: list[QueuedPicture], every: int) -> list[QueuedPicture]:
    """``nearest`` with every ``every``-th place given to the next picture of ``varied`` not placed
    yet; every picture of ``nearest`` once."""
    if not nearest:
        return []
    wanted = {(p.artwork_id, p.page) for p in nearest}
    placed: set[tuple[str, int]] = set()
    out: list[QueuedPicture] = []
    close, far = iter(nearest), iter(p for p in varied if (p.artwork_id, p.page) in wanted)
    while len(out) < len(nearest):
        source = far if len(out) % every == every - 1 else close
        picture = next((p for p in source if (p.artwork_id, p.page) not in placed), None)
        if picture is None:  # one source ran out: the other fills the rest
            source = close if source is far else far
            picture = next((p for p in source if (p.artwork_id, p.page) not in placed), None)
            if picture is None:
                break
        placed.add((picture.artwork_id, picture.page))
        out.append(picture)
    return out
