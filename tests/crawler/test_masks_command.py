"""`scrapy masks`: labelme JSON files, written here in labelme 5's own structure, to index masks.

Pixel checks use shapes whose painted pixels are known exactly; the folder-level checks use the
generated shapes data (tests/models/segment_fixtures.py); one test runs the command as users do.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.labelme import (
    LabelmeError, convert_folder, parse_labels, voc_palette,
)
from tests.models.segment_fixtures import SHAPE_CLASSES, labelme_document, write_labelme_folder

REPO = Path(__file__).resolve().parents[2]


def shape(label: str, points: list[list[float]], kind: str, **extra) -> dict:
    return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": kind,
            "flags": {}, **extra}


def write_picture(path: Path, size: tuple[int, int] = (40, 30), colour=(200, 180, 160)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def mask_of(dest: Path, stem: str) -> np.ndarray:
    with Image.open(dest / "annotations" / f"{stem}.png") as mask:
        assert mask.mode == "P"
        return np.asarray(mask)


def test_each_shape_type_paints_its_pixels(tmp_path, caplog):
    """polygon, rectangle, circle drawn with outline (labelme's rule); line and point left out with a warning."""
    source = tmp_path / "labelme"
    write_picture(source / "pic.png")
    shapes = [
        shape("hair", [[2, 2], [12, 2], [12, 12], [2, 12]], "polygon"),
        shape("face", [[20, 5], [25, 9]], "rectangle"),
        shape("eye", [[32, 20], [35, 20]], "circle"),
        shape("face", [[10, 10], [14, 14]], "rectangle"),  # later: paints over the hair polygon
        shape("hair", [[0, 29], [39, 29]], "line"),
        shape("eye", [[5, 25]], "point"),
    ]
    write_json(source / "pic.json", labelme_document(shapes, "pic.png", (40, 30), None))
    with caplog.at_level(logging.WARNING, logger="models.labelme"):
        summary = convert_folder(source, tmp_path / "out")
    assert summary.classes == ["_background_", "eye", "face", "hair"]
    assert (tmp_path / "out" / "labels.txt").read_text() == "_background_\neye\nface\nhair\n"
    mask = mask_of(tmp_path / "out", "pic")
    assert mask.shape == (30, 40)
    hair, face, eye = 3, 2, 1
    assert (mask[2:10, 2:10] == hair).all() and mask[12, 2] == hair and mask[13, 2] == 0  # outline included
    assert (mask[10:15, 10:15] == face).all()  # the later rectangle wins
    assert (mask[5:10, 20:26] == face).all() and mask[4, 20] == 0 and mask[5, 26] == 0
    assert mask[20, 32] == eye and mask[20, 35] == eye and mask[20, 36] == 0 and mask[23, 32] == eye
    assert mask[29, 20] == 0 and mask[25, 5] == 0  # the line and the point paint nothing
    assert set(np.unique(mask)) == {0, 1, 2, 3}
    assert "1 line shape(s) left out" in caplog.text and "1 point shape(s) left out" in caplog.text
    assert summary.converted == ["pic"] and summary.failed == [] and summary.warnings == 2
    # the picture is copied byte for byte, and the palette is VOC's
    assert (tmp_path / "out" / "images" / "pic.png").read_bytes() == (source / "pic.png").read_bytes()
    with Image.open(tmp_path / "out" / "annotations" / "pic.png") as png:
        assert png.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]


def test_image_data_wins_and_declared_size_mismatch_is_a_warning(tmp_path, caplog):
    source = tmp_path / "labelme"
    buffer = io.BytesIO()
    Image.new("RGB", (20, 16), (10, 200, 30)).save(buffer, format="JPEG", quality=90)
    document = labelme_document([shape("cat", [[0, 0], [3, 3]], "rectangle")], "../elsewhere/missing.jpg",
                                (999, 999), base64.b64encode(buffer.getvalue()).decode())
    write_json(source / "deep" / "embedded.json", document)
    with caplog.at_level(logging.WARNING, logger="models.labelme"):
        summary = convert_folder(source, tmp_path / "out")
    assert summary.converted == ["deep/embedded"]
    assert (tmp_path / "out" / "images" / "deep" / "embedded.jpg").read_bytes() == buffer.getvalue()
    assert mask_of(tmp_path / "out", "deep/embedded").shape == (16, 20)
    assert "imageWidth/imageHeight say 999x999 but the picture is 20x16" in caplog.text


