"""`scrapy masks`: labelme JSON files, written here in labelme 5's own structure, to index masks.

Pixel checks use shapes whose painted pixels are known exactly; the folder-level checks use the
generated shapes data (tests/models/segment_fixtures.py); one test runs the command as users do.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.labelme import (
    LabelmeError,
    convert_folder,
    parse_labels,
    voc_palette,
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


# --------------------------------------------------------------------------- hostile and malformed files


def png_bytes(size: tuple[int, int] = (12, 12), colour=(90, 120, 150)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def blank_1bit_png(width: int, height: int) -> bytes:
    """A real 1-bit PNG of ``width`` x ``height`` zeros, built chunk by chunk: a few KB however large it says it is.

    Built by hand because letting Pillow draw a 180-megapixel picture to save it would take the memory the
    converter is meant not to spend.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def embedded(shapes: list[dict], picture: bytes | None = None, image_path: str = "x.png") -> dict:
    """A labelme document carrying its picture (12x12 unless ``picture`` says otherwise)."""
    data = base64.b64encode(png_bytes() if picture is None else picture).decode()
    return labelme_document(shapes, image_path, (12, 12), data)


BOX = [[1, 1], [4, 4]]


def test_malformed_shapes_and_json_are_reasons_per_file(tmp_path, caplog):
    """Each of these used to crash the whole run (TypeError, ValueError, RecursionError) or be drawn as garbage."""
    source = tmp_path / "labelme"
    write_json(source / "good.json", embedded([shape("good", BOX, "rectangle")]))
    write_json(source / "type_list.json", embedded([shape("a", [[0, 0], [5, 0], [5, 5]], ["polygon"])]))
    write_json(source / "type_number.json", embedded([shape("a", BOX, 3)]))
    write_json(source / "nan_polygon.json", embedded([shape("a", [[float("nan"), 0], [5, 0], [5, 5]], "polygon")]))
    write_json(source / "nan_mask.json", embedded([shape("a", [[float("nan"), 0], [3, 3]], "mask",
                                                         mask=base64.b64encode(png_bytes((4, 4))).decode())]))
    write_json(source / "bool_point.json", embedded([shape("a", [[True, 0], [3, 3]], "rectangle")]))
    write_json(source / "list_json.json", [embedded([shape("a", BOX, "rectangle")])])
    (source / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="models.labelme"):
        summary = convert_folder(source, tmp_path / "out")
    reasons = dict(summary.failed)
    assert reasons == {
        "type_list.json": "shape 1 ('a'): shape_type must be a string, not ['polygon']",
        "type_number.json": "shape 1 ('a'): shape_type must be a string, not 3",
        "nan_polygon.json": "shape 1 ('a'): points must be a list of [x, y] numbers",
        "nan_mask.json": "shape 1 ('a'): points must be a list of [x, y] numbers",
        "bool_point.json": "shape 1 ('a'): points must be a list of [x, y] numbers",
        "list_json.json": "not a labelme file: no 'shapes' list",
        "deep.json": "not JSON (nested too deeply)",
    }
    assert summary.converted == ["good"] and summary.classes == ["_background_", "good"]
    assert (tmp_path / "out" / "labels.txt").read_text() == "_background_\ngood\n"
    assert "type_list.json: not converted: shape 1 ('a'): shape_type must be a string" in caplog.text


