"""pipelines/guarded.py: a stage that raises costs its item a recorded failure, never a silent loss."""

from __future__ import annotations

import json

from crawler import settings as project
from pipelines.guarded import FAILED_STAT

STAGE = "tests.pipelines.failing_stage.FailingStage"
RULES = json.dumps([{"action": "drop", "if": "tag", "any": ["モナ(原神)"]}])


def files_on_disk(output, *folders):
    return {f"{folder}/{p.name}" for folder in folders if (output / folder).is_dir() for p in (output / folder).iterdir()}


def test_a_stage_that_raises_is_recorded_on_the_row_and_fails_the_crawl(pixiv_site, run_crawl, tmp_path):
    pipelines = json.dumps({**project.ITEM_PIPELINES, STAGE: 850})  # after the decision, before the catalogue
    out = tmp_path / "out"
    run = run_crawl(pixiv_site, out, "-a", "pages=1", "-s", f"ITEM_PIPELINES={pipelines}",
                    "-s", "FAILING_STAGE_EVERY=3", "-s", f"CURATE_RULES={RULES}", "-s", "IMAGE_WORKERS=0")

    assert run.returncode == 1, run.log[-3000:]
    assert "Error processing" not in run.log  # Scrapy's own "item lost" line: the manager caught it first
    lost = run.query("SELECT id, reason FROM artworks WHERE status = 'error' AND reason LIKE ?", (f"{STAGE} failed:%",))
    assert lost and all(int(artwork_id) % 3 == 0 for artwork_id, _ in lost)
    assert all("RuntimeError: a bug that meets artwork" in reason for _, reason in lost)
    [(status, reason, failed)] = run.query(f"SELECT status, reason, json_extract(stats, '$.\"{FAILED_STAT}\"') FROM crawls")
    assert status == "failed" and failed == len(lost)
    assert f"{len(lost)} artworks failed in a pipeline stage" in reason and STAGE in reason
    assert run.query("SELECT count(*) FROM search_coverage") == [(0,)]  # nothing proven complete

    # every file the stages wrote has its row; the lost artworks' pages say why they failed
    rows = dict(run.query("SELECT path, status FROM images WHERE path IS NOT NULL"))
    on_disk = files_on_disk(out, "images", "dropped")
    assert on_disk and on_disk <= set(rows)
    pages = run.query("SELECT i.status, i.reason, i.path FROM images i JOIN artworks a ON a.id = i.artwork_id "
                      "WHERE a.status = 'error' AND a.reason LIKE ?", (f"{STAGE}%",))
    assert pages and all(s == "failed" and r.startswith(f"{STAGE} failed: RuntimeError") for s, r, _ in pages)
    assert any(path and path.startswith("dropped/") for _, _, path in pages)  # dropped ones too
    assert all((out / path).is_file() for _, _, path in pages if path)

    # the next run, without the bug, fetches the lost artworks again and ends well
    again = run_crawl(pixiv_site, out, "-a", "pages=1", "-s", f"CURATE_RULES={RULES}", "-s", "IMAGE_WORKERS=0")
    assert again.returncode == 0, again.log[-3000:]
    ids = tuple(artwork_id for artwork_id, _ in lost)
    assert again.query(f"SELECT DISTINCT status FROM artworks WHERE id IN ({','.join('?' * len(ids))})", ids) == [("ok",)]
    assert again.query("SELECT status FROM crawls ORDER BY id") == [("failed",), ("finished",)]
    assert files_on_disk(out, "images", "dropped") <= set(dict(again.query("SELECT path, status FROM images")))


def test_an_item_that_fails_before_its_pages_are_known_still_names_the_originals_on_disk(tmp_path):
    """A stage that raises before the originals stage handed its pages over (the files stage itself):
    the rows come from the file URLs, and an original already on disk keeps its row."""
    from core.items import ArtworkItem
    from pipelines.catalog import failed_pages

    item = ArtworkItem(artwork={"id": "120000007"}, file_urls=[
        "https://i.pximg.net/img-zip-ugoira/img/2024/01/01/00/00/00/120000007_ugoira1920x1080.zip"],
        ugoira_frames=[{"file": "000000.jpg", "delay": 80}])
    (tmp_path / "originals").mkdir()
    (tmp_path / "originals" / "120000007_ugoira.zip").write_bytes(b"PK\x03\x04")
    [row] = failed_pages(item, "pipelines.originals.OriginalsPipeline failed: OSError: disk full", tmp_path)
    assert row["original_path"] == "originals/120000007_ugoira.zip" and row["status"] == "failed"
    assert row["reason"] == ("pipelines.originals.OriginalsPipeline failed: OSError: disk full; "
                             "fetched again on the next run")
    (tmp_path / "originals" / "120000007_ugoira.zip").unlink()
    assert failed_pages(item, "x", tmp_path)[0]["original_path"] is None