def test_exif_rotated_picture_is_written_turned(tmp_path):
    """labelme shows (and so annotates) a picture turned by its EXIF orientation."""
    source = tmp_path / "labelme"
    source.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (30, 10), (90, 90, 90)).save(source / "turned.jpg", exif=exif.tobytes())
    write_json(source / "turned.json", labelme_document([shape("x", [[0, 0], [4, 4]], "rectangle")],
                                                        "turned.jpg", (10, 30), None))
    convert_folder(source, tmp_path / "out")
    with Image.open(tmp_path / "out" / "images" / "turned.jpg") as written:
        assert written.size == (10, 30) and written.getexif().get(0x0112, 1) == 1
    assert mask_of(tmp_path / "out", "turned").shape == (30, 10)


def test_labelme_mask_shape(tmp_path):
    """labelme 5's `mask` shape: a base64 bitmap over the box between its two points."""
    source = tmp_path / "labelme"
    write_picture(source / "m.png", (12, 12))
    bitmap = np.zeros((4, 5), np.uint8)
    bitmap[1:3, 1:4] = 1
    buffer = io.BytesIO()
    Image.fromarray(bitmap * 255).save(buffer, format="PNG")
    write_json(source / "m.json", labelme_document(
        [shape("blob", [[6, 2], [10, 5]], "mask", mask=base64.b64encode(buffer.getvalue()).decode())],
        "m.png", (12, 12), None))
    convert_folder(source, tmp_path / "out")
    expected = np.zeros((12, 12), np.uint8)
    expected[3:5, 7:10] = 1
    assert (mask_of(tmp_path / "out", "m") == expected).all()


def test_labels_file_in_labelme_form_and_ignore_label(tmp_path):
    """labelme's labels.txt (`__ignore__`, `_background_`, classes) numbers the classes; `__ignore__` paints 255."""
    source = tmp_path / "labelme"
    write_picture(source / "a.png")
    write_json(source / "a.json", labelme_document([
        shape("person", [[0, 0], [9, 9]], "rectangle"),
        shape("__ignore__", [[5, 5], [7, 7]], "rectangle"),
    ], "a.png", (40, 30), None))
    write_picture(source / "b.png")
    write_json(source / "b.json",
               labelme_document([shape("dog", [[0, 0], [3, 3]], "rectangle")], "b.png", (40, 30), None))
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\nsky\nperson\n")
    summary = convert_folder(source, tmp_path / "out", labels=labels)
    assert summary.classes == ["_background_", "sky", "person"]
    mask = mask_of(tmp_path / "out", "a")
    assert mask[0, 0] == 2 and mask[6, 6] == 255 and mask[20, 20] == 0
    assert summary.failed == [("b.json", "labels not in the class list: dog")]
    assert not (tmp_path / "out" / "annotations" / "b.png").exists()


def test_parse_labels():
    assert parse_labels(["b", "a", ""]) == ["_background_", "b", "a"]
    assert parse_labels(["__ignore__", "_background_", "x"]) == ["_background_", "x"]
    with pytest.raises(LabelmeError, match="first class"):
        parse_labels(["x", "_background_"])
    with pytest.raises(LabelmeError, match="listed twice: x"):
        parse_labels(["x", "y", "x"])


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette[3 * 1:3 * 2] == [128, 0, 0] and palette[3 * 15:3 * 16] == [192, 128, 128]
    assert palette[3 * 255:] == [224, 224, 192]


