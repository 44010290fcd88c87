"""The perceptual hash and the duplicate finder behind ``scrapy export`` (stages/dedup.py)."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

from stages.dedup import Candidate, find_duplicates, hamming, phash_bytes, phash_image, sha256_bytes


def picture(seed: int, size: tuple[int, int] = (200, 150)) -> Image.Image:
    """A picture of random shapes: each seed a different composition."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randrange(20, size[0]), y0 + rng.randrange(20, size[1])
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def encoded(image: Image.Image, kind: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def test_copies_hash_alike_and_different_pictures_do_not():
    original = picture(1)
    base = phash_bytes(encoded(original, quality=95))
    copies = [
        encoded(original, quality=60),  # re-compressed
        encoded(original.resize((100, 75), Image.Resampling.LANCZOS), quality=85),  # smaller
        encoded(original.resize((400, 300), Image.Resampling.BICUBIC), "PNG"),  # larger, other format
        encoded(original.convert("RGBA"), "WEBP", quality=80),
    ]
    assert all(hamming(base, phash_bytes(copy)) <= 4 for copy in copies)
    others = [phash_bytes(encoded(picture(seed))) for seed in range(2, 12)]
    assert min(hamming(base, other) for other in others) >= 12
    assert phash_image(original) == phash_image(original.copy())  # deterministic
    assert 0 <= base < 2**64


def test_transparency_is_hashed_on_white():
    shape = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(shape).rectangle((10, 10, 40, 50), fill=(200, 20, 20, 255))
    on_white = Image.new("RGB", (64, 64), "white")
    on_white.paste(shape, mask=shape)
    assert hamming(phash_image(shape), phash_image(on_white)) <= 2


def test_exact_and_near_duplicates_name_what_they_duplicate():
    a, b = picture(1), picture(2)
    a_bytes, b_bytes = encoded(a), encoded(b)
    near_bytes = encoded(a.resize((120, 90)), quality=70)
    candidates = [
        Candidate("a", sha256_bytes(a_bytes), phash_bytes(a_bytes)),
        Candidate("b", sha256_bytes(b_bytes), phash_bytes(b_bytes)),
        Candidate("a-copy", sha256_bytes(a_bytes), phash_bytes(a_bytes)),
        Candidate("a-small", sha256_bytes(near_bytes), phash_bytes(near_bytes)),
    ]
    kept, duplicates = find_duplicates(candidates, max_distance=6)
    assert [c.key for c in kept] == ["a", "b"]
    assert [(d.key, d.duplicate_of, d.kind) for d in duplicates] == [("a-copy", "a", "exact"), ("a-small", "a", "near")]
    assert duplicates[0].distance == 0 and 0 <= duplicates[1].distance <= 6

    kept, duplicates = find_duplicates(candidates, max_distance=-1)  # exact only
    assert [c.key for c in kept] == ["a", "b", "a-small"]
    assert [d.key for d in duplicates] == ["a-copy"]


def test_the_first_of_a_group_is_kept_and_near_matches_only_kept_pictures():
    # A chain a -> b -> c of 4-bit steps: c is 8 bits from a, 4 from b; b is a duplicate, so c stays.
    a, b, c = 0, 0b1111, 0b11111111
    kept, duplicates = find_duplicates(
        [Candidate("a", "sa", a), Candidate("b", "sb", b), Candidate("c", "sc", c)], max_distance=4
    )
    assert [k.key for k in kept] == ["a", "c"]
    assert [(d.key, d.duplicate_of, d.distance) for d in duplicates] == [("b", "a", 4)]
    many = [Candidate(f"k{n}", f"s{n}", (n * 0x9E3779B97F4A7C15) % 2**64) for n in range(40)]  # grows the array
    kept, duplicates = find_duplicates(many, max_distance=0)
    assert len(kept) == 40 and not duplicates
