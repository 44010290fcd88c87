"""The face detectors and their combination, on scenes built here around real fixture faces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image, ImageOps

import models.faces as faces_module
from models.faces import (
    AnimefaceDetector,
    AnimefaceUnusable,
    Candidate,
    CascadeDetector,
    CascadeError,
    Face,
    View,
    combine,
    crop_face,
    detect_faces,
    find_cascade,
    flatten,
    iou,
    propose,
    suppress_overlaps,
    synthetic_face,
    verify,
)

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "anime"
# head icons that both detectors find at 0.6-1.0x on the scene below (measured)
GOOD_ICONS = ("ayaka.webp", "barbara.webp", "chongyun.webp", "eula.webp")


def face_icon() -> Image.Image:
    for name in GOOD_ICONS:
        if (FIXTURES / "faces" / name).is_file():
            return Image.open(FIXTURES / "faces" / name).convert("RGBA")
    pytest.skip(f"no face icon fixture under {FIXTURES / 'faces'} (test data kept outside the repository)")


def background(width: int = 480, height: int = 360, seed: int = 7) -> Image.Image:
    """Blotchy colour texture plus pixel noise: busy, but nothing face-like."""
    rng = np.random.default_rng(seed)
    blotches = rng.integers(60, 200, (height // 40 + 1, width // 40 + 1, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(blotches).resize((width, height), Image.Resampling.BICUBIC), dtype=float)
    return Image.fromarray(np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8))


def scene(with_face: bool = True, pos: tuple[int, int] = (230, 90), size: int = 205) -> tuple[Image.Image, Face]:
    """The background with a real head icon pasted at ``pos``, scaled to ``size`` px; and the pasted square."""
    picture = background()
    if with_face:
        icon = face_icon().resize((size, size), Image.Resampling.LANCZOS)
        picture.paste(icon, pos, icon)
    return picture, Face(pos[0], pos[1], size, size, 1.0)


@pytest.fixture(scope="module")
def cascade() -> CascadeDetector:
    path = find_cascade(None)
    if path is None:
        pytest.skip("lbpcascade_animeface.xml not in models/weights/ or ../shared/models/")
    return CascadeDetector(path)


@pytest.fixture(scope="module")
def animeface() -> AnimefaceDetector:
    return AnimefaceDetector()


def inside_share(face: Face, region: Face) -> float:
    iw = min(face.x + face.w, region.x + region.w) - max(face.x, region.x)
    ih = min(face.y + face.h, region.y + region.h) - max(face.y, region.y)
    return max(iw, 0) * max(ih, 0) / (face.w * face.h)


# --- the combined detector on real faces ----------------------------------------------------------


def test_finds_the_pasted_face_and_only_it(cascade, animeface):
    picture, pasted = scene()
    found = detect_faces(picture, [cascade, animeface])
    assert len(found) == 1
    face = found[0]
    assert inside_share(face, pasted) > 0.9  # the box lies on the pasted icon ...
    assert face.w > pasted.w / 4  # ... and is a face-sized part of it, not a speck
    assert face.sources == ("cascade", "animeface") and face.score > 0.9


def test_the_same_scene_without_the_face_has_no_face(cascade, animeface):
    picture, _ = scene(with_face=False)
    assert detect_faces(picture, [cascade, animeface]) == []


def test_transparent_input_is_composited_on_white(cascade, animeface):
    # the icon alone, RGBA: the detectors must see it on white, not the RGB under the alpha
    found = detect_faces(face_icon(), [cascade, animeface])
    assert len(found) == 1 and 40 < found[0].x + found[0].w / 2 < 216


def paste_icon(picture: Image.Image, name: str, pos: tuple[int, int], size: int) -> Face:
    if not (FIXTURES / "faces" / name).is_file():
        pytest.skip(f"no {name} under {FIXTURES / 'faces'}")
    icon = Image.open(FIXTURES / "faces" / name).convert("RGBA").resize((size, size), Image.Resampling.LANCZOS)
    picture.paste(icon, pos, icon)
    return Face(pos[0], pos[1], size, size, 1.0)


def test_the_views_method_still_finds_the_pasted_face_and_only_it(cascade, animeface):
    picture, pasted = scene()
    [face] = detect_faces(picture, [cascade, animeface], method="views")
    assert inside_share(face, pasted) > 0.9 and face.sources == ("cascade", "animeface")
    assert detect_faces(scene(with_face=False)[0], [cascade, animeface], method="views") == []


def test_verified_finds_each_face_of_a_group_picture(cascade, animeface):
    picture = background(720, 360)
    left = paste_icon(picture, "ayaka.webp", (40, 80), 220)
    right = paste_icon(picture, "eula.webp", (420, 60), 220)
    found = sorted(detect_faces(picture, [cascade, animeface]), key=lambda f: f.x)
    assert len(found) == 2
    assert inside_share(found[0], left) > 0.9 and inside_share(found[1], right) > 0.9


def test_verified_searches_a_large_picture_shrunk_and_maps_the_box_back(cascade, animeface):
    picture, pasted = scene()
    big = picture.resize((1920, 1440), Image.Resampling.LANCZOS)  # 4x: beyond SEARCH_SIDE
    [face] = detect_faces(big, [cascade, animeface])
    assert inside_share(face, Face(pasted.x * 4, pasted.y * 4, pasted.w * 4, pasted.h * 4, 1.0)) > 0.9
    assert face.w > pasted.w  # picture pixels, not the shrunk copy's


def test_a_proposal_is_confirmed_on_the_face_and_refused_on_the_background(cascade, animeface):
    picture, pasted = scene()
    picture = flatten(picture)
    proposals = propose(picture, cascade)
    on_face = [p for p in proposals if inside_share(Face(*(round(v) for v in (p.x, p.y, p.w, p.h)), 0.0), pasted) > 0.9]
    assert on_face, proposals
    confirmed = verify(picture, on_face[0], animeface)
    assert confirmed is not None and inside_share(confirmed, pasted) > 0.9 and confirmed.score >= 0.6
    # the same-sized square on the busy background, away from the icon: animeface sees no face there
    background_square = Candidate(30, 200, on_face[0].w, on_face[0].h, 5.0, "cascade", "plain", False)
    assert verify(picture, background_square, animeface) is None


def test_a_mirrored_crop_maps_its_box_back_unmirrored(cascade, animeface, monkeypatch):
    picture, pasted = scene()
    picture = flatten(picture)
    [face] = detect_faces(picture, [cascade, animeface])
    # a proposal off to the right of the face: the face sits left of the crop's centre, and right of it when mirrored
    off_centre = Candidate(face.x + 0.3 * face.w, face.y, face.w, face.h, 5.0, "cascade", "plain", False)
    plain = verify(picture, off_centre, animeface)
    monkeypatch.setattr(faces_module, "VERIFY_ATTEMPTS", tuple(a for a in faces_module.VERIFY_ATTEMPTS if a[2]))
    mirrored = verify(picture, off_centre, animeface)
    assert plain is not None and mirrored is not None
    assert iou(plain, face) > 0.7 and iou(mirrored, face) > 0.7


def test_verified_needs_both_detectors_else_the_views_method_runs(animeface):
    picture, pasted = scene()
    alone = detect_faces(picture, [animeface])  # nothing to propose: the views method with its witness rule
    assert alone == detect_faces(picture, [animeface], method="views")
    assert len(alone) == 1 and inside_share(alone[0], pasted) > 0.9
    with pytest.raises(ValueError, match="unknown face detection method 'fast'"):
        detect_faces(picture, [animeface], method="fast")


def test_tiny_and_thin_pictures_have_no_face_and_no_error(cascade, animeface):
    for size in ((1, 300), (300, 1), (5, 5), (40, 40)):
        assert detect_faces(Image.new("RGB", size, (200, 180, 160)), [cascade, animeface]) == [], size


def test_the_verifier_crop_is_white_beyond_the_picture():
    picture = Image.new("RGB", (100, 100), (0, 0, 255))
    square = faces_module._square(picture, 0, 0, 100, 64)  # centred on the corner: 3/4 of it outside
    assert square.size == (64, 64)
    assert square.getpixel((5, 5)) == (255, 255, 255) and square.getpixel((60, 60)) == (0, 0, 255)


# --- combination rules, on boxes given here ----------------------------------------------------------


def candidate(x, y, w, score=0.6, detector="animeface", view="plain", mirrored=False) -> Candidate:
    return Candidate(x, y, w, w, score, detector, view, mirrored)


def test_overlapping_boxes_are_suppressed_to_one():
    best, other, apart = Face(100, 100, 80, 80, 0.9), Face(110, 105, 80, 80, 0.7), Face(300, 100, 80, 80, 0.5)
    assert iou(best, other) > 0.3
    assert suppress_overlaps([other, apart, best]) == [best, apart]
    # a face box nested in a bigger head box is one face too
    assert suppress_overlaps([Face(90, 90, 120, 120, 0.6), Face(120, 120, 50, 50, 0.8)]) == [Face(120, 120, 50, 50, 0.8)]


def test_boxes_of_two_detectors_merge_into_one_face_naming_both():
    faces = combine([candidate(100, 100, 80, 0.7), candidate(108, 96, 84, 0.55, detector="cascade")])
    assert len(faces) == 1
    assert faces[0].sources == ("cascade", "animeface")
    assert (faces[0].x, faces[0].y, faces[0].w) == (104, 98, 82) and faces[0].score == 0.7


def test_a_lone_weak_box_needs_a_second_witness():
    weak = candidate(100, 100, 80, 0.6)
    assert combine([weak]) == []
    assert combine([weak, candidate(104, 100, 80, 0.55, view="equalized")]) == []  # same detector, same orientation
    assert len(combine([weak, candidate(102, 101, 78, 0.58, view="mirror", mirrored=True)])) == 1
    assert len(combine([candidate(100, 100, 80, 0.95)])) == 1  # strong enough alone
    assert len(combine([weak], require_witness=False)) == 1


def test_views_map_boxes_back_to_the_picture():
    picture = Image.new("L", (200, 120), 0)
    picture.paste(255, (40, 20, 50, 30))  # a 10x10 marker centred on (45, 25)

    def marker_centre(view: View) -> tuple[float, float]:
        ys, xs = np.nonzero(np.asarray(view.image) > 128)
        x, y, _, _ = view.to_picture(xs.mean() - 5, ys.mean() - 5, 10, 10)
        return x + 5, y + 5

    for view in (View("mirror", ImageOps.mirror(picture), mirrored=True),
                 View("tilt", picture.rotate(12, resample=Image.Resampling.BICUBIC), angle=12),
                 View("tilt", picture.rotate(-12, resample=Image.Resampling.BICUBIC), angle=-12),
                 View("zoom", picture.resize((300, 180)), scale=1.5)):
        x, y = marker_centre(view)
        assert math.dist((x, y), (45, 25)) < 2, view.name


# --- crops -------------------------------------------------------------------------------------------------


def test_crop_is_a_square_of_the_requested_size_around_the_face():
    picture = Image.new("RGBA", (400, 300), (255, 0, 0, 255))
    picture.paste((0, 0, 255, 255), (150, 100, 250, 200))  # the "face": a blue square
    crop = crop_face(picture, Face(150, 100, 100, 100, 1.0), margin=0.25, size=96)
    assert crop.size == (96, 96) and crop.mode == "RGB"
    assert crop.getpixel((48, 48)) == (0, 0, 255)
    r, g, b = crop.getpixel((3, 3))  # the margin shows the surroundings
    assert r > 200 and b < 50


def test_crop_is_shifted_inside_the_picture_not_padded():
    picture = Image.new("RGB", (300, 200), (0, 200, 0))
    picture.paste((255, 255, 255), (0, 0, 20, 200))  # a white strip on the left edge
    crop = crop_face(picture, Face(0, 50, 60, 60, 1.0), margin=0.5, size=60)
    # 120 px square, shifted right to x = 0..120: the strip is its leftmost sixth, nothing is black
    assert crop.getpixel((2, 30)) == (255, 255, 255)
    assert crop.getpixel((30, 30)) == (0, 200, 0)
    assert min(crop.convert("L").getdata()) > 100
    # a box larger than the picture: the square shrinks to the picture's shorter side
    assert crop_face(picture, Face(-50, -50, 400, 400, 1.0), size=32).size == (32, 32)


# --- the cascade file --------------------------------------------------------------------------------------


def test_cascade_refuses_a_tampered_file(tmp_path):
    real = find_cascade(None)
    data = real.read_bytes() if real else b"<?xml version='1.0'?><opencv_storage></opencv_storage>"
    tampered = tmp_path / "lbpcascade_animeface.xml"
    tampered.write_bytes(data.replace(b"nagadomi", b"nagadOmi") if real else data)
    with pytest.raises(CascadeError, match="sha256"):
        CascadeDetector(tampered)
    with pytest.raises(CascadeError, match="does not exist"):
        CascadeDetector(tmp_path / "missing.xml")


def test_find_cascade_order(tmp_path, monkeypatch):
    weights, shared = tmp_path / "weights.xml", tmp_path / "shared.xml"
    monkeypatch.setattr(faces_module, "CASCADE_SEARCH_PATHS", (weights, shared))
    assert find_cascade(None) is None
    shared.write_text("x")
    assert find_cascade(None) == shared
    weights.write_text("x")
    assert find_cascade(None) == weights
    explicit = tmp_path / "mine.xml"
    explicit.write_text("x")
    assert find_cascade(str(explicit)) == explicit
    assert find_cascade(str(tmp_path / "absent.xml")) == weights


# --- animeface self-test -------------------------------------------------------------------------------------


def test_animeface_finds_the_synthetic_self_test_face(animeface):
    found = animeface.detect(synthetic_face())
    assert len(found) == 1 and found[0].score > 0.9
    assert animeface.detect(Image.new("RGB", (256, 256), (255, 255, 255))) == []


def test_animeface_refuses_pillow_12(monkeypatch):
    monkeypatch.setattr(PIL, "__version__", "12.0.0")
    with pytest.raises(RuntimeError, match=r"Pillow 12\.0\.0.*pillow<12"):
        AnimefaceDetector()


def test_animeface_refuses_when_it_finds_nothing(monkeypatch):
    import animeface

    monkeypatch.setattr(animeface, "detect", lambda image: [])
    with pytest.raises(AnimefaceUnusable, match="self-test failed"):
        AnimefaceDetector()
