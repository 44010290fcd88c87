"""Re-curation in-process: inputs, content addresses, skipping by model version, re-deciding, file moves.

The command itself (subprocesses, real models, kill -9) is tested in tests/crawler/test_curate_command.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scrapy.settings import Settings

from catalog.store import Catalog
from jobs.curate import CurateError, Curator, choose_stages
from models.faces import synthetic_face
from models.imaging import flatten_on_white
from stages.convert import to_jpeg
from stages.picture_model import open_pictures
from tests.conftest import project_settings

CLASSIFIER = "classifier-0123456789ab"
KEEP_MONA = json.dumps([{"action": "keep", "if": "classifier", "min": 0.8}])


def settings(output, **overrides) -> Settings:
    return Settings(project_settings(OUTPUT_DIR=str(output), IMAGE_WORKERS=0, **overrides))


def picture(path, color, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def local_id(path) -> str:
    return "local:" + hashlib.sha256(path.read_bytes()).hexdigest()[:20]


def crawled(catalog: Catalog, root, artwork_id: str, score: float, status: str = "kept") -> None:
    """A crawled one-page artwork, as the crawl leaves it: its JPEG in images/ (or dropped/), its
    classifier score, and the curation_runs row the crawl writes for it."""
    folder = "images" if status == "kept" else "dropped"
    picture(root / folder / f"{artwork_id}_p0.jpg", (200, 100, 50))
    catalog.record_artwork(
        {"id": artwork_id, "title": "t", "status": "ok", "page_count": 1, "x_restrict": 0, "ai_type": 1,
         "tags": [{"name": "原神"}]},
        [{"page": 0, "path": f"{folder}/{artwork_id}_p0.jpg", "status": status,
          "reason": None if status == "kept" else "drop: earlier rules",
          "classifier": {"label": "mona" if score >= 0.5 else "other", "target": "mona", "score": score,
                         "model": CLASSIFIER}}],
        "2024-01-01T00:00:00+00:00",
    )


def run(output, paths=(), stages=(), **overrides):
    curator = Curator(settings(output, **overrides), list(stages), progress=False)
    try:
        summary = curator.run(curator.collect(list(paths)), report=str(output / "report.jsonl"))
    finally:
        curator.close()
    lines = [json.loads(line) for line in (output / "report.jsonl").read_text().splitlines()]
    return summary, lines


def rows(db, sql, params=()):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_stages_default_to_the_configured_ones_and_a_named_one_needs_its_model(tmp_path):
    assert choose_stages(settings(tmp_path), None) == ["faces"]  # on by default: it needs no model file
    assert choose_stages(settings(tmp_path, FACES_ENABLED=False), None) == []
    configured = settings(tmp_path, FACES_ENABLED=True, CLASSIFIER_MODEL="m.keras", TAGGER_PROJECT="dd/")
    assert choose_stages(configured, None) == ["faces", "classify", "tag"]
    assert choose_stages(configured, "tag,faces") == ["faces", "tag"]
    assert choose_stages(settings(tmp_path), "faces") == ["faces"]  # needs no model file
    assert choose_stages(settings(tmp_path), "") == []
    with pytest.raises(CurateError, match="unknown stage 'tags' in --stages; known: faces, classify, tag"):
        choose_stages(configured, "tags")
    with pytest.raises(CurateError, match="--stages classify needs CLASSIFIER_MODEL"):
        choose_stages(settings(tmp_path), "classify")
    with pytest.raises(CurateError, match="--stages tag needs TAGGER_PROJECT"):
        choose_stages(settings(tmp_path, CLASSIFIER_MODEL="m.keras"), "classify,tag")


def test_the_crawl_records_which_model_saw_each_page_and_a_rewrite_forgets_it(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    tags = [{"tag": "red", "category": "General", "score": 0.9, "model": "dd-1"}]
    catalog.record_artwork({"id": "1", "status": "ok", "page_count": 3}, [
        {"page": 0, "status": "kept", "classifier": {"label": "mona", "target": "mona", "score": 0.9, "model": "c-1"},
         "classifier_model": "c-1", "model_tags": tags, "tagger_model": "dd-1", "faces": [], "faces_model": "f-1"},
        {"page": 1, "status": "kept", "tagger_model": "dd-1", "model_tags": [],  # tagged, nothing above threshold
         "classifier_model": "c-1", "classifier_error": "could not read images/1_p1.jpg"},
        {"page": 2, "status": "failed", "reason": "truncated"},
    ], "now")
    assert sorted(rows(tmp_path / "catalog.db", "SELECT page, stage, model, error FROM curation_runs")) == [
        (0, "classify", "c-1", None), (0, "faces", "f-1", None), (0, "tag", "dd-1", None),
        (1, "classify", "c-1", "could not read images/1_p1.jpg"), (1, "tag", "dd-1", None),
    ]
    assert catalog.stage_done("1", 0, "classify", "c-1") and not catalog.stage_done("1", 0, "classify", "c-2")
    assert not catalog.stage_done("1", 1, "classify", "c-1")  # it failed: try again
    assert catalog.stage_done("1", 1, "tag", "dd-1") and not catalog.stage_done("1", 2, "faces", "f-1")
    assert rows(tmp_path / "catalog.db", "SELECT classifier_target FROM images WHERE page = 0") == [("mona",)]
    catalog.record_artwork({"id": "1", "status": "ok", "page_count": 1}, [{"page": 0, "status": "kept"}], "later")
    assert rows(tmp_path / "catalog.db", "SELECT count(*) FROM curation_runs") == [(0,)]


def test_an_older_catalogue_counts_stored_results_as_done(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    crawled(catalog, tmp_path, "7", 0.9)
    catalog.replace_model_tags("7", 0, "dd-1", [{"tag": "red", "score": 0.9}])
    catalog.conn.commit()
    catalog.conn.execute("DELETE FROM curation_runs")  # as before there was such a table
    catalog.conn.commit()
    assert catalog.stage_done("7", 0, "classify", CLASSIFIER)
    assert not catalog.stage_done("7", 0, "classify", "classifier-other")
    assert catalog.stage_done("7", 0, "tag", "dd-1") and not catalog.stage_done("7", 0, "tag", "dd-2")
    assert not catalog.stage_done("7", 0, "faces", "anything")


def test_the_same_failure_again_leaves_the_row_as_it_was(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    with catalog.batch():
        catalog.record_stage_run("1", 0, "tag", "dd-1", "broken", "first")
    with catalog.batch():
        catalog.record_stage_run("1", 0, "tag", "dd-1", "broken", "second")
    assert rows(tmp_path / "catalog.db", "SELECT processed_at, error FROM curation_runs") == [("first", "broken")]
    with catalog.batch():
        catalog.record_stage_run("1", 0, "tag", "dd-2", "broken", "third")  # another model: recorded
    with catalog.batch():
        catalog.record_stage_run("1", 0, "tag", "dd-2", None, "fourth")  # it ran: recorded
    assert rows(tmp_path / "catalog.db", "SELECT model, processed_at, error FROM curation_runs") == [
        ("dd-2", "fourth", None)]


def test_folder_pictures_are_content_addressed_and_stay_where_they_are(tmp_path):
    out = tmp_path / "out"
    red = picture(tmp_path / "a" / "red.jpg", (250, 10, 10))
    (tmp_path / "b").mkdir()
    copy = tmp_path / "b" / "same.jpg"
    copy.write_bytes(red.read_bytes())
    blue = picture(tmp_path / "b" / "deep" / "blue.PNG", (10, 10, 250), size=(20, 50))
    (tmp_path / "b" / ".hidden.jpg").write_bytes(red.read_bytes())
    (tmp_path / "b" / "notes.txt").write_text("not a picture")
    inside = picture(out / "mine" / "green.webp", (10, 250, 10))

    summary, report = run(out, [tmp_path / "a", tmp_path / "b", inside])

    db = out / "catalog.db"
    images = rows(db, "SELECT artwork_id, page, path, width, height, format, status, reason FROM images ORDER BY path")
    assert images == [
        (local_id(red), 0, str(red), 40, 30, "jpeg", "kept", None),
        (local_id(blue), 0, str(blue), 20, 50, "png", "kept", None),
        (local_id(inside), 0, "mine/green.webp", 40, 30, "webp", "kept", None),  # relative inside OUTPUT_DIR
    ]
    artworks = rows(db, "SELECT id, title, page_count, tags, status FROM artworks ORDER BY title")
    assert artworks == [(local_id(blue), "blue.PNG", 1, "[]", "ok"), (local_id(inside), "green.webp", 1, "[]", "ok"),
                        (local_id(red), "red.jpg", 1, "[]", "ok")]
    assert [line["path"] for line in report] == [str(red), str(blue), str(copy), str(inside)]  # input order
    assert report[2] == {**report[0], "path": str(copy)}  # one picture, two files
    assert (summary.pictures, summary.new_pictures, summary.duplicates) == (3, 3, 1)
    # No rules: what the new pictures became, and why, is said (not just "unchanged").
    said = "\n".join(summary.lines(db, None))
    assert "the 3 pictures new from folders are catalogued as kept, as chosen by hand" in said

    # the library moved: the same pictures, found elsewhere, keep their rows and get their new place
    before = rows(db, "SELECT * FROM artworks")
    moved = tmp_path / "moved.jpg"
    red.rename(moved)
    summary, _ = run(out, [moved])
    assert summary.new_pictures == 0
    assert "  decisions: unchanged (no curation rules configured)" in summary.lines(db, None)
    assert rows(db, "SELECT path FROM images WHERE artwork_id = ?", (local_id(moved),)) == [(str(moved),)]
    assert rows(db, "SELECT * FROM artworks") == before


def test_faces_of_folder_pictures_get_file_system_safe_crop_names(tmp_path):
    out = tmp_path / "out"
    face = tmp_path / "lib" / "face.png"
    face.parent.mkdir()
    synthetic_face(160).save(face)
    blank = picture(tmp_path / "lib" / "blank.jpg", (255, 255, 255), size=(120, 120))

    summary, report = run(out, [tmp_path / "lib"], stages=["faces"], FACES_DETECTORS="animeface")

    assert summary.processed["faces"] == 2
    by_path = {line["path"]: line for line in report}
    assert by_path[str(blank)]["faces"] == []
    [[x, y, w, h]] = by_path[str(face)]["faces"]
    assert 20 < x < 80 and 40 < y < 100 and 40 < w < 100
    stem = local_id(face).replace(":", "_")
    assert rows(out / "catalog.db", "SELECT path FROM faces") == [(f"faces/{stem}_p0_f0.jpg",)]
    assert (out / "faces" / f"{stem}_p0_f0.jpg").is_file()
    assert rows(out / "catalog.db", "SELECT DISTINCT model FROM curation_runs") == [(summary.versions["faces"],)]
    assert "animeface" in summary.versions["faces"]


def test_rules_decide_again_and_move_crawled_files_but_never_library_files(tmp_path):
    out = tmp_path / "out"
    catalog = Catalog(out / "catalog.db")
    crawled(catalog, out, "10", 0.95)                    # kept, stays kept
    crawled(catalog, out, "11", 0.30)                    # kept, now dropped
    crawled(catalog, out, "12", 0.90, status="dropped")  # dropped by earlier rules, now kept
    library = picture(tmp_path / "lib" / "mine.jpg", (1, 2, 3))
    run(out, [library])  # catalogued as it is, then scored low
    with catalog.batch():
        catalog.set_classifier(local_id(library), 0, {"label": "other", "score": 0.1, "target": "mona", "model": CLASSIFIER})
    catalog.close()

    summary, report = run(out, [out, library], CURATE_RULES=KEEP_MONA, CURATE_DEFAULT="drop")

    db = out / "catalog.db"
    assert rows(db, "SELECT artwork_id, path, status, reason FROM images ORDER BY artwork_id") == [
        ("10", "images/10_p0.jpg", "kept", f"keep: classifier mona 0.950 >= 0.8 ({CLASSIFIER}) (rule 1)"),
        ("11", "dropped/11_p0.jpg", "dropped", "drop: no rule matched (CURATE_DEFAULT)"),
        ("12", "images/12_p0.jpg", "kept", f"keep: classifier mona 0.900 >= 0.8 ({CLASSIFIER}) (rule 1)"),
        (local_id(library), str(library), "dropped", "drop: no rule matched (CURATE_DEFAULT)"),
    ]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["10_p0.jpg", "12_p0.jpg"]
    assert sorted(p.name for p in (out / "dropped").iterdir()) == ["11_p0.jpg"]
    assert library.is_file()  # a user's file is never moved
    assert (summary.now_dropped, summary.now_kept, summary.reasons_updated) == (2, 1, 1)
    assert [(line["path"], line["decision"]) for line in report] == [
        ("images/10_p0.jpg", "kept"), ("dropped/11_p0.jpg", "dropped"), ("images/12_p0.jpg", "kept"),
        (str(library), "dropped"),  # the catalogue lists it too: the second input is a copy of it
        (str(library), "dropped"),
    ]
    assert report[0]["classifier"] == {"label": "mona", "score": 0.95, "target": "mona", "model": CLASSIFIER}
    assert report[0]["faces"] is None and report[0]["tags"] == {}

    # the same rules again: nothing to change
    summary, _ = run(out, [], CURATE_RULES=KEEP_MONA, CURATE_DEFAULT="drop")
    assert (summary.now_dropped, summary.now_kept, summary.reasons_updated, summary.decided) == (0, 0, 0, 4)

    # deleting dropped pictures deletes crawled files only
    run(out, [], CURATE_RULES=json.dumps([{"action": "drop", "if": "classifier", "max": 0.92}]),
        CURATE_DELETE_DROPPED=True)
    assert rows(db, "SELECT artwork_id, path, status FROM images WHERE status = 'dropped' ORDER BY artwork_id") == [
        ("11", None, "dropped"), ("12", None, "dropped"), (local_id(library), str(library), "dropped")]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["10_p0.jpg"]
    assert not list((out / "dropped").iterdir()) and library.is_file()


def test_without_rules_decisions_stay_and_the_report_says_them(tmp_path):
    out = tmp_path / "out"
    catalog = Catalog(out / "catalog.db")
    crawled(catalog, out, "12", 0.9, status="dropped")
    catalog.close()
    summary, [line] = run(out)
    assert summary.decided == 0
    assert (line["path"], line["decision"], line["reason"]) == ("dropped/12_p0.jpg", "dropped", "drop: earlier rules")
    assert (out / "dropped" / "12_p0.jpg").is_file()


def test_a_move_that_a_killed_run_left_uncommitted_is_undone(tmp_path):
    out = tmp_path / "out"
    catalog = Catalog(out / "catalog.db")
    crawled(catalog, out, "20", 0.9)
    catalog.close()
    (out / "dropped").mkdir()
    (out / "images" / "20_p0.jpg").rename(out / "dropped" / "20_p0.jpg")  # moved, then killed before the commit
    summary, [line] = run(out)
    assert (out / "images" / "20_p0.jpg").is_file() and not (out / "dropped" / "20_p0.jpg").exists()
    assert line["path"] == "images/20_p0.jpg" and not summary.failures


def test_a_missing_crawled_file_is_a_failure_not_a_crash(tmp_path):
    out = tmp_path / "out"
    catalog = Catalog(out / "catalog.db")
    crawled(catalog, out, "30", 0.9)
    crawled(catalog, out, "31", 0.9)
    catalog.close()
    (out / "images" / "30_p0.jpg").unlink()
    summary, report = run(out, stages=["faces"], FACES_DETECTORS="animeface")
    assert summary.processed["faces"] == 1 and summary.failed["faces"] == 1
    assert "30_p0.jpg is missing" in summary.failures["images/30_p0.jpg"]
    assert rows(out / "catalog.db", "SELECT artwork_id, error IS NOT NULL FROM curation_runs WHERE stage = 'faces' ORDER BY 1") == [
        ("30", 1), ("31", 0)]
    assert report[0]["faces"] is None and report[1]["faces"] == []


def test_another_catalogue_is_refused_with_the_way_to_do_it(tmp_path):
    other = tmp_path / "other"
    Catalog(other / "catalog.db").close()
    curator = Curator(settings(tmp_path / "out"), [], progress=False)
    try:
        with pytest.raises(CurateError, match=r"another catalogue .* -s OUTPUT_DIR=.*other"):
            curator.collect([str(other)])
        with pytest.raises(CurateError, match="another catalogue"):
            curator.collect([str(other / "catalog.db")])
        with pytest.raises(CurateError, match="no such file or folder"):
            curator.collect([str(tmp_path / "nowhere")])
        assert curator.collect([str(tmp_path / "out")]) == []  # the project's own: fine
    finally:
        curator.close()


# --- odd inputs: 16-bit pictures, names that are not UTF-8, broken symbolic links -----------------


def gradient_16bit(width=256, height=8) -> Image.Image:
    """A real 16-bit grayscale picture (mode I;16): a left-to-right ramp over the whole 0..65535 range."""
    row = np.linspace(0, 65535, width).round().astype("<u2")
    return Image.frombytes("I;16", (width, height), np.tile(row, (height, 1)).tobytes())


def assert_ramp(rgb: np.ndarray) -> None:
    """The 16-bit ramp brought to 8 bits: full range to full range, gray, increasing (never clipped white)."""
    ramp = rgb[0, :, 0].astype(int)
    assert ramp[0] == 0 and ramp[-1] == 255
    assert (np.diff(ramp) >= 0).all() and len(set(ramp.tolist())) > 200
    assert (rgb == rgb[..., :1]).all()  # gray stays gray
    assert abs(int(ramp[128]) - 128) <= 2  # the middle stays in the middle


def test_a_16_bit_png_reaches_the_models_with_its_gradient(tmp_path):
    """Pillow's convert("RGB") clips 16-bit values at 255: all but the darkest pixels came out white."""
    png = tmp_path / "ramp16.png"
    gradient_16bit().save(png)
    with Image.open(png) as opened:
        assert opened.mode == "I;16"  # what a 16-bit grayscale PNG opens as

    images, readable, errors = open_pictures(Path("/"), [str(png)])  # classify and tag (curate and crawl)
    assert readable == [0] and errors == [None] and images[0].mode == "RGB"
    assert_ramp(np.asarray(images[0]))
    with Image.open(png) as opened:  # faces, the JPEG stage, export, thumbnails
        assert_ramp(np.asarray(flatten_on_white(opened).convert("RGB")))
    converted = to_jpeg(png.read_bytes())
    with Image.open(io.BytesIO(converted.data)) as jpeg:
        ramp = np.asarray(jpeg.convert("RGB"))[4, :, 0].astype(int)
    assert ramp[:8].max() < 10 and ramp[-8:].min() > 245 and abs(int(ramp[128]) - 128) <= 6  # lossy, not clipped


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_other_16_bit_layouts_are_scaled_the_same_way(mode):
    image = gradient_16bit().convert("I") if mode == "I" else Image.frombytes(
        "I;16B", (256, 8), np.tile(np.linspace(0, 65535, 256).round().astype(">u2"), (8, 1)).tobytes())
    assert image.mode == mode
    assert_ramp(np.asarray(flatten_on_white(image).convert("RGB")))