def test_huge_mask_bitmaps_are_refused_before_decoding(tmp_path, recwarn):
    """A mask shape's bitmap larger than its picture cannot be labelme's; a bomb must not stop the run or eat memory."""
    assert 20_000 * 9_000 > 2 * Image.MAX_IMAGE_PIXELS  # Pillow's error level
    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 < 2 * Image.MAX_IMAGE_PIXELS  # Pillow's warning level
    source = tmp_path / "labelme"
    for name, (width, height) in {"bomb": (20_000, 9_000), "big": (10_000, 10_000), "wide": (13, 4)}.items():
        bitmap = base64.b64encode(blank_1bit_png(width, height)).decode()
        write_json(source / f"{name}.json", embedded([shape("a", [[0, 0], [3, 3]], "mask", mask=bitmap)]))
    bitmap = np.zeros((4, 4), np.uint8)
    bitmap[1:3, 1:3] = 255
    fits = io.BytesIO()
    Image.fromarray(bitmap).convert("1").save(fits, format="PNG")
    write_json(source / "fits.json", embedded([shape("a", [[5, 5], [8, 8]], "mask",
                                                     mask=base64.b64encode(fits.getvalue()).decode())]))
    summary = convert_folder(source, tmp_path / "out")
    reasons = dict(summary.failed)
    assert reasons.pop("bomb.json").startswith(  # Pillow refuses to read even its size: its own words then
        "shape 1 (mask 'a'): the bitmap is too large (Image size (180000000 pixels) exceeds limit of ")
    assert reasons == {
        "big.json": "shape 1 (mask 'a'): the bitmap is 10000x10000, larger than the 12x12 picture",
        "wide.json": "shape 1 (mask 'a'): the bitmap is 13x4, larger than the 12x12 picture",
    }
    assert summary.converted == ["fits"]
    assert (mask_of(tmp_path / "out", "fits")[6:8, 6:8] == 1).all()
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_pictures_over_pillows_bomb_levels(tmp_path, monkeypatch, recwarn, caplog):
    """Over the error level: that file's reason; over the warning level: converted, with a warning in the file's name.

    The levels are lowered (Pillow reads them at each open) so that real, small pictures cross them.
    """
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # warns over 100 pixels, refuses over 200
    source = tmp_path / "labelme"
    write_json(source / "over_warning.json", embedded([shape("a", BOX, "rectangle")], png_bytes((12, 12))))
    write_json(source / "over_error.json", embedded([shape("a", BOX, "rectangle")], png_bytes((15, 15))))
    with caplog.at_level(logging.WARNING, logger="models.labelme"):
        summary = convert_folder(source, tmp_path / "out")
    assert [rel for rel, _ in summary.failed] == ["over_error.json"]
    assert summary.failed[0][1].startswith("imageData: not a readable picture (Image size (225 pixels) exceeds limit")
    assert summary.converted == ["over_warning"] and summary.warnings == 1
    assert "over_warning.json: the picture is 12x12, over Pillow's decompression-bomb warning level" in caplog.text
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_unreadable_pictures_are_reasons_per_file(tmp_path):
    """Truncated or foreign bytes, in imageData or at imagePath, and no picture at all: one reason each."""
    source = tmp_path / "labelme"
    whole = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(whole, format="PNG")
    truncated = whole.getvalue()[: len(whole.getvalue()) // 2]
    write_json(source / "good.json", embedded([shape("good", BOX, "rectangle")]))
    write_json(source / "cut_data.json", embedded([shape("a", BOX, "rectangle")], truncated))
    write_json(source / "text_data.json", embedded([shape("a", BOX, "rectangle")], b"not a picture at all"))
    (source / "cut.png").write_bytes(truncated)
    write_json(source / "cut_file.json", labelme_document([shape("a", BOX, "rectangle")], "cut.png", (64, 64), None))
    write_json(source / "nothing.json", labelme_document([shape("a", BOX, "rectangle")], "gone.png", (64, 64), None))
    write_json(source / "no_path.json", labelme_document([shape("a", BOX, "rectangle")], None, (64, 64), None))
    summary = convert_folder(source, tmp_path / "out")
    reasons = dict(summary.failed)
    assert set(reasons) == {"cut_data.json", "text_data.json", "cut_file.json", "nothing.json", "no_path.json"}
    assert reasons["cut_data.json"].startswith("imageData: not a readable picture (")
    assert reasons["text_data.json"] == "imageData: not a readable picture (not a format Pillow knows)"
    assert reasons["cut_file.json"].startswith("imagePath 'cut.png': not a readable picture (")
    assert "0x" not in reasons["cut_data.json"] + reasons["cut_file.json"]  # no object addresses in a reason
    assert reasons["nothing.json"].startswith("imagePath 'gone.png': no file at ")
    assert reasons["no_path.json"] == "no imageData and no imagePath"
    assert summary.converted == ["good"]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["good.png", "good.png",
                                                                                     "labels.txt"]


def test_labels_are_stripped_and_control_characters_refused(tmp_path, caplog):
    """` cat ` is `cat` (labelme strips what is typed); a label that would break labels.txt is refused, naming it."""
    source = tmp_path / "labelme"
    write_json(source / "spaced.json", embedded([shape(" cat ", BOX, "rectangle")]))
    write_json(source / "plain.json", embedded([shape("cat", [[6, 6], [8, 8]], "rectangle")]))
    write_json(source / "newline.json", embedded([shape("dog", BOX, "rectangle"), shape("ca\nt", BOX, "rectangle")]))
    write_json(source / "tab.json", embedded([shape("x\ty", BOX, "rectangle")]))
    write_json(source / "separator.json", embedded([shape("x\u2028y", BOX, "rectangle")]))
    write_json(source / "blank.json", embedded([shape("  ", BOX, "rectangle")]))
    with caplog.at_level(logging.WARNING, logger="models.labelme"):
        summary = convert_folder(source, tmp_path / "out")
    assert dict(summary.failed) == {
        "newline.json": "shape 2: label 'ca\\nt' has a control character or line break",
        "tab.json": "shape 1: label 'x\\ty' has a control character or line break",
        "separator.json": "shape 1: label 'x\\u2028y' has a control character or line break",
        "blank.json": "shape 1: empty label",
    }
    assert summary.converted == ["plain", "spaced"]
    assert summary.classes == ["_background_", "cat"]
    assert (tmp_path / "out" / "labels.txt").read_text() == "_background_\ncat\n"
    assert mask_of(tmp_path / "out", "spaced")[2, 2] == 1 and mask_of(tmp_path / "out", "plain")[7, 7] == 1
    assert "spaced.json: label ' cat ' read as 'cat'" in caplog.text


def test_labels_file_is_checked_the_same_way(tmp_path):
    source = tmp_path / "labelme"
    write_json(source / "a.json", embedded([shape(" cat", BOX, "rectangle")]))
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ncat \n", encoding="utf-8")
    summary = convert_folder(source, tmp_path / "out", labels=labels)
    assert summary.converted == ["a"] and summary.classes == ["_background_", "cat"]
    labels.write_text("cat\nblack\tcat\n", encoding="utf-8")
    with pytest.raises(LabelmeError, match=r"labels.txt: label 'black\\tcat' has a control character"):
        convert_folder(source, tmp_path / "out2", labels=labels)
    labels.write_text("cat\n cat\n", encoding="utf-8")
    with pytest.raises(LabelmeError, match="labels.txt: classes listed twice: cat"):
        convert_folder(source, tmp_path / "out3", labels=labels)


def test_image_path_outside_the_folder_is_refused_unless_allowed(tmp_path):
    source = tmp_path / "labelme"
    (tmp_path / "outside.png").write_bytes(png_bytes())
    (source / "sub").mkdir(parents=True)
    (source / "inside.png").write_bytes(png_bytes())
    write_json(source / "relative.json", labelme_document([shape("a", BOX, "rectangle")], "../outside.png",
                                                          (12, 12), None))
    write_json(source / "absolute.json", labelme_document([shape("a", BOX, "rectangle")],
                                                          str(tmp_path / "outside.png"), (12, 12), None))
    write_json(source / "sub" / "up_inside.json", labelme_document([shape("a", BOX, "rectangle")],
                                                                   "../inside.png", (12, 12), None))
    (source / "escape").symlink_to(tmp_path, target_is_directory=True)
    write_json(source / "via_link.json", labelme_document([shape("a", BOX, "rectangle")], "escape/outside.png",
                                                          (12, 12), None))
    summary = convert_folder(source, tmp_path / "out")
    assert dict(summary.failed) == {
        "relative.json": "imagePath '../outside.png' is outside the labelme folder (--allow-outside to follow it)",
        "absolute.json": f"imagePath '{tmp_path / 'outside.png'}' is outside the labelme folder "
                         "(--allow-outside to follow it)",
        "via_link.json": "imagePath 'escape/outside.png' is outside the labelme folder (--allow-outside to follow it)",
    }
    assert summary.converted == ["sub/up_inside"]
    allowed = convert_folder(source, tmp_path / "out2", allow_outside=True)
    assert allowed.failed == [] and len(allowed.converted) == 4


def test_a_pair_that_cannot_be_written_leaves_no_half(tmp_path):
    """The picture and its mask are written together or not at all (each atomically, then rename)."""
    source = tmp_path / "labelme"
    write_json(source / "blocked.json", embedded([shape("a", BOX, "rectangle")]))
    write_json(source / "fine.json", embedded([shape("a", BOX, "rectangle")]))
    (tmp_path / "out" / "annotations" / "blocked.png").mkdir(parents=True)  # something in the mask's way
    summary = convert_folder(source, tmp_path / "out")
    assert [rel for rel, _ in summary.failed] == ["blocked.json"]
    assert not (tmp_path / "out" / "images" / "blocked.png").exists()
    assert summary.converted == ["fine"] and (tmp_path / "out" / "images" / "fine.png").is_file()
    assert not list((tmp_path / "out").rglob("*.part"))


def test_scrapy_masks_command_with_hostile_files(tmp_path):
    """The command as users run it: each bad file is named with its reason, the good ones converted, labels.txt sound."""
    source = write_labelme_folder(tmp_path / "labelme", 3, seed=11)
    (tmp_path / "outside.png").write_bytes(png_bytes())
    write_json(source / "type_list.json", embedded([shape("box", [[0, 0], [5, 0], [5, 5]], ["polygon"])]))
    bomb = base64.b64encode(blank_1bit_png(20_000, 9_000)).decode()
    write_json(source / "bomb.json", embedded([shape("box", [[0, 0], [3, 3]], "mask", mask=bomb)]))
    write_json(source / "spaced.json", embedded([shape(" box ", BOX, "rectangle")]))
    write_json(source / "newline.json", embedded([shape("ci\nrcle", BOX, "rectangle")]))
    write_json(source / "outside.json", labelme_document([shape("box", BOX, "rectangle")], "../outside.png",
                                                         (12, 12), None))
    dest = tmp_path / "dataset"
    command = [sys.executable, "-m", "scrapy", "masks", str(source), str(dest), "--no-progress"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith(f"Converted 4 labelme files to {dest}/images and {dest}/annotations; 4 failed")
    assert "  failed: bomb.json: shape 1 (mask 'box'): the bitmap is too large (Image size (180000000 pixels)" in done.stdout
    for line in ["  failed: newline.json: shape 1: label 'ci\\nrcle' has a control character or line break",
                 "  failed: outside.json: imagePath '../outside.png' is outside the labelme folder "
                 "(--allow-outside to follow it)",
                 "  failed: type_list.json: shape 1 ('box'): shape_type must be a string, not ['polygon']"]:
        assert line in done.stdout.splitlines()
    assert "ERROR: bomb.json: not converted: " in done.stderr
    assert "WARNING: spaced.json: label ' box ' read as 'box'" in done.stderr
    assert "Traceback" not in done.stderr
    assert (dest / "labels.txt").read_text() == "_background_\nbox\ncircle\n"  # seed 11 draws boxes and circles
    assert len(list((dest / "annotations").rglob("*.png"))) == 4

    allowed = subprocess.run([*command, "--allow-outside"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 1 and "; 3 failed" in allowed.stdout.splitlines()[0]
    assert (dest / "annotations" / "outside.png").is_file()


def test_dest_over_the_input_is_refused_and_the_users_files_stay_as_they_were(tmp_path):
    """labelme's own layout keeps labels.txt (with __ignore__) beside the JSON files: DEST = that folder
    used to replace it with the converted list, dropping __ignore__."""
    source = write_labelme_folder(tmp_path / "labelme", 3, seed=2)
    (source / "labels.txt").write_text("__ignore__\n_background_\na\nb\n", encoding="utf-8")
    (source / "images").mkdir()
    write_picture(source / "images" / "mine.png")
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    for dest, labels, message in (
        (source, None, "DEST {d} is LABELME_DIR"),
        (source / "masks", None, "DEST {d} is inside LABELME_DIR"),
        (tmp_path, None, "DEST {d} holds LABELME_DIR"),
        (source, source / "labels.txt", "DEST {d} is LABELME_DIR"),
        (tmp_path / "out", tmp_path / "out" / "labels.txt", "--labels {l} is the labels.txt this run writes in DEST"),
    ):
        if labels is not None and not labels.exists():
            labels.parent.mkdir(parents=True, exist_ok=True)
            labels.write_text("_background_\na\n", encoding="utf-8")
        with pytest.raises(LabelmeError, match=message.format(d=dest, l=labels).replace("(", r"\(")):
            convert_folder(source, dest, labels=labels)
    link = tmp_path / "same"
    link.symlink_to(source)  # the same folder by another name
    done = subprocess.run([sys.executable, "-m", "scrapy", "masks", str(source), str(link), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"DEST {link} is LABELME_DIR" in done.stderr, done.stderr
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before
