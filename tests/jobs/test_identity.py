"""The identity stage in `scrapy curate`: drawn characters as real PNG files, a real catalogue.

`--stages identity --reference DIR` with an identity rule keeps the character of the references
and drops the others, writing the match and its reason to the catalogue; the same run again
embeds nothing; without references the dominant character is matched; an ONNX embedder is used
when configured; stored faces decide the embedded region; and by default, a real curate of real art runs the
shipped lite0-metric-v1 embedder.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from PIL import Image
from scrapy.settings import Settings

from catalog.store import utc_now
from jobs.curate import CurateError, Curator
from stages.decide import decide
from stages.rules import RuleError, check_rules
from tests.conftest import project_settings
from tests.models.identity_drawings import draw_head, png_bytes

REPO = Path(__file__).resolve().parents[2]
KEEP_IDENTITY = json.dumps([{"action": "keep", "if": "identity"}])


def write_heads(folder: Path, character: str, variants: range) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for v in variants:
        path = folder / f"{character}-{v}.png"
        path.write_bytes(png_bytes(draw_head(character, v)))
        files.append(path)
    return files


def query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def curate(output: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "scrapy", "curate", *args, "-s", f"OUTPUT_DIR={output}", "-s", "IMAGE_WORKERS=0",
               "-s", "IDENTITY_EMBEDDER=colour-v1", "--no-progress"]  # drawn heads differ by colour: the built-in's case
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)


@pytest.fixture
def library(tmp_path):
    lib, ref = tmp_path / "library", tmp_path / "reference"
    write_heads(lib, "red", range(10, 16))
    write_heads(lib, "blue", range(10, 16))
    write_heads(lib, "silver", range(10, 14))
    (lib / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_heads(ref, "red", range(3))
    return lib, ref


def test_curate_with_references_keeps_the_character_and_writes_why(library, tmp_path):
    lib, ref = library
    out = tmp_path / "out"
    rules = ["-s", f"CURATE_RULES={KEEP_IDENTITY}", "-s", "CURATE_DEFAULT=drop"]
    report = tmp_path / "report.jsonl"
    run = curate(out, str(lib), "--stages", "identity", "--reference", str(ref), *rules, "--report", str(report))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    matched = {Path(line["path"]).name: line["identity"]["matched"] for line in lines if "identity" in line}
    assert len(matched) == 16 and {name for name, m in matched.items() if m} == {f"red-{i}.png" for i in range(10, 16)}
    assert "identity (colour-v1): 16 processed, 0 skipped (same model version), 1 failed" in run.stdout
    assert f"identity: 6 of 16 pictures are the character (3 references from {ref}, threshold 0.5)" in run.stdout
    db = out / "catalog.db"
    rows = query(db, "SELECT i.path, i.status, i.reason, d.matched, d.source, d.embedder, d.reason FROM images i "
                     "JOIN identity d USING (artwork_id, page) ORDER BY i.path")
    assert len(rows) == 16
    for path, status, reason, matched, source, embedder, why in rows:
        is_red = Path(path).name.startswith("red-")
        assert (status, matched) == (("kept", 1) if is_red else ("dropped", 0)), path
        assert (source, embedder) == ("whole", "colour-v1")
        assert "references' centroid" in why and why.endswith("(colour-v1)")
        if is_red:
            assert reason.startswith("keep: the character: distance ") and reason.endswith("(rule 1)")
        else:
            assert reason == "drop: no rule matched (CURATE_DEFAULT)"
    assert query(db, "SELECT i.status, r.error FROM images i JOIN curation_runs r USING (artwork_id, page) "
                     "WHERE r.stage = 'identity' AND i.path LIKE '%broken.png'")[0][0] == "failed"
    assert "broken.png" in run.stdout  # reported among the failed pictures, the run went on

    again = curate(out, str(lib), "--stages", "identity", "--reference", str(ref), *rules)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "identity (colour-v1): 0 processed, 16 skipped (same model version), 1 failed" in again.stdout
    assert "changed: 0 now dropped, 0 now kept, 0 with a new reason only" in again.stdout


def test_a_reference_folder_that_is_not_there_is_a_usage_error(tmp_path):
    run = curate(tmp_path / "out", str(tmp_path), "--reference", str(tmp_path / "nowhere"))
    assert run.returncode == 2
    assert "not a folder of pictures of the wanted character" in run.stderr


def curator(tmp_path: Path, stages=("identity",), reference: Path | None = None, **overrides) -> Curator:
    overrides.setdefault("IDENTITY_EMBEDDER", "colour-v1")
    settings = Settings(project_settings(OUTPUT_DIR=str(tmp_path / "out"), IMAGE_WORKERS=0, **overrides))
    return Curator(settings, list(stages), progress=False, reference=None if reference is None else str(reference))


def test_without_references_the_dominant_character_is_matched_and_nothing_moves(tmp_path):
    lib = tmp_path / "library"
    write_heads(lib, "blue", range(30, 42))
    write_heads(lib, "red", range(30, 35))
    run = curator(tmp_path)
    try:
        summary = run.run(run.collect([str(lib)]))
        db = run.catalog_path
    finally:
        run.close()
    assert summary.identity == "identity: 12 of 17 pictures are the character (no references: the dominant cluster)"
    assert any(line.startswith("  decisions: none (no curation rules") and "17 pictures new from folders are "
               "catalogued as kept" in line for line in summary.lines(db, None))
    rows = query(db, "SELECT i.path, i.status, d.matched, d.cluster_size, d.reason FROM images i "
                     "JOIN identity d USING (artwork_id, page)")
    for path, status, matched, size, reason in rows:
        assert status == "kept"
        if Path(path).name.startswith("blue-"):
            assert (matched, size) == (1, 12) and "(the dominant one)" in reason
        else:
            assert matched == 0 and "not the dominant cluster" in reason


def test_an_onnx_embedder_is_used_when_configured(tmp_path):
    from tests.models.test_identity import build_mean_colour_model

    model = build_mean_colour_model(tmp_path / "encoder.onnx")
    lib, ref = tmp_path / "library", tmp_path / "reference"
    write_heads(lib, "red", range(10, 14))
    write_heads(lib, "blue", range(10, 14))
    write_heads(ref, "red", range(3))
    run = curator(tmp_path, reference=ref, IDENTITY_EMBEDDER=str(model), IDENTITY_THRESHOLD=0.2)
    try:
        version = run.identity.version
        run.run(run.collect([str(lib)]))
        db = run.catalog_path
    finally:
        run.close()
    assert version.startswith("onnx-")
    rows = query(db, "SELECT i.path, d.matched, d.embedder, length(d.embedding) FROM images i "
                     "JOIN identity d USING (artwork_id, page)")
    assert {(Path(p).name.split("-")[0], m, e, n) for p, m, e, n in rows} == {
        ("red", 1, version, 12), ("blue", 0, version, 12)}  # 3 float32: the model's mean R, G, B


def test_a_stored_face_decides_the_region_and_a_new_face_embeds_again(tmp_path):
    lib = tmp_path / "library"
    write_heads(lib, "red", range(2))
    run = curator(tmp_path)
    try:
        run.run(run.collect([str(lib)]))
        key = query(run.catalog_path, "SELECT artwork_id, page FROM images ORDER BY path")[0]
        with run.catalog.batch() as catalog:  # what the face stage would have stored
            catalog.replace_faces(*key, [{"index": 0, "x": 50, "y": 60, "w": 60, "h": 60}])
            catalog.record_stage_run(*key, "faces", "faces:test", None, utc_now())
    finally:
        run.close()
    again = curator(tmp_path)
    try:
        summary = again.run(again.collect([str(lib)]))
        db = again.catalog_path
    finally:
        again.close()
    assert (summary.processed["identity"], summary.skipped["identity"]) == (1, 1)
    assert query(db, f"SELECT source FROM identity WHERE artwork_id = '{key[0]}'") == [("face 50,60,60,60",)]


def test_identity_rules_read_the_stored_match():
    assert check_rules([{"action": "drop", "if": "identity", "match": False}])
    with pytest.raises(RuleError, match="match must be true or false"):
        check_rules([{"action": "keep", "if": "identity", "match": "yes"}])
    with pytest.raises(RuleError, match="unknown key 'min'"):
        check_rules([{"action": "keep", "if": "identity", "min": 1}])
    found = {"matched": False, "reason": "distance 0.900 > 0.5 to the references' centroid; no cluster (colour-v1)"}
    rules = [{"action": "keep", "if": "identity"}, {"action": "drop", "if": "identity", "match": False}]
    assert decide({"identity": found}, {}, rules, "keep") == (
        "drop", f"drop: not the character: {found['reason']} (rule 2)")
    assert decide({"identity": None}, {}, rules, "keep")[1] == "keep: no rule matched (CURATE_DEFAULT)"


def test_reference_without_the_identity_stage_is_refused(tmp_path):
    with pytest.raises(CurateError, match="--reference is for the identity stage"):
        curator(tmp_path, stages=(), reference=tmp_path)


def test_by_default_a_real_curate_runs_the_shipped_embedder_on_real_art(tmp_path):
    """`scrapy curate --stages faces,identity` with no IDENTITY_EMBEDDER: lite0-metric-v1 (shipped) at its
    own threshold. The head saw these pictures in training, so this checks the wiring on real art
    (faces stored first, then embedded by their head), not a held-out rate (bench/identity.py has those)."""
    import shutil

    fixtures = REPO.parent / "shared" / "fixtures" / "anime"
    if not (fixtures / "views").is_dir():
        pytest.skip("needs ../shared/fixtures/anime")
    lib, ref = tmp_path / "library", tmp_path / "reference"
    lib.mkdir()
    ref.mkdir()
    def picture(name: str) -> Path:  # "cards/albedo": whatever its extension
        return sorted((fixtures / name).parent.glob(Path(name).name + ".*"))[0]

    for name in ("faces/albedo", "views/albedo__icon-side", "views/albedo__portrait"):
        shutil.copy(picture(name), ref / f"{name.replace('/', '_')}{picture(name).suffix}")
    for name in ("cards/albedo", "views/albedo__card", "cards/amber", "cards/bennett", "cards/diluc", "views/eula__portrait"):
        with Image.open(picture(name)) as image:  # crawl-sized copies: the stage's speed is not the point here
            image.thumbnail((512, 512))
            image.save(lib / f"{name.replace('/', '_')}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "scrapy", "curate", str(lib), "--stages", "faces,identity", "--reference",
               str(ref), "-s", f"OUTPUT_DIR={out}", "-s", "IMAGE_WORKERS=0", "--no-progress"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "identity (lite0-metric-v1-" in run.stdout and "threshold 0.7)" in run.stdout
    rows = dict(query(out / "catalog.db", "SELECT i.path, d.matched FROM images i JOIN identity d USING (artwork_id, page)"))
    matched = sorted(Path(path).stem for path, m in rows.items() if m)
    assert len(rows) == 6 and matched == ["cards_albedo", "views_albedo__card"], rows