def test_an_8_bit_picture_is_flattened_as_before():
    gray = Image.new("L", (4, 4), 77)
    rgb = Image.new("RGB", (4, 4), (1, 2, 3))
    assert flatten_on_white(gray) is gray and flatten_on_white(rgb) is rgb
    half = Image.new("RGBA", (2, 2), (0, 0, 0, 128))
    assert flatten_on_white(half).getpixel((0, 0)) == (127, 127, 127)


def test_a_file_name_that_is_not_utf8_is_catalogued_and_reported_on_every_run(tmp_path):
    out = tmp_path / "out"
    library = tmp_path / "lib"
    odd = Path(os.fsdecode(os.fsencode(library) + b"/\xff\xfe.png"))  # a name no UTF-8 text can hold
    picture(odd, (30, 60, 90))
    plain = picture(library / "plain.png", (90, 60, 30))
    shown = str(library) + "/\\xff\\xfe.png"  # how the catalogue, report and log write it

    for _ in range(2):  # the second run finds it catalogued by that name and changes nothing
        summary, report = run(out, [library], stages=["faces"], FACES_DETECTORS="animeface")
        assert [line["path"] for line in report] == [str(plain), shown]  # sorted as Python sorts the names
        assert [line["decision"] for line in report] == ["kept", "kept"] and not summary.failures
    assert summary.skipped["faces"] == 2 and summary.new_pictures == 0
    assert rows(out / "catalog.db", "SELECT title FROM artworks ORDER BY title") == [("\\xff\\xfe.png",), ("plain.png",)]
    assert rows(out / "catalog.db", "SELECT path FROM images WHERE artwork_id = ?", (local_id(odd),)) == [(shown,)]

    # from the catalogue alone: the written name leads back to the file, which is read again
    summary, report = run(out, [], stages=["faces"], FACES_DETECTORS="animeface", CURATE_RULES=KEEP_MONA,
                          CURATE_DEFAULT="drop")
    assert summary.processed["faces"] == 0 and summary.skipped["faces"] == 2 and not summary.failures
    assert sorted((line["path"], line["decision"]) for line in report) == [(shown, "dropped"), (str(plain), "dropped")]
    assert odd.is_file()  # a user's file stays where it is

    # a catalogue where the names hold such bytes too
    deep = Path(os.fsdecode(os.fsencode(tmp_path) + b"/out-\xe9"))
    summary, report = run(deep, [odd])
    assert report[0]["path"] == shown and summary.lines(deep / "catalog.db", None)[0].endswith("/out-\\xe9/catalog.db")
    assert "\\xe9" in "\n".join(summary.lines(deep / "catalog.db", str(deep / "report.jsonl")))


