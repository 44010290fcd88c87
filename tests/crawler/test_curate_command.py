"""`scrapy curate` as users run it: a subprocess in the project, real models, real files, kill -9.

The models are built here: a tiny character classifier trained on generated pictures, and two
DeepDanbooru-format projects whose weights differ (tests/models/tagger_fixtures.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from catalog.store import Catalog
from models import classifier as clf
from models.faces import synthetic_face
from tests.models.tagger_fixtures import build_project
from tests.models.test_classifier import synthetic_picture, write_dataset

REPO = Path(__file__).resolve().parents[2]
REPORT_KEYS = ["path", "faces", "classifier", "tags", "decision", "reason"]
FACES = ("-s", "FACES_DETECTORS=animeface")  # the cascade may be missing here; animeface always runs


def curate(output: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "scrapy", "curate", *args, "-s", f"OUTPUT_DIR={output}", "-s", "IMAGE_WORKERS=0"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def stage_counts(stdout: str, stage: str) -> tuple[int, int, int]:
    """(processed, skipped, failed) from the summary line of one stage."""
    match = re.search(rf"^  {stage} \(.*\): (\d+) processed, (\d+) skipped \(same model version\), (\d+) failed$",
                      stdout, re.MULTILINE)
    assert match, stdout
    return int(match[1]), int(match[2]), int(match[3])


def query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db, timeout=5)) as conn:
        return conn.execute(sql).fetchall()


def dump(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.iterdump())


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def report_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A trained classifier and two tagger projects (same tags, different weights)."""
    root = tmp_path_factory.mktemp("curate-models")
    data = write_dataset(root / "data", per_class=10, seed=4)
    trained = clf.train(data, root / "classifier", image_size=32, epochs=2, batch_size=16, patience=1, progress=False)
    return {
        "classifier": trained.model_path,
        "tagger": build_project(root / "tagger-a"),
        "tagger_v2": build_project(root / "tagger-b", scale=1.5),
    }


def write_library(folder: Path) -> dict[str, Path]:
    """A user's folder: plain colours the test tagger reads, a purple-blob picture, a face, a broken file."""
    folder.mkdir(parents=True)
    (folder / "sub").mkdir()
    paths = {
        "red": folder / "red.jpg", "blue": folder / "sub" / "blue.png", "face": folder / "face.webp",
        "mona": folder / "sub" / "mona.png", "broken": folder / "broken.jpg",
    }
    Image.new("RGB", (48, 40), (240, 20, 20)).save(paths["red"], quality=95)
    Image.new("RGB", (40, 48), (20, 20, 240)).save(paths["blue"])
    synthetic_face(160).save(paths["face"])
    synthetic_picture(np.random.default_rng(3), purple=True, size=56).save(paths["mona"])
    paths["broken"].write_bytes(Image.new("RGB", (64, 64)).tobytes()[:100])  # no image header at all
    return paths


@pytest.fixture(scope="module")
def library_runs(models, tmp_path_factory):
    """The first run over a folder with every stage, then the same command again."""
    root = tmp_path_factory.mktemp("curate-library")
    library = write_library(root / "library")
    output = root / "out"
    args = [str(root / "library"), "--stages", "faces,classify,tag", *FACES,
            "-s", f"CLASSIFIER_MODEL={models['classifier']}", "-s", f"TAGGER_PROJECT={models['tagger']}"]
    first = curate(output, *args, "--report", str(root / "first.jsonl"))
    after_first = (dump(output / "catalog.db"), files_under(output))
    second = curate(output, *args, "--report", str(root / "second.jsonl"))
    return {"root": root, "library": library, "output": output, "args": args, "first": first, "second": second,
            "after_first": after_first}


