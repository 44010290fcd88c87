"""Duplicate pictures before an export: exact copies by sha256, near copies by a perceptual hash.

The same picture reaches a crawl more than once: an artist re-posts it as a new artwork, a
compilation repeats pages, a resized or re-compressed copy turns up elsewhere. In a training set a
duplicate is worse than useless (it weights one picture twice, and across train and val it inflates
the validation score), so ``scrapy export`` drops them, and lists each one in its manifest.

The perceptual hash is a DCT hash written here on Pillow and numpy (no extra dependency): the
picture in gray, shrunk to 32x32, its 2-D DCT, and one bit per coefficient of the 8x8
lowest-frequency block: above or below their median. Re-encoding, resizing and mild colour changes
move few of the 64 bits; a different picture flips about half. Two pictures whose hashes differ in
at most ``EXPORT_PHASH_DISTANCE`` bits are near duplicates.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from PIL import Image

from models.imaging import flatten_on_white

HASH_SIDE = 32  # the picture is shrunk to this square before the DCT
LOW_SIDE = 8  # the lowest-frequency LOW_SIDE x LOW_SIDE coefficients give the 64 bits


def _dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II as a matrix, so a 2-D DCT is ``M @ X @ M.T``."""
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix: np.ndarray = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    matrix[0, :] = np.sqrt(1.0 / size)
    return matrix


_DCT = _dct_matrix(HASH_SIDE)
_BIT_WEIGHTS = np.array([1 << (63 - i) for i in range(LOW_SIDE * LOW_SIDE)], dtype=object)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def phash_image(image: Image.Image) -> int:
    """The 64-bit DCT hash of a picture (its first frame when animated)."""
    if image.format == "JPEG":
        image.draft("RGB", (HASH_SIDE * 2, HASH_SIDE * 2))  # decode at a reduced scale: much faster
    gray = flatten_on_white(image).convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float64)
    coefficients = (_DCT @ pixels @ _DCT.T)[:LOW_SIDE, :LOW_SIDE].ravel()
    median = np.median(coefficients[1:])  # the DC term is the mean brightness, not shape
    bits = coefficients > median
    return int(sum(_BIT_WEIGHTS[bits])) if bits.any() else 0


def phash_bytes(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return phash_image(image)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class Candidate:
    """One picture offered for export; ``key`` names it in the manifest."""

    key: str
    sha256: str
    phash: int


@dataclass(frozen=True)
class Duplicate:
    key: str
    duplicate_of: str  # the key of the picture that is exported in its place
    kind: str  # "exact" (same sha256) or "near" (perceptual hash within the distance)
    distance: int  # Hamming distance of the two hashes; 0 for an exact duplicate

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "duplicate_of": self.duplicate_of, "kind": self.kind, "distance": self.distance}


def find_duplicates(candidates: Iterable[Candidate], max_distance: int) -> tuple[list[Candidate], list[Duplicate]]:
    """(the pictures to keep, the duplicates), walking ``candidates`` in the order given.

    The first of a group is kept, so the caller decides which copy survives by the order (the
    export puts the largest picture first). A near duplicate is matched against kept pictures only,
    never against other duplicates, so chains of small changes cannot drift far from what is kept;
    the closest kept picture is named (the earliest on a tie). ``max_distance`` < 0 turns off
    near-duplicate matching.
    """
    kept: list[Candidate] = []
    duplicates: list[Duplicate] = []
    by_sha: dict[str, str] = {}
    kept_hashes = np.zeros(16, dtype=np.uint64)
    for candidate in candidates:
        if candidate.sha256 in by_sha:
            duplicates.append(Duplicate(candidate.key, by_sha[candidate.sha256], "exact", 0))
            continue
        if max_distance >= 0 and kept:
            distances = np.bitwise_count(kept_hashes[: len(kept)] ^ np.uint64(candidate.phash))
            nearest = int(np.argmin(distances))
            if int(distances[nearest]) <= max_distance:
                duplicates.append(Duplicate(candidate.key, kept[nearest].key, "near", int(distances[nearest])))
                continue
        if len(kept) == len(kept_hashes):
            kept_hashes = np.concatenate([kept_hashes, np.zeros(len(kept_hashes), dtype=np.uint64)])
        kept_hashes[len(kept)] = candidate.phash
        kept.append(candidate)
        by_sha[candidate.sha256] = candidate.key
    return kept, duplicates