def test_a_broken_symbolic_link_is_a_reported_failure(tmp_path, caplog):
    out = tmp_path / "out"
    library = tmp_path / "lib"
    plain = picture(library / "plain.png", (90, 60, 30))
    dangling = library / "gone.jpg"
    dangling.symlink_to(tmp_path / "deleted.jpg")

    with caplog.at_level(logging.WARNING, logger="jobs.curate"):
        summary, report = run(out, [library], stages=["faces"], FACES_DETECTORS="animeface")

    reason = f"a broken symbolic link to {tmp_path / 'deleted.jpg'}: No such file or directory"
    assert report[0] == {"path": str(dangling), "faces": None, "classifier": None, "tags": {}, "decision": "failed",
                         "reason": reason}
    assert report[1]["path"] == str(plain) and report[1]["decision"] == "kept"
    assert summary.failures == {str(dangling): reason} and summary.processed["faces"] == 1
    assert f"Curate (failed): {dangling}: {reason}" in caplog.text
    assert any(line == f"    {dangling}: {reason}" for line in summary.lines(out / "catalog.db", None))
    assert rows(out / "catalog.db", "SELECT path FROM images") == [(str(plain),)]  # no content: not catalogued


# --- the filters: pixel statistics taken at curate time, duplicates grouped ---------------------------