def test_a_folder_becomes_catalogue_rows_and_report_lines(library_runs):
    first, library, output = library_runs["first"], library_runs["library"], library_runs["output"]
    assert first.returncode == 0, first.stderr[-3000:]
    assert stage_counts(first.stdout, "faces") == (4, 0, 1)
    assert stage_counts(first.stdout, "classify") == (4, 0, 1)
    assert stage_counts(first.stdout, "tag") == (4, 0, 1)
    assert "curating" not in first.stderr  # no progress bar off a terminal (core/progress.py), only log lines
    assert re.search(r"broken\.jpg: .*not a recognised image format", first.stdout)

    report = report_lines(library_runs["root"] / "first.jsonl")
    order = [library[k] for k in ("broken", "face", "red", "blue", "mona")]  # sorted, recursively
    assert [line["path"] for line in report] == [str(p) for p in order]
    assert all(list(line) == REPORT_KEYS for line in report)
    broken, face, red, blue, mona = report
    assert broken["decision"] == "failed" and "not a recognised image format" in broken["reason"]
    assert broken["faces"] is None and broken["classifier"] is None and broken["tags"] == {}
    assert len(face["faces"]) == 1 and len(face["faces"][0]) == 4 and red["faces"] == []
    assert "red" in red["tags"] and "char_red" in red["tags"] and "blue" not in red["tags"]
    assert "blue" in blue["tags"] and "red" not in blue["tags"]
    for line in (face, red, blue, mona):
        assert line["decision"] == "kept" and line["reason"] is None
        assert set(line["classifier"]) == {"label", "score", "target", "model"}
        assert line["classifier"]["target"] == "mona" and 0 <= line["classifier"]["score"] <= 1

    db = output / "catalog.db"
    images = query(db, "SELECT artwork_id, path, status, format, classifier_model FROM images")
    runs = query(db, "SELECT stage, count(*), count(error) FROM curation_runs GROUP BY stage")
    tag_models = query(db, "SELECT DISTINCT model FROM image_tags")
    assert len(images) == 5 and all(re.fullmatch(r"local:[0-9a-f]{20}", row[0]) for row in images)
    assert {row[1] for row in images} == {str(p) for p in library.values()}  # read where they are
    assert sorted(row[3] or "-" for row in images) == ["-", "jpeg", "png", "png", "webp"]
    assert sorted(runs) == [("classify", 5, 1), ("faces", 5, 1), ("tag", 5, 1)]  # the broken one: an error row
    assert len(tag_models) == 1 and tag_models[0][0].startswith("resnet_custom_v3-")
    assert all(p.is_file() for p in library.values())  # nothing moved


def test_the_same_run_again_changes_nothing(library_runs):
    second, output = library_runs["second"], library_runs["output"]
    assert second.returncode == 0, second.stderr[-3000:]
    for stage in ("faces", "classify", "tag"):
        assert stage_counts(second.stdout, stage) == (0, 4, 1)
    assert "0 of them new to it" in second.stdout
    assert (dump(output / "catalog.db"), files_under(output)) == library_runs["after_first"]
    root = library_runs["root"]
    assert (root / "second.jsonl").read_bytes() == (root / "first.jsonl").read_bytes()


