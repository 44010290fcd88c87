"""The catalogue schema refuses inconsistent rows and reports completeness."""

from __future__ import annotations

import sqlite3

import pytest

from catalog.store import SCHEMA_VERSION, Catalog, Coverage


def artwork(**kw):
    base = {"id": "1", "title": "t", "user_id": "9", "user_name": "u", "illust_type": 0,
            "x_restrict": 0, "ai_type": 1, "page_count": 2, "bookmark_count": 3,
            "create_date": "2024-01-01T00:00:00+09:00", "update_date": "2024-01-01T00:00:00+09:00",
            "tags": [{"name": "原神", "translation_en": "Genshin Impact"}], "status": "ok", "reason": None}
    return {**base, **kw}


def test_wal_and_completeness(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cat.record_artwork(artwork(), [{"page": 0, "status": "kept", "path": "images/1_p0.jpg"}], "now")
    assert cat.known_artworks(["1"])["1"].complete is False  # page 1 has no row yet
    cat.record_artwork(artwork(), [{"page": 0, "status": "kept"}, {"page": 1, "status": "failed", "reason": "truncated"}], "now")
    known = cat.known_artworks(["1", "2"])
    assert known["1"].complete and "2" not in known
    assert cat.summary()["images_kept"] == 1 and cat.summary()["images_failed"] == 1
    assert cat.conn.execute("SELECT translation_en FROM tags WHERE name='原神'").fetchone()[0] == "Genshin Impact"


def test_failed_and_dropped_need_a_reason(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    with pytest.raises(sqlite3.IntegrityError):
        cat.record_artwork(artwork(), [{"page": 0, "status": "failed"}], "now")
    with pytest.raises(sqlite3.IntegrityError):
        cat.record_artwork(artwork(status="deleted"), [], "now")
    with pytest.raises(sqlite3.IntegrityError):
        cat.record_artwork(artwork(), [{"page": 0, "status": "weird", "reason": "x"}], "now")
    # the failed transaction left nothing behind
    assert cat.conn.execute("SELECT count(*) FROM artworks").fetchone()[0] == 0


def test_page_rows_are_unique_and_rewritten(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    cat.record_artwork(artwork(page_count=2), [{"page": 0, "status": "kept"}, {"page": 1, "status": "kept"}], "now")
    cat.record_artwork(artwork(page_count=1), [{"page": 0, "status": "kept"}], "later")
    assert cat.conn.execute("SELECT count(*) FROM images").fetchone()[0] == 1
    with pytest.raises(sqlite3.IntegrityError):
        cat.record_artwork(artwork(), [{"page": 0, "status": "kept"}, {"page": 0, "status": "kept"}], "now")


def test_coverage_compares_date_then_id(tmp_path):
    cov = Coverage("2024-01-02T00:00:00+09:00", 500)
    assert cov.contains("2024-01-01T23:00:00+09:00", 900)
    assert cov.contains("2024-01-02T00:00:00+09:00", 500)
    assert not cov.contains("2024-01-02T00:00:00+09:00", 501)
    cat = Catalog(tmp_path / "c.db")
    assert cat.coverage("k") is None
    cat.set_coverage("k", "原神", cov.complete_below_date, 500, None)
    assert cat.coverage("k") == cov


def test_a_crawl_row_left_running_by_a_dead_process_is_marked_interrupted(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    crawl = cat.start_crawl("pixiv", "原神", "k", {})
    cat.conn.execute("UPDATE crawls SET pid = 999999999 WHERE id = ?", [crawl])
    cat.conn.commit()
    cat.start_crawl("pixiv", "原神", "k", {})
    rows = dict(cat.conn.execute("SELECT id, status FROM crawls"))
    assert rows[crawl] == "interrupted"


def test_faces_are_written_with_their_page_and_replaced_on_rewrite(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    face = {"index": 0, "x": 1, "y": 2, "w": 30, "h": 30, "score": 0.9, "sources": "cascade+animeface",
            "path": "faces/1_p0_f0.jpg"}
    cat.record_artwork(artwork(), [{"page": 0, "status": "kept", "faces": [face, {**face, "index": 1}]},
                                   {"page": 1, "status": "kept"}], "now")
    assert cat.conn.execute("SELECT page, idx, w, sources FROM faces ORDER BY idx").fetchall() == [
        (0, 0, 30, "cascade+animeface"), (0, 1, 30, "cascade+animeface")]
    cat.record_artwork(artwork(), [{"page": 0, "status": "kept"}, {"page": 1, "status": "kept"}], "later")
    assert cat.conn.execute("SELECT count(*) FROM faces").fetchone()[0] == 0


def test_an_older_catalogue_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the version-1 images and crawls tables
        conn.executescript("""
            CREATE TABLE images (artwork_id TEXT NOT NULL, page INTEGER NOT NULL, url TEXT, path TEXT,
                original_path TEXT, sha256 TEXT, width INTEGER, height INTEGER, format TEXT,
                source_format TEXT, frame_delays TEXT, status TEXT NOT NULL, reason TEXT,
                stored_at TEXT NOT NULL, UNIQUE (artwork_id, page));
            INSERT INTO images (artwork_id, page, status, stored_at) VALUES ('7', 0, 'kept', 'then');
            CREATE TABLE crawls (id INTEGER PRIMARY KEY, spider TEXT NOT NULL, tag TEXT, query_key TEXT,
                arguments TEXT, started TEXT NOT NULL, finished TEXT, status TEXT NOT NULL, reason TEXT,
                host TEXT, pid INTEGER, artworks_seen INTEGER DEFAULT 0, artworks_fetched INTEGER DEFAULT 0,
                images_kept INTEGER DEFAULT 0, images_failed INTEGER DEFAULT 0, stats TEXT);
        """)
    cat = Catalog(path)
    columns = {row[1] for row in cat.conn.execute("PRAGMA table_info(images)")}
    assert {"classifier_label", "classifier_score", "classifier_model", "classifier_target"} <= columns
    assert cat.conn.execute("SELECT count(*) FROM curation_runs").fetchone()[0] == 0  # version 3's table
    assert cat.conn.execute("SELECT artwork_id, status FROM images").fetchall() == [("7", "kept")]
    assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