def colour_scene(size=(300, 400), seed=0) -> Image.Image:
    """A colourful picture whose layout depends on ``seed``, so two seeds are two different pictures."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (300, 400), tuple(int(v) for v in rng.integers(60, 200, 3)))
    for _ in range(12):
        x, y = rng.integers(0, 260), rng.integers(0, 360)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        image.paste(color, (int(x), int(y), int(x + rng.integers(20, 120)), int(y + rng.integers(20, 120))))
    return image.resize(size)


def stored(catalog: Catalog, root, artwork_id: str, image: Image.Image, *, page: int = 0, bookmarks=None,
           data: bytes | None = None) -> bytes:
    """A crawled page as a catalogue older than the pixel statistics holds it: no colorfulness, no phash."""
    relative = f"images/{artwork_id}_p{page}.jpg"
    (root / "images").mkdir(parents=True, exist_ok=True)
    if data is None:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90)
        data = out.getvalue()
    (root / relative).write_bytes(data)
    catalog.record_artwork(
        {"id": artwork_id, "title": "t", "status": "ok", "page_count": page + 1, "bookmark_count": bookmarks,
         "tags": []},
        [{"page": p, "path": relative if p == page else None, "status": "kept" if p == page else "failed",
          "reason": None if p == page else "gone", "sha256": hashlib.sha256(data).hexdigest() if p == page else None,
          "width": image.width, "height": image.height} for p in range(page + 1)],
        "2024-01-01T00:00:00+00:00",
    )
    return data


def test_curate_measures_pictures_that_lack_statistics_once_and_the_monochrome_rule_drops(tmp_path):
    out = tmp_path / "out"
    catalog = Catalog(out / "catalog.db")
    stored(catalog, out, "40", colour_scene())
    stored(catalog, out, "41", colour_scene().convert("L").convert("RGB"))
    catalog.close()
    assert rows(out / "catalog.db", "SELECT count(colorfulness) FROM images") == [(0,)]
    rules = json.dumps([{"action": "drop", "if": "monochrome"}])

    summary, report = run(out, CURATE_RULES=rules)

    assert summary.measured == 2
    assert "  pixel statistics: 2 pictures measured (colorfulness, line art, phash)" in summary.lines(out / "catalog.db", None)
    stats = dict(rows(out / "catalog.db", "SELECT artwork_id, colorfulness FROM images"))
    assert stats["40"] > 20 and stats["41"] < 1
    assert [(line["path"], line["decision"]) for line in report] == [
        ("images/40_p0.jpg", "kept"), ("dropped/41_p0.jpg", "dropped")]
    assert report[1]["reason"] == f"drop: monochrome (colorfulness {stats['41']:.1f} <= 3) (rule 1)"

    summary, _ = run(out, CURATE_RULES=rules)  # measured once: the second run reads the stored numbers
    assert summary.measured == 0 and (summary.now_dropped, summary.reasons_updated) == (0, 0)


def test_a_duplicate_rule_keeps_the_best_copy_and_names_it_in_the_others_reasons(tmp_path):
    out = tmp_path / "out"
    catalog = Catalog(out / "catalog.db")
    scene = colour_scene(seed=1)
    big = stored(catalog, out, "300", scene.resize((600, 800)), bookmarks=5)      # the most pixels: kept
    stored(catalog, out, "200", scene.crop((4, 4, 296, 396)), bookmarks=900)       # cropped copy: near
    stored(catalog, out, "301", scene.resize((600, 800)), data=big, page=1)        # the same bytes: exact
    other = colour_scene(seed=2)
    stored(catalog, out, "500", other, bookmarks=10)                               # the same size as 501:
    stored(catalog, out, "501", other, bookmarks=20)                               # more bookmarks wins
    stored(catalog, out, "600", other.convert("L").convert("RGB").resize((900, 1200)))  # largest, dropped
    stored(catalog, out, "700", colour_scene(seed=3))                              # a picture of its own
    catalog.close()
    rules = json.dumps([{"action": "drop", "if": "monochrome"}, {"action": "drop", "if": "duplicate"}])

    summary, report = run(out, CURATE_RULES=rules)

    decided = {line["path"].split("/")[1]: (line["decision"], line["reason"]) for line in report}
    distance = re.search(r"phash distance (\d+)", decided["200_p0.jpg"][1])
    assert distance and 0 < int(distance[1]) <= 6
    assert decided == {
        "300_p0.jpg": ("kept", "keep: no rule matched (CURATE_DEFAULT)"),
        "200_p0.jpg": ("dropped", f"drop: near-duplicate of 300 p0 (phash distance {distance[1]}) (rule 2)"),
        "301_p1.jpg": ("dropped", "drop: exact duplicate of 300 p0 (same sha256) (rule 2)"),
        "501_p0.jpg": ("kept", "keep: no rule matched (CURATE_DEFAULT)"),
        "500_p0.jpg": ("dropped", "drop: exact duplicate of 501 p0 (same sha256) (rule 2)"),
        # the greyscale copy is larger, but the monochrome rule drops it first: it cannot be the kept copy
        "600_p0.jpg": ("dropped", decided["600_p0.jpg"][1]),
        "700_p0.jpg": ("kept", "keep: no rule matched (CURATE_DEFAULT)"),
    }
    assert decided["600_p0.jpg"][1].startswith("drop: monochrome")
    assert summary.duplicates_found == 3 and summary.now_dropped == 4
    assert sorted(p.name for p in (out / "images").iterdir()) == ["300_p0.jpg", "501_p0.jpg", "700_p0.jpg"]

    summary, _ = run(out, CURATE_RULES=rules)  # the same again: nothing moves, no reason changes
    assert (summary.now_dropped, summary.now_kept, summary.reasons_updated, summary.decided) == (0, 0, 0, 7)

    # distance 0: only copies with the same hash; the cropped one comes back
    rules = json.dumps([{"action": "drop", "if": "monochrome"}, {"action": "drop", "if": "duplicate", "distance": 0}])
    summary, _ = run(out, CURATE_RULES=rules)
    assert (summary.now_kept, summary.now_dropped) == (1, 0)
    assert rows(out / "catalog.db", "SELECT artwork_id FROM images WHERE status = 'dropped' ORDER BY 1") == [
        ("301",), ("500",), ("600",)]


def test_the_distance_setting_is_the_duplicate_rules_default(tmp_path):
    out = tmp_path / "out"
    catalog = Catalog(out / "catalog.db")
    scene = colour_scene(seed=1)
    stored(catalog, out, "1", scene.resize((600, 800)))
    stored(catalog, out, "2", scene.crop((4, 4, 296, 396)))  # 2 bits from the first
    catalog.close()
    rules = json.dumps([{"action": "drop", "if": "duplicate"}])
    run(out, CURATE_RULES=rules, CURATE_PHASH_DISTANCE=0)
    assert rows(out / "catalog.db", "SELECT count(*) FROM images WHERE status = 'dropped'") == [(0,)]
    run(out, CURATE_RULES=rules)  # the default, 6 bits
    assert rows(out / "catalog.db", "SELECT artwork_id, status FROM images ORDER BY 1") == [("1", "kept"), ("2", "dropped")]


def test_range_rules_read_the_stored_size_page_and_bookmarks(tmp_path):
    out = tmp_path / "out"
    catalog = Catalog(out / "catalog.db")
    stored(catalog, out, "50", colour_scene(size=(300, 400), seed=4), bookmarks=500)
    stored(catalog, out, "51", colour_scene(size=(900, 300), seed=5), bookmarks=500)
    stored(catalog, out, "52", colour_scene(size=(600, 800), seed=6), bookmarks=3)
    stored(catalog, out, "53", colour_scene(size=(600, 800), seed=7), bookmarks=500, page=2)
    catalog.close()
    rules = json.dumps([{"action": "drop", "unless": "aspect", "max": 2}, {"action": "drop", "unless": "size", "min_side": 350},
                        {"action": "drop", "unless": "bookmarks", "min": 100}, {"action": "drop", "unless": "page", "max": 0}])
    run(out, CURATE_RULES=rules)
    assert rows(out / "catalog.db", "SELECT artwork_id, reason FROM images WHERE path IS NOT NULL ORDER BY 1") == [
        ("50", "drop: short side 300 < 350 (rule 2)"),
        ("51", "drop: aspect 3.00 > 2 (rule 1)"),
        ("52", "drop: bookmarks 3 < 100 (rule 3)"),
        ("53", "drop: page 2 > 0 (rule 4)"),
    ]