def test_a_new_model_version_is_run_again(library_runs, models, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(library_runs["output"], output)
    args = [a.replace(str(models["tagger"]), str(models["tagger_v2"])) for a in library_runs["args"]]
    done = curate(output, *args, "--report", str(tmp_path / "report.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert stage_counts(done.stdout, "tag") == (4, 0, 1)
    assert stage_counts(done.stdout, "classify") == (0, 4, 1) and stage_counts(done.stdout, "faces") == (0, 4, 1)
    versions = dict(query(output / "catalog.db", "SELECT model, count(DISTINCT artwork_id) FROM image_tags GROUP BY model"))
    run_versions = query(output / "catalog.db", "SELECT DISTINCT model FROM curation_runs WHERE stage = 'tag'")
    assert len(versions) == 2 and set(versions.values()) == {4}  # the old version's tags stay beside
    [(new_version,)] = run_versions
    first = {line["path"]: line for line in report_lines(library_runs["root"] / "first.jsonl")}
    for line in report_lines(tmp_path / "report.jsonl")[1:]:  # the report shows the new version's scores
        assert set(line["tags"]) >= {"rating:safe"} and line["tags"] != first[line["path"]]["tags"]
    assert new_version in versions


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    for index in range(8):  # distinct pictures (content-addressed), about 0.4 s of face search each
        image = synthetic_face(256)
        ImageDraw.Draw(image).rectangle((index * 8, 0, index * 8 + 6, 6), fill=(0, 0, 0))
        image.save(library / f"{index}.png")
    output = tmp_path / "out"
    command = [sys.executable, "-m", "scrapy", "curate", str(library), "--stages", "faces", "--batch-size", "2",
               *FACES, "-s", f"OUTPUT_DIR={output}", "-s", "IMAGE_WORKERS=0"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while done == 0 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            if (output / "catalog.db").is_file():
                try:
                    done = query(output / "catalog.db", "SELECT count(*) FROM curation_runs")[0][0]
                except sqlite3.OperationalError:  # the table is not there yet
                    pass
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(10)
    [(runs,)] = query(output / "catalog.db", "SELECT count(*) FROM curation_runs")
    [(images,)] = query(output / "catalog.db", "SELECT count(*) FROM images")
    assert 2 <= runs < 8 and runs % 2 == 0 and images == runs  # whole batches only, and not all of them

    resumed = curate(output, str(library), "--stages", "faces", "--batch-size", "2", *FACES)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert stage_counts(resumed.stdout, "faces") == (8 - runs, runs, 0)
    assert query(output / "catalog.db", "SELECT count(*), count(error) FROM curation_runs") == [(8, 0)]
    assert query(output / "catalog.db", "SELECT count(DISTINCT artwork_id) FROM faces") == [(8,)]


def test_rules_decide_crawled_pictures_again_from_stored_scores(models, tmp_path):
    """After a crawl with the classifier, new rules move files without classifying anything again."""
    output = tmp_path / "out"
    catalog = Catalog(output / "catalog.db")
    version = clf.model_version(models["classifier"])
    for artwork_id, score, folder in (("100", 0.95, "images"), ("101", 0.2, "images"), ("102", 0.85, "dropped")):
        (output / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (9, 9, 9)).save(output / folder / f"{artwork_id}_p0.jpg")
        status = "kept" if folder == "images" else "dropped"
        catalog.record_artwork(
            {"id": artwork_id, "status": "ok", "page_count": 1, "x_restrict": 0, "ai_type": 1, "tags": []},
            [{"page": 0, "path": f"{folder}/{artwork_id}_p0.jpg", "status": status,
              "reason": None if status == "kept" else "drop: older rules",
              "classifier": {"label": "mona", "target": "mona", "score": score, "model": version}}],
            "2024-01-01T00:00:00+00:00",
        )
    catalog.close()
    rules = json.dumps([{"action": "keep", "if": "classifier", "min": 0.8}])

    done = curate(output, "-s", f"CLASSIFIER_MODEL={models['classifier']}", "-s", f"CURATE_RULES={rules}",
                  "-s", "CURATE_DEFAULT=drop", "--report", str(tmp_path / "report.jsonl"))

    assert done.returncode == 0, done.stderr[-3000:]
    assert stage_counts(done.stdout, "classify") == (0, 3, 0)  # the crawl's scores, same model version
    assert "1 now dropped, 1 now kept" in done.stdout
    assert query(output / "catalog.db", "SELECT artwork_id, path, status FROM images ORDER BY 1") == [
        ("100", "images/100_p0.jpg", "kept"), ("101", "dropped/101_p0.jpg", "dropped"),
        ("102", "images/102_p0.jpg", "kept")]
    assert sorted(files_under(output / "images")) == ["100_p0.jpg", "102_p0.jpg"]
    assert sorted(files_under(output / "dropped")) == ["101_p0.jpg"]
    report = report_lines(tmp_path / "report.jsonl")
    assert [(line["path"], line["decision"]) for line in report] == [
        ("images/100_p0.jpg", "kept"), ("dropped/101_p0.jpg", "dropped"), ("images/102_p0.jpg", "kept")]
    assert report[1]["reason"] == "drop: no rule matched (CURATE_DEFAULT)"
    assert report[2]["reason"] == f"keep: classifier mona 0.850 >= 0.8 ({version}) (rule 1)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stages", "faces,colour"], "unknown stage 'colour' in --stages; known: faces, classify, tag"),
        (["--stages", "tag"], "--stages tag needs TAGGER_PROJECT"),
        (["--stages", "classify", "-s", "CLASSIFIER_MODEL=/nowhere/classifier.keras"], "no such file"),
    ],
)
def test_a_stage_that_cannot_run_is_a_usage_error(tmp_path, args, message):
    done = curate(tmp_path / "out", str(tmp_path), *args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("error:") == 1
    assert not (tmp_path / "out" / "catalog.db").exists()  # refused before touching anything


def test_odd_names_and_broken_links_in_a_folder_run_again_and_again(models, tmp_path):
    """A name that is not UTF-8 once crashed the catalogue and the report on every run; a broken link was skipped unsaid."""
    library = tmp_path / "library"
    library.mkdir()
    odd = Path(os.fsdecode(os.fsencode(library) + b"/\xff\xfe.png"))  # bytes no UTF-8 text can hold
    synthetic_face(160).save(odd)
    red = library / "red.png"
    Image.new("RGB", (40, 40), (240, 20, 20)).save(red)
    link = library / "link.jpg"
    link.symlink_to(tmp_path / "deleted.jpg")
    output = tmp_path / "out"
    shown = f"{library}/\\xff\\xfe.png"
    broken = f"a broken symbolic link to {tmp_path / 'deleted.jpg'}: No such file or directory"

    runs = [curate(output, str(library), "--stages", "faces", *FACES, "--report", str(tmp_path / f"{n}.jsonl"))
            for n in (1, 2)]
    for done in runs:
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"    {link}: {broken}" in done.stdout and "Traceback" not in done.stderr
    assert stage_counts(runs[0].stdout, "faces") == (2, 0, 0) and stage_counts(runs[1].stdout, "faces") == (0, 2, 0)
    report = report_lines(tmp_path / "1.jsonl")
    assert [(line["path"], line["decision"], line["reason"]) for line in report] == [
        (str(link), "failed", broken), (str(red), "kept", None), (shown, "kept", None)]
    assert len(report[2]["faces"]) == 1  # the picture was read through its odd name
    assert (tmp_path / "2.jsonl").read_bytes() == (tmp_path / "1.jsonl").read_bytes()

    # spoiled in place, then classified from the catalogue alone: the reason quotes the name, as text
    odd.write_bytes(b"not a picture any more")
    done = curate(output, "--stages", "classify", "-s", f"CLASSIFIER_MODEL={models['classifier']}", "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    assert stage_counts(done.stdout, "classify") == (1, 0, 1)
    assert re.search(rf"^    {re.escape(shown)}: classify: could not read {re.escape(shown)}: ", done.stdout, re.MULTILINE)
    [(error,)] = query(output / "catalog.db", "SELECT error FROM curation_runs WHERE stage = 'classify' AND error IS NOT NULL")
    assert error.startswith(f"could not read {shown}: ")


def test_duplicates_and_monochrome_pictures_are_dropped_naming_the_kept_copy(tmp_path):
    """A catalogue from before the pixel statistics: curate measures each picture once, groups the
    copies, keeps the largest and drops the others with a reason that names it."""
    output = tmp_path / "out"
    catalog = Catalog(output / "catalog.db")
    scene = Image.new("RGB", (300, 400), (70, 130, 200))
    draw = ImageDraw.Draw(scene)
    for n, color in enumerate([(230, 40, 40), (250, 210, 60), (40, 160, 80), (240, 240, 240)]):
        draw.rectangle((20 + 60 * n, 40 + 70 * n, 120 + 50 * n, 200 + 40 * n), fill=color)
    pictures = {"1000": scene.resize((600, 800)), "1001": scene.crop((4, 4, 296, 396)), "1002": scene,
                "1003": scene.convert("L").convert("RGB").rotate(90, expand=True)}
    (output / "images").mkdir(parents=True)
    for artwork_id, image in pictures.items():
        image.save(output / "images" / f"{artwork_id}_p0.jpg", quality=90)
        catalog.record_artwork(
            {"id": artwork_id, "status": "ok", "page_count": 1, "bookmark_count": 10, "tags": []},
            [{"page": 0, "path": f"images/{artwork_id}_p0.jpg", "status": "kept", "width": image.width,
              "height": image.height,
              "sha256": hashlib.sha256((output / "images" / f"{artwork_id}_p0.jpg").read_bytes()).hexdigest()}],
            "2024-01-01T00:00:00+00:00",
        )
    catalog.close()
    (tmp_path / "rules.yaml").write_text(
        "- {action: drop, if: monochrome}\n- {action: drop, if: duplicate, distance: 6}\n", encoding="utf-8")

    done = curate(output, "-s", f"CURATE_RULES_FILE={tmp_path / 'rules.yaml'}", "--report", str(tmp_path / "r.jsonl"),
                  timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "  pixel statistics: 4 pictures measured (colorfulness, line art, phash)" in done.stdout
    assert "  duplicates: 2 copies of kept pictures found (duplicate rule)" in done.stdout
    assert "3 now dropped, 0 now kept" in done.stdout
    reasons = dict(query(output / "catalog.db", "SELECT artwork_id, reason FROM images"))
    assert reasons["1000"] == "keep: no rule matched (CURATE_DEFAULT)"
    assert re.fullmatch(r"drop: near-duplicate of 1000 p0 \(phash distance [1-6]\) \(rule 2\)", reasons["1001"])
    assert re.fullmatch(r"drop: near-duplicate of 1000 p0 \(phash distance [0-6]\) \(rule 2\)", reasons["1002"])
    assert re.fullmatch(r"drop: monochrome \(colorfulness 0\.\d <= 3\) \(rule 1\)", reasons["1003"])
    assert sorted(files_under(output / "images")) == ["1000_p0.jpg"]
    assert sorted(files_under(output / "dropped")) == ["1001_p0.jpg", "1002_p0.jpg", "1003_p0.jpg"]
    assert [line["reason"] for line in report_lines(tmp_path / "r.jsonl")] == [reasons[k] for k in sorted(reasons)]

    again = curate(output, "-s", f"CURATE_RULES_FILE={tmp_path / 'rules.yaml'}", timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "pixel statistics" not in again.stdout and "0 now dropped, 0 now kept, 0 with a new reason only" in again.stdout
