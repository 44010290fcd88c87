"""The labelling queue's orders (jobs/review_queue.py) on rows made here: uncertain-first puts the
scores nearest the threshold first (every fifth question from the diverse sample) and leaves
labelled pictures out; with no scores it deals one picture per near-duplicate group across the
identity clusters."""

from __future__ import annotations

import pytest

from jobs.review_queue import QueuedPicture, diverse_sample, newest_first, order_queue


def picture(artwork_id: str, page: int = 0, *, score: float | None = None, manual: str | None = None,
            phash: str | None = None, cluster: int | None = None, created: str | None = None,
            has_file: bool = True) -> QueuedPicture:
    return QueuedPicture(artwork_id, page, "kept", None, None, manual, score, None, None,
                         f"sha-{artwork_id}-{page}", phash, cluster, created or f"2026-01-{int(artwork_id) % 28 + 1:02d}",
                         has_file)


def keys(pictures: list[QueuedPicture]) -> list[str]:
    return [f"{p.artwork_id}:{p.page}" for p in pictures]


def test_newest_first_by_date_then_id_with_pages_in_order():
    rows = [picture("5", 1, created="2026-03-01"), picture("9", created="2026-01-01"), picture("5", 0, created="2026-03-01"),
            picture("12", created="2026-03-01")]
    assert keys(newest_first(rows)) == ["12:0", "5:0", "5:1", "9:0"]


def test_uncertain_first_is_nearest_the_threshold_and_skips_labelled_and_fileless_pictures():
    rows = [picture("1", score=0.95), picture("2", score=0.52), picture("3", score=0.10), picture("4", score=0.45),
            picture("5", score=0.50, manual="keep"), picture("6", score=0.49, has_file=False), picture("7")]
    assert keys(order_queue(rows, "uncertain", threshold=0.5)) == ["2:0", "4:0", "3:0", "1:0", "7:0"]
    # the threshold moves the middle: at 0.9 the sure keep is the question
    assert keys(order_queue(rows, "uncertain", threshold=0.9))[:2] == ["1:0", "2:0"]
    assert keys(order_queue(rows, "score")) == ["1:0", "2:0", "5:0", "6:0", "4:0", "3:0", "7:0"]


def test_with_a_model_every_fifth_question_comes_from_the_diverse_sample():
    """The model's surest picture (newest, 0.95) is asked fifth: a group it is wrongly sure of would
    never come near the threshold otherwise."""
    scores = {"1": 0.51, "2": 0.48, "3": 0.53, "4": 0.46, "5": 0.56, "6": 0.43, "7": 0.60, "8": 0.95}
    rows = [picture(artwork_id, score=score) for artwork_id, score in scores.items()]
    assert keys(order_queue(rows, "uncertain", threshold=0.5)) == ["1:0", "2:0", "3:0", "4:0", "8:0", "5:0", "6:0", "7:0"]
    assert keys(order_queue(rows, "uncertain", threshold=0.5, explore_every=3))[:6] == ["1:0", "2:0", "8:0", "3:0", "4:0", "7:0"]
    assert keys(order_queue(rows, "uncertain", threshold=0.5, explore_every=0)) == [str(n) + ":0" for n in range(1, 9)]


def test_without_scores_one_per_near_duplicate_group_dealt_across_clusters():
    near = "f0f0f0f0f0f0f0f0"
    one_bit_off = "f0f0f0f0f0f0f0f1"
    rows = [
        # cluster 0: three pictures, two of them near copies of each other
        picture("30", phash=near, cluster=0, created="2026-05-03"),
        picture("29", phash=one_bit_off, cluster=0, created="2026-05-02"),
        picture("28", phash="0000ffff0000ffff", cluster=0, created="2026-05-01"),
        # cluster 1: two pictures
        picture("20", phash="123456789abcdef0", cluster=1, created="2026-04-02"),
        picture("19", phash="0fedcba987654321", cluster=1, created="2026-04-01"),
        # noise, and a picture never clustered nor hashed
        picture("10", phash="aaaaaaaaaaaaaaaa", cluster=-1, created="2026-03-01"),
        picture("9", created="2026-02-01"),
    ]
    ordered = keys(diverse_sample(rows))
    assert ordered[-1] == "29:0"  # the near copy of 30 comes last, after every group's first
    assert sorted(ordered) == sorted(keys(rows))
    first_round = ordered[:3]  # one from each bucket: cluster 0 (largest), cluster 1 / unclustered (2 each)
    assert first_round[0] == "30:0" and set(first_round[1:]) == {"20:0", "10:0"}
    assert ordered[3:6] == ["28:0", "19:0", "9:0"]
    assert keys(order_queue(rows, "uncertain")) == ordered  # no scores at all: the diverse sample


def test_an_unknown_order_is_refused():
    with pytest.raises(ValueError, match="order must be one of newest, score, uncertain"):
        order_queue([], "random")
