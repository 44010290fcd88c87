"""Folding crawler nodes' catalogues into one (Catalog.merge_from, `scrapy catalog merge`)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from catalog.store import Catalog
from mocksites.runner import REPO
from tests.conftest import crawl_env

OLD, NEW = "2024-01-01T00:00:00+09:00", "2024-02-01T00:00:00+09:00"


def artwork(id_, update_date=OLD, status="ok", reason=None, pages=1, tags=("原神",)):
    return {"id": id_, "title": f"t{id_}", "user_id": "9", "user_name": "u", "illust_type": 0, "x_restrict": 0,
            "ai_type": 1, "page_count": pages, "bookmark_count": 1, "create_date": OLD, "update_date": update_date,
            "tags": [{"name": t, "translation_en": None} for t in tags], "status": status, "reason": reason}


def kept(page, sha="a" * 64):
    return {"page": page, "status": "kept", "path": f"images/x_p{page}.jpg", "sha256": sha}


def rows(catalog: Catalog, sql: str) -> list[tuple]:
    return catalog.conn.execute(sql).fetchall()


def test_union_newer_update_wins_and_local_curation_is_kept(tmp_path):
    central, node = Catalog(tmp_path / "central.db"), Catalog(tmp_path / "node.db")
    central.record_artwork(artwork("1"), [kept(0)], "2024-03-01T00:00:00+00:00")
    central.replace_model_tags("1", 0, "tagger-v1", [{"tag": "smile", "score": 0.9}])  # curated here
    central.record_artwork(artwork("2", pages=2), [kept(0), kept(1)], "2024-03-01T00:00:00+00:00")
    central.record_artwork(artwork("3", status="error", reason="pages: HTTP 500"), [], "2024-03-01T00:00:00+00:00")
    central.conn.commit()

    node.record_artwork(artwork("1", tags=("原神", "雪")), [kept(0)], "2024-03-05T00:00:00+00:00")  # same date
    node.record_artwork(artwork("2", NEW, pages=1), [kept(0, "b" * 64)], "2024-03-05T00:00:00+00:00")  # re-upload
    node.record_artwork(artwork("3"), [kept(0)], "2024-03-05T00:00:00+00:00")  # fetched fine this time
    node.record_artwork(artwork("4"), [kept(0)], "2024-03-05T00:00:00+00:00")  # new
    node.conn.commit()
    node.close()

    counts = central.merge_from(tmp_path / "node.db", node="b")
    assert counts["artworks_added"] == 1 and counts["artworks_replaced"] == 2
    assert rows(central, "SELECT id, update_date, status, page_count FROM artworks ORDER BY id") == [
        ("1", OLD, "ok", 1), ("2", NEW, "ok", 1), ("3", OLD, "ok", 1), ("4", OLD, "ok", 1)]
    assert rows(central, "SELECT artwork_id, page, sha256 FROM images WHERE artwork_id = '2'") == [("2", 0, "b" * 64)]
    # artwork 1 kept its row here (and the tags curated here); its last_seen moved on
    assert rows(central, "SELECT tag FROM image_tags") == [("smile",)]
    assert rows(central, "SELECT first_seen, last_seen FROM artworks WHERE id = '1'") == [
        ("2024-03-01T00:00:00+00:00", "2024-03-05T00:00:00+00:00")]
    assert ("雪",) in rows(central, "SELECT name FROM tags")
    assert rows(central, "PRAGMA foreign_key_check") == []


def test_crawls_are_appended_once_and_coverage_takes_the_deeper_mark(tmp_path):
    central, node = Catalog(tmp_path / "central.db"), Catalog(tmp_path / "node.db")
    central.set_coverage("q", "原神", OLD, 100, None)
    crawl = node.start_crawl("pixiv", "原神", "q", {"tag": "原神"})
    node.finish_crawl(crawl, "finished", None, {"artworks_fetched": 1}, {})
    node.set_coverage("q", "原神", NEW, 50, crawl)
    node.set_coverage("other", "x", OLD, 1, crawl)
    node.close()

    first = central.merge_from(tmp_path / "node.db", node="b")
    again = central.merge_from(tmp_path / "node.db", node="b")
    assert (first["crawls_added"], first["coverage_moved"]) == (1, 2)
    assert (again["crawls_added"], again["coverage_moved"], again["artworks_added"]) == (0, 0, 0)
    [(crawl_id, node_name, status)] = rows(central, "SELECT id, node, status FROM crawls")
    assert (node_name, status) == ("b", "finished")
    assert rows(central, "SELECT query_key, complete_below_date, complete_below_id, crawl_id FROM search_coverage "
                         "ORDER BY query_key") == [("other", OLD, 1, crawl_id), ("q", NEW, 50, crawl_id)]


def test_the_sources_that_listed_an_artwork_are_a_union(tmp_path):
    central, node = Catalog(tmp_path / "central.db"), Catalog(tmp_path / "node.db")
    central.record_artwork(artwork("1"), [kept(0)], "2024-03-01T00:00:00+00:00")
    central.record_sources(["1"], "tag:原神", "2024-03-01T00:00:00+00:00")
    node.record_artwork(artwork("1", NEW), [kept(0)], "2024-03-05T00:00:00+00:00")  # the node's row wins
    node.record_sources(["1"], "user:9", "2024-03-05T00:00:00+00:00")
    node.record_sources(["1"], "tag:原神", "2024-02-01T00:00:00+00:00")
    node.close()
    central.merge_from(tmp_path / "node.db", node="b")
    central.merge_from(tmp_path / "node.db", node="b")  # twice: nothing more
    assert rows(central, "SELECT artwork_id, source, first_seen, last_seen FROM artwork_sources ORDER BY source") == [
        ("1", "tag:原神", "2024-02-01T00:00:00+00:00", "2024-03-01T00:00:00+00:00"),
        ("1", "user:9", "2024-03-05T00:00:00+00:00", "2024-03-05T00:00:00+00:00"),
    ]


def test_refuses_itself_and_non_catalogues(tmp_path):
    central = Catalog(tmp_path / "central.db")
    with pytest.raises(ValueError, match="this catalogue"):
        central.merge_from(tmp_path / "central.db")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE x (a)").connection.close()
    with pytest.raises(ValueError, match="not a catalogue"):
        central.merge_from(tmp_path / "other.db")
    with pytest.raises(FileNotFoundError):
        central.merge_from(tmp_path / "missing.db")


def test_scrapy_catalog_merge_command(tmp_path):
    for name, ids in (("a", "12"), ("b", "23")):
        catalog = Catalog(tmp_path / name / "catalog.db")
        for id_ in ids:
            catalog.record_artwork(artwork(id_), [kept(0)], "2024-03-01T00:00:00+00:00")
        catalog.close()
    command = [sys.executable, "-m", "scrapy", "catalog", "merge", str(tmp_path / "all.db"), str(tmp_path / "a"),
               str(tmp_path / "b" / "catalog.db"), "--node", "a"]
    done = subprocess.run(command, cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'all.db'}: 3 artworks, images kept 3" in done.stdout
    bad = subprocess.run(command[:6] + [str(tmp_path / "nope.db")], cwd=REPO, env=crawl_env(),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no catalogue at" in bad.stderr + bad.stdout