def write_broken_files(source: Path) -> None:
    source.mkdir(parents=True, exist_ok=True)
    (source / "bad_json.json").write_text('{"shapes": [', encoding="utf-8")
    write_json(source / "no_picture.json", labelme_document([shape("a", [[0, 0], [2, 2]], "rectangle")],
                                                             "nowhere.png", (4, 4), None))
    write_picture(source / "two_points.png")
    write_json(source / "two_points.json", labelme_document([shape("a", [[0, 0], [5, 5]], "polygon")],
                                                             "two_points.png", (40, 30), None))
    write_json(source / "not_labelme.json", {"hello": "world"})


def test_broken_files_are_reported_and_the_rest_converted(tmp_path, caplog):
    source = write_labelme_folder(tmp_path / "labelme", 6, seed=3)
    write_broken_files(source)
    with caplog.at_level(logging.ERROR, logger="models.labelme"):
        summary = convert_folder(source, tmp_path / "out")
    reasons = dict(summary.failed)
    assert set(reasons) == {"bad_json.json", "no_picture.json", "two_points.json", "not_labelme.json"}
    assert reasons["bad_json.json"].startswith("not JSON (Expecting value at line 1")
    assert reasons["no_picture.json"].startswith("imagePath 'nowhere.png': no file at ")
    assert reasons["two_points.json"] == "shape 1 (polygon 'a'): a polygon needs at least 3 points, has 2"
    assert reasons["not_labelme.json"] == "not a labelme file: no 'shapes' list"
    assert len(summary.converted) == 6
    assert "bad_json.json: not converted: not JSON" in caplog.text
    # every generated shape class is found, sorted; 'a' comes from the (otherwise broken) polygon file
    assert summary.classes == ["_background_", "a", *SHAPE_CLASSES]
    for stem in summary.converted:
        with Image.open(next((tmp_path / "out" / "images").glob(f"{stem}.*"))) as picture:
            assert picture.size == mask_of(tmp_path / "out", stem).shape[::-1]


def test_reconverting_gives_the_same_bytes(tmp_path):
    source = write_labelme_folder(tmp_path / "labelme", 4, seed=5)
    first = convert_folder(source, tmp_path / "one")
    second = convert_folder(source, tmp_path / "two")
    assert first.converted == second.converted
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)
    assert not list((tmp_path / "one").rglob("*.part"))


def test_scrapy_masks_command(tmp_path):
    """The command as users run it: a folder with broken files converts the rest and exits 1."""
    source = write_labelme_folder(tmp_path / "labelme", 5, seed=8)
    write_broken_files(source)
    dest = tmp_path / "dataset"
    done = subprocess.run([sys.executable, "-m", "scrapy", "masks", str(source), str(dest), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith(f"Converted 5 labelme files to {dest}/images and {dest}/annotations; 4 failed")
    assert "  failed: two_points.json: shape 1 (polygon 'a'): a polygon needs at least 3 points, has 2" in done.stdout
    assert "ERROR: bad_json.json: not converted: not JSON" in done.stderr
    assert len(list((dest / "annotations").rglob("*.png"))) == 5
    assert (dest / "labels.txt").read_text().splitlines() == ["_background_", "a", *SHAPE_CLASSES]

    usage = subprocess.run([sys.executable, "-m", "scrapy", "masks", str(tmp_path / "nothing-here"), str(dest)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2
    assert "nothing-here: not a folder" in usage.stderr


def test_windows_image_path_from_another_machine(tmp_path):
    """Annotated on Windows with an absolute imagePath; the picture travelled beside the JSON."""
    source = tmp_path / "labelme"
    write_picture(source / "win.png")
    write_json(source / "win.json", labelme_document([shape("a", [[0, 0], [2, 2]], "rectangle")],
                                                     "C:\\Users\\ann\\pictures\\win.png", (40, 30), None))
    summary = convert_folder(source, tmp_path / "out")
    assert summary.converted == ["win"] and summary.failed == []
