"""The SQLite catalogue: the one place its schema lives, and every read and write of it.

The catalogue records everything fetched and decided, and why, and it is what makes crawls
incremental: an artwork whose id and ``updateDate`` are catalogued with all its pages is not
fetched again. ``search_coverage`` remembers, per search query, how far down the results are known
to be complete, so that the "stop after N known artworks" rule only fires inside that range and
an interrupted crawl can never leave a gap (see ``PixivSpider``).

sqlite-utils opens the database, turns on WAL and answers queries; the per-artwork writes use
plain prepared SQL in one transaction each, because sqlite-utils' ``upsert`` introspects the table
on every call, which costs more than the write itself at crawl rates.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

SCHEMA_VERSION = 2

# Columns added after a table was first released: (table, column, type). A catalogue written by an
# older version gains them when opened (ALTER TABLE ... ADD COLUMN), keeping every row.
ADDED_COLUMNS = [
    ("images", "classifier_label", "TEXT"),
    ("images", "classifier_score", "REAL"),   # the target class's score
    ("images", "classifier_model", "TEXT"),   # the classifier's version
    ("crawls", "images_dropped", "INTEGER DEFAULT 0"),
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS artworks (
    id TEXT PRIMARY KEY,
    title TEXT,
    user_id TEXT,
    user_name TEXT,
    illust_type INTEGER,             -- 0 illust, 1 manga, 2 ugoira
    x_restrict INTEGER,              -- 0 all ages, 1 R-18, 2 R-18G
    ai_type INTEGER,                 -- 0 unknown, 1 not AI, 2 AI-generated
    page_count INTEGER,
    bookmark_count INTEGER,
    create_date TEXT,
    update_date TEXT,
    tags TEXT,                       -- JSON list of tag names, in Pixiv's order
    status TEXT NOT NULL CHECK (status IN ('ok', 'deleted', 'login_required', 'skipped', 'error')),
    reason TEXT,                     -- why, for every status but 'ok'
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    CHECK (status = 'ok' OR reason IS NOT NULL)
);
CREATE TABLE IF NOT EXISTS images (
    artwork_id TEXT NOT NULL REFERENCES artworks(id),
    page INTEGER NOT NULL,
    url TEXT,                        -- the original's URL
    path TEXT,                       -- relative to OUTPUT_DIR; NULL when failed
    original_path TEXT,              -- kept original or ugoira zip, relative to OUTPUT_DIR
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    format TEXT,                     -- of the stored file: jpeg or webp
    source_format TEXT,              -- of the original: png, jpeg, gif, webp, zip
    frame_delays TEXT,               -- ugoira only: JSON list of milliseconds
    status TEXT NOT NULL CHECK (status IN ('kept', 'dropped', 'failed')),
    reason TEXT,
    stored_at TEXT NOT NULL,
    UNIQUE (artwork_id, page),
    CHECK (status = 'kept' OR reason IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
CREATE TABLE IF NOT EXISTS faces (
    artwork_id TEXT NOT NULL,
    page INTEGER NOT NULL,
    idx INTEGER NOT NULL,            -- 0, 1, ... within the page
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL,
    score REAL,
    sources TEXT,                    -- which detectors agreed, e.g. cascade+animeface
    path TEXT,                       -- the crop, relative to OUTPUT_DIR
    PRIMARY KEY (artwork_id, page, idx),
    FOREIGN KEY (artwork_id, page) REFERENCES images(artwork_id, page)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS image_tags (
    artwork_id TEXT NOT NULL,
    page INTEGER NOT NULL,
    tag TEXT NOT NULL,
    category TEXT,                   -- the model's category: General, Character, System, ...
    score REAL NOT NULL,
    model TEXT NOT NULL,             -- the tagger's version (model name + weights hash)
    PRIMARY KEY (artwork_id, page, model, tag),
    FOREIGN KEY (artwork_id, page) REFERENCES images(artwork_id, page)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS image_tags_tag ON image_tags(tag);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,
    translation_en TEXT
);
CREATE TABLE IF NOT EXISTS artwork_tags (
    artwork_id TEXT NOT NULL REFERENCES artworks(id),
    tag TEXT NOT NULL REFERENCES tags(name),
    position INTEGER NOT NULL,
    PRIMARY KEY (artwork_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS artwork_tags_tag ON artwork_tags(tag);
CREATE TABLE IF NOT EXISTS crawls (
    id INTEGER PRIMARY KEY,
    spider TEXT NOT NULL,
    tag TEXT,
    query_key TEXT,
    arguments TEXT,                  -- JSON; never holds the session cookie
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,            -- running, finished, stopped_early, shutdown, interrupted, throttled, failed
    reason TEXT,
    host TEXT,
    pid INTEGER,
    artworks_seen INTEGER DEFAULT 0,
    artworks_fetched INTEGER DEFAULT 0,
    images_kept INTEGER DEFAULT 0,
    images_failed INTEGER DEFAULT 0,
    stats TEXT                       -- JSON of Scrapy's stats at the end
);
CREATE TABLE IF NOT EXISTS search_coverage (
    query_key TEXT PRIMARY KEY,      -- canonical JSON of tag, mode, type, ai, since, until, login
    tag TEXT,
    -- Every artwork at or below this position (create_date, id) down to the end of the results
    -- was catalogued by a crawl that finished cleanly.
    complete_below_date TEXT NOT NULL,
    complete_below_id INTEGER NOT NULL,
    crawl_id INTEGER REFERENCES crawls(id),
    updated TEXT NOT NULL
);
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class KnownArtwork:
    update_date: str | None
    status: str
    complete: bool  # every page has an images row


@dataclass(frozen=True)
class Coverage:
    complete_below_date: str
    complete_below_id: int

    def contains(self, create_date: str, artwork_id: int) -> bool:
        return (create_date, artwork_id) <= (self.complete_below_date, self.complete_below_id)


class Catalog:
    """One connection to the catalogue. Writers are single-threaded (Scrapy's reactor thread)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(self.path)
        self.conn = self.db.conn
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self.db.enable_wal()
        # NORMAL in WAL mode: a crash of the process loses nothing committed; a power cut may
        # lose the last transactions, never corrupt the file.
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        with self.conn:
            self.conn.executescript(SCHEMA)
            for table, column, kind in ADDED_COLUMNS:
                have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    # --- reads -----------------------------------------------------------------------------------
    def known_artworks(self, ids: Iterable[str]) -> dict[str, KnownArtwork]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"""
            SELECT a.id, a.update_date, a.status, a.page_count,
                   (SELECT count(*) FROM images i WHERE i.artwork_id = a.id)
            FROM artworks a WHERE a.id IN ({marks})
            """,
            ids,
        ).fetchall()
        return {
            r[0]: KnownArtwork(update_date=r[1], status=r[2], complete=r[4] >= (r[3] or 0))
            for r in rows
        }

    def coverage(self, query_key: str) -> Coverage | None:
        row = self.conn.execute(
            "SELECT complete_below_date, complete_below_id FROM search_coverage WHERE query_key = ?",
            [query_key],
        ).fetchone()
        return Coverage(row[0], row[1]) if row else None

    def summary(self) -> dict[str, Any]:
        one = lambda sql: self.conn.execute(sql).fetchone()[0]  # noqa: E731
        by_status = dict(self.conn.execute("SELECT status, count(*) FROM images GROUP BY status"))
        return {
            "artworks": one("SELECT count(*) FROM artworks"),
            "artworks_ok": one("SELECT count(*) FROM artworks WHERE status = 'ok'"),
            "images_kept": by_status.get("kept", 0),
            "images_dropped": by_status.get("dropped", 0),
            "images_failed": by_status.get("failed", 0),
            "catalog": str(self.path),
        }

    # --- writes ----------------------------------------------------------------------------------
    def record_artwork(self, artwork: dict[str, Any], images: list[dict[str, Any]], now: str) -> None:
        """Write one artwork, its tags and all its image rows in one transaction.

        Called only once every page has an outcome, so a catalogued 'ok' artwork is complete.
        """
        tags = artwork.get("tags") or []
        with self.conn:
            self.conn.execute(
                """
                INSERT INTO artworks (id, title, user_id, user_name, illust_type, x_restrict,
                    ai_type, page_count, bookmark_count, create_date, update_date, tags, status,
                    reason, first_seen, last_seen)
                VALUES (:id, :title, :user_id, :user_name, :illust_type, :x_restrict, :ai_type,
                    :page_count, :bookmark_count, :create_date, :update_date, :tags, :status,
                    :reason, :now, :now)
                ON CONFLICT(id) DO UPDATE SET
                    title = excluded.title, user_id = excluded.user_id,
                    user_name = excluded.user_name, illust_type = excluded.illust_type,
                    x_restrict = excluded.x_restrict, ai_type = excluded.ai_type,
                    page_count = excluded.page_count,
                    bookmark_count = coalesce(excluded.bookmark_count, bookmark_count),
                    create_date = excluded.create_date, update_date = excluded.update_date,
                    tags = excluded.tags, status = excluded.status, reason = excluded.reason,
                    last_seen = excluded.last_seen
                """,
                {
                    **{k: artwork.get(k) for k in (
                        "id", "title", "user_id", "user_name", "illust_type", "x_restrict",
                        "ai_type", "page_count", "bookmark_count", "create_date", "update_date",
                        "status", "reason",
                    )},
                    "tags": json.dumps([t["name"] for t in tags], ensure_ascii=False),
                    "now": now,
                },
            )
            if tags:
                self.conn.executemany(
                    """
                    INSERT INTO tags (name, translation_en) VALUES (?, ?)
                    ON CONFLICT(name) DO UPDATE SET
                        translation_en = coalesce(excluded.translation_en, translation_en)
                    """,
                    [(t["name"], t.get("translation_en")) for t in tags],
                )
            self.conn.execute("DELETE FROM artwork_tags WHERE artwork_id = ?", [artwork["id"]])
            self.conn.executemany(
                "INSERT OR IGNORE INTO artwork_tags (artwork_id, tag, position) VALUES (?, ?, ?)",
                [(artwork["id"], t["name"], i) for i, t in enumerate(tags)],
            )
            # A re-uploaded artwork may have fewer pages now: its old rows go.
            self.conn.execute("DELETE FROM faces WHERE artwork_id = ?", [artwork["id"]])
            self.conn.execute("DELETE FROM image_tags WHERE artwork_id = ?", [artwork["id"]])
            self.conn.execute("DELETE FROM images WHERE artwork_id = ?", [artwork["id"]])
            self.conn.executemany(
                """
                INSERT INTO images (artwork_id, page, url, path, original_path, sha256, width,
                    height, format, source_format, frame_delays, status, reason, stored_at,
                    classifier_label, classifier_score, classifier_model)
                VALUES (:artwork_id, :page, :url, :path, :original_path, :sha256, :width,
                    :height, :format, :source_format, :frame_delays, :status, :reason, :now,
                    :classifier_label, :classifier_score, :classifier_model)
                """,
                [
                    {
                        "artwork_id": artwork["id"],
                        "now": now,
                        **{k: img.get(k) for k in (
                            "page", "url", "path", "original_path", "sha256", "width",
                            "height", "format", "source_format", "status", "reason",
                        )},
                        "frame_delays": (
                            json.dumps(img["frame_delays"]) if img.get("frame_delays") else None
                        ),
                        "classifier_label": (img.get("classifier") or {}).get("label"),
                        "classifier_score": (img.get("classifier") or {}).get("score"),
                        "classifier_model": (img.get("classifier") or {}).get("model"),
                    }
                    for img in images
                ],
            )
            self.conn.executemany(
                """
                INSERT INTO faces (artwork_id, page, idx, x, y, w, h, score, sources, path)
                VALUES (:artwork_id, :page, :index, :x, :y, :w, :h, :score, :sources, :path)
                """,
                [
                    {"artwork_id": artwork["id"], "page": img["page"], "score": None,
                     "sources": None, "path": None, **face}
                    for img in images
                    for face in img.get("faces") or []
                ],
            )
            self.conn.executemany(
                """
                INSERT OR REPLACE INTO image_tags (artwork_id, page, tag, category, score, model)
                VALUES (:artwork_id, :page, :tag, :category, :score, :model)
                """,
                [
                    {"artwork_id": artwork["id"], "page": img["page"], "category": None, **tag}
                    for img in images
                    for tag in img.get("model_tags") or []
                ],
            )

    def mark_seen(self, ids: Iterable[str], now: str) -> None:
        ids = list(ids)
        if ids:
            with self.conn:
                self.conn.execute(
                    f"UPDATE artworks SET last_seen = ? WHERE id IN ({','.join('?' * len(ids))})",
                    [now, *ids],
                )

    def set_coverage(self, query_key: str, tag: str, date: str, artwork_id: int, crawl_id: int | None) -> None:
        with self.conn:
            self.conn.execute(
                """
                INSERT INTO search_coverage (query_key, tag, complete_below_date,
                    complete_below_id, crawl_id, updated)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(query_key) DO UPDATE SET
                    complete_below_date = excluded.complete_below_date,
                    complete_below_id = excluded.complete_below_id,
                    crawl_id = excluded.crawl_id, updated = excluded.updated
                """,
                [query_key, tag, date, artwork_id, crawl_id, utc_now()],
            )

    def start_crawl(self, spider: str, tag: str | None, query_key: str | None, arguments: dict[str, Any]) -> int:
        self.mark_interrupted_crawls()
        with self.conn:
            cur = self.conn.execute(
                """
                INSERT INTO crawls (spider, tag, query_key, arguments, started, status, host, pid)
                VALUES (?, ?, ?, ?, ?, 'running', ?, ?)
                """,
                [spider, tag, query_key, json.dumps(arguments, ensure_ascii=False), utc_now(),
                 socket.gethostname(), os.getpid()],
            )
        return int(cur.lastrowid)

    def finish_crawl(self, crawl_id: int, status: str, reason: str | None, counts: dict[str, int], stats: dict[str, Any]) -> None:
        with self.conn:
            self.conn.execute(
                """
                UPDATE crawls SET finished = ?, status = ?, reason = ?, artworks_seen = ?,
                    artworks_fetched = ?, images_kept = ?, images_dropped = ?, images_failed = ?,
                    stats = ?
                WHERE id = ?
                """,
                [utc_now(), status, reason, counts.get("artworks_seen", 0),
                 counts.get("artworks_fetched", 0), counts.get("images_kept", 0),
                 counts.get("images_dropped", 0), counts.get("images_failed", 0),
                 json.dumps(stats, default=str), crawl_id],
            )

    def mark_interrupted_crawls(self) -> None:
        """Crawls still 'running' whose process is gone were killed; say so."""
        host = socket.gethostname()
        rows = self.conn.execute(
            "SELECT id, pid, host FROM crawls WHERE status = 'running'"
        ).fetchall()
        dead = [r[0] for r in rows if r[2] == host and not _pid_alive(r[1])]
        if dead:
            with self.conn:
                self.conn.executemany(
                    "UPDATE crawls SET status = 'interrupted', "
                    "reason = 'the process ended without closing the crawl (killed or crashed)' "
                    "WHERE id = ?",
                    [(d,) for d in dead],
                )


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
