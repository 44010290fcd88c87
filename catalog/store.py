"""The SQLite catalogue: the one place its schema lives, and every read and write of it.

The catalogue records everything fetched and decided, and why, and it is what makes crawls
incremental: an artwork whose id and ``updateDate`` are catalogued with all its pages is not
fetched again. ``search_coverage`` remembers, per search query, how far down the results are known
to be complete, so that the "stop after N known artworks" rule only fires inside that range and
an interrupted crawl can never leave a gap (see ``PixivSpider``). ``curation_runs`` remembers which
model version last looked at each picture in each curation stage, so that ``scrapy curate``
(``jobs/curate.py``) skips what the same model has already seen.

sqlite-utils opens the database, turns on WAL and answers queries; the per-artwork writes use
plain prepared SQL in one transaction each, because sqlite-utils' ``upsert`` introspects the table
on every call, which costs more than the write itself at crawl rates.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlite_utils

SCHEMA_VERSION = 3
LOCAL_PREFIX = "local:"  # artwork id of a picture read from a folder: local:{first 20 hex of its sha256}

# Columns added after a table was first released: (table, column, type). A catalogue written by an
# older version gains them when opened (ALTER TABLE ... ADD COLUMN), keeping every row.
ADDED_COLUMNS = [
    ("images", "classifier_label", "TEXT"),
    ("images", "classifier_score", "REAL"),   # the target class's score
    ("images", "classifier_model", "TEXT"),   # the classifier's version
    ("images", "classifier_target", "TEXT"),  # the class that classifier_score is for
    ("crawls", "images_dropped", "INTEGER DEFAULT 0"),
    ("crawls", "node", "TEXT"),  # the catalogue a merged crawl came from (`scrapy catalog merge`); NULL: here
    # Pixel statistics (stages/filters.py), by the JPEG stage or `scrapy curate`; NULL: not taken yet
    ("images", "colorfulness", "REAL"),  # chroma off the main hue: ~0 greyscale, sepia, one tint
    ("images", "line_art", "REAL"),      # share of the non-paper pixels on thin strokes, 0..1
    ("images", "phash", "TEXT"),         # 64-bit perceptual hash (stages/dedup.py), 16 hex digits
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS artworks (
    id TEXT PRIMARY KEY,             -- Pixiv's id; or local:{first 20 hex of sha256} for a picture
                                     -- `scrapy curate` read from a folder (one page, never moved)
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
    -- relative to OUTPUT_DIR, or absolute for a local: picture that `scrapy curate` read from a
    -- folder outside it; NULL when failed (or deleted by CURATE_DELETE_DROPPED)
    path TEXT,
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
-- Which version of each curation stage last looked at a picture; a stage skips a picture whose row
-- has its current version and no error. Written by the crawl and by `scrapy curate`.
CREATE TABLE IF NOT EXISTS curation_runs (
    artwork_id TEXT NOT NULL,
    page INTEGER NOT NULL,
    stage TEXT NOT NULL,             -- faces, classify, tag
    model TEXT NOT NULL,             -- the model's (or face detectors') version
    processed_at TEXT NOT NULL,
    error TEXT,                      -- why the stage found nothing for this picture; NULL when it ran
    PRIMARY KEY (artwork_id, page, stage)
) WITHOUT ROWID;
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
-- Tag aliases and implications, Hydrus's siblings and parents (catalog/tags.py holds the rules).
CREATE TABLE IF NOT EXISTS tag_aliases (
    alias TEXT PRIMARY KEY,          -- the alias's key: catalog.tags.normalise (NFKC, casefold, spaces as _)
    canonical TEXT NOT NULL,         -- the tag it names, as written; may itself be an alias (chains resolve)
    source TEXT,                     -- user (scrapy tags alias), file:NAME (scrapy tags load), translation
    written TEXT                     -- the alias as written
);
CREATE TABLE IF NOT EXISTS tag_implications (
    tag TEXT NOT NULL,               -- as written; both sides are read through the aliases
    implies TEXT NOT NULL,
    source TEXT,
    PRIMARY KEY (tag, implies)
);
-- Small JPEGs of the stored pictures, written by `scrapy report`, shown by Datasette (metadata.json).
CREATE TABLE IF NOT EXISTS thumbnails (
    artwork_id TEXT NOT NULL,
    page INTEGER NOT NULL,
    source TEXT NOT NULL,            -- sha256 of the picture it was made from: a changed picture gets a new one
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    jpeg BLOB NOT NULL,
    PRIMARY KEY (artwork_id, page)
);
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
-- Item icons cut from a wiki's CSS sprite sheets (stages/sprites/). A table row labels a sprite
-- by kind and in-game id; a CSS id that no row names is kept unlabelled, keyed by that id.
CREATE TABLE IF NOT EXISTS sprites (
    key TEXT PRIMARY KEY,            -- collectible:001, trinket:001; css:{css_id} when unlabelled
    kind TEXT NOT NULL,              -- the sheet's kind: collectible, trinket
    game_id INTEGER,                 -- the in-game id; NULL when unlabelled
    css_id TEXT NOT NULL,            -- the icon span's id (collectibles_001)
    labelled INTEGER NOT NULL,       -- 1 when a table row names it
    name_en TEXT,
    name_zh TEXT,
    quality INTEGER,                 -- 0-4
    charge TEXT,                     -- as the wiki writes it ("4", "3秒"); NULL for none
    description TEXT,
    sheet_url TEXT NOT NULL,
    sheet_sha1 TEXT,                 -- the sheet's sha1 (MediaWiki imageinfo): re-slice when it changes
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL,  -- sheet pixels
    sha256 TEXT NOT NULL,            -- of the cell's RGBA pixels and size
    blank INTEGER NOT NULL,          -- fully transparent: no file
    duplicate_of TEXT,               -- key of the first sprite with the same pixels: no file
    path TEXT,                       -- native PNG, relative to OUTPUT_DIR; NULL when blank or duplicate
    upscale_path TEXT,               -- nearest-neighbour upscale (SPRITES_UPSCALE); NULL likewise
    sliced_at TEXT NOT NULL,         -- when these pixels were last cut (kept while they stay the same)
    CHECK ((labelled = 1) = (game_id IS NOT NULL))
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS sprites_kind_game_id ON sprites(kind, game_id) WHERE game_id IS NOT NULL;
-- The wiki list page each kind's sprites come from (crawler/spiders/isaac_wiki.py), and what its sheet
-- was last cut from: a re-crawl re-slices only when the page revision, its CSS or the sheet changed.
CREATE TABLE IF NOT EXISTS wiki_pages (
    kind TEXT PRIMARY KEY,           -- collectible, trinket
    page_url TEXT NOT NULL,
    source TEXT,                     -- how it was read: api, html (the API failing), browser
    revid INTEGER,                   -- the page's revision (action=parse revid, or wgRevisionId)
    styles_sha1 TEXT,                -- of the CSS text, or of the browser's computed styles
    sheet_url TEXT,
    sheet_sha1 TEXT,                 -- hex, as imageinfo gives it (or of the downloaded bytes)
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    reason TEXT,                     -- why the last attempt failed; the fingerprint above stays the last good one
    problems TEXT,                   -- JSON: css id or key -> why it got no sprite
    checked_at TEXT NOT NULL,
    sliced_at TEXT,
    CHECK (status = 'ok' OR reason IS NOT NULL)
);
-- Keep or drop said by a person (`scrapy review`, jobs/review.py). It outranks every rule and
-- model, in the crawl, `scrapy curate` and the export, and stays until the person clears it.
CREATE TABLE IF NOT EXISTS manual_decisions (
    artwork_id TEXT NOT NULL,
    page INTEGER NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('keep', 'drop')),
    decided_at TEXT NOT NULL,
    PRIMARY KEY (artwork_id, page)
) WITHOUT ROWID;
-- Is this the wanted character? (`scrapy curate --stages identity`, jobs/identity.py): the head
-- region's embedding, and the last run's match against its references or the dominant cluster.
CREATE TABLE IF NOT EXISTS identity (
    artwork_id TEXT NOT NULL,
    page INTEGER NOT NULL,
    embedder TEXT NOT NULL,          -- the embedder's version: colour-v1, or onnx-{sha256 prefix}
    source TEXT NOT NULL,            -- what was embedded: face x,y,w,h (grown), upper or whole
    embedding BLOB NOT NULL,         -- float32 little-endian, L2-normalised
    matched INTEGER,                 -- 1: the character, 0: not; NULL: not matched yet
    distance REAL,                   -- to the references' (or dominant cluster's) centroid
    cluster INTEGER,                 -- HDBSCAN label in the last run; -1: noise
    cluster_size INTEGER,
    reason TEXT,                     -- distance, cluster and size, embedder version
    matched_at TEXT,
    PRIMARY KEY (artwork_id, page)
) WITHOUT ROWID;
"""


# Views for people reading the catalogue (Datasette, sqlite3): one row per picture, thumbnail beside
# what was decided and why.
VIEWS = """
CREATE VIEW IF NOT EXISTS picture_review AS
SELECT i.artwork_id, i.page, t.jpeg AS thumbnail, i.status, i.reason, i.classifier_label,
       i.classifier_score, i.classifier_model, a.title, a.user_name, a.tags, i.path
FROM images i JOIN artworks a ON a.id = i.artwork_id
LEFT JOIN thumbnails t ON t.artwork_id = i.artwork_id AND t.page = i.page;
"""

def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class KnownArtwork:
    update_date: str | None
    status: str
    complete: bool  # every page has an images row


@dataclass(frozen=True)
class StoredPicture:
    """One ``images`` row as ``scrapy curate`` sees it."""

    artwork_id: str
    page: int
    path: str | None
    sha256: str | None
    status: str
    reason: str | None


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
            self.conn.executescript(VIEWS)  # after ADDED_COLUMNS: the views read them
            if self.conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # a no-op run writes nothing
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
        def one(sql: str) -> int:
            return int(self.conn.execute(sql).fetchone()[0])

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
            self._upsert_artwork(artwork, tags, now)
            self._replace_artwork_tags(artwork["id"], tags)
            self._replace_images(artwork["id"], images, now)

    def _upsert_artwork(self, artwork: dict[str, Any], tags: list[dict[str, Any]], now: str) -> None:
        """The artwork's row; ``first_seen`` stays, and a missing bookmark count keeps the old one."""
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

    def _replace_artwork_tags(self, artwork_id: str, tags: list[dict[str, Any]]) -> None:
        """The artwork's Pixiv tags in their order; a translation now missing keeps the one known."""
        if tags:
            self.conn.executemany(
                """
                INSERT INTO tags (name, translation_en) VALUES (?, ?)
                ON CONFLICT(name) DO UPDATE SET
                    translation_en = coalesce(excluded.translation_en, translation_en)
                """,
                [(t["name"], t.get("translation_en")) for t in tags],
            )
        self.conn.execute("DELETE FROM artwork_tags WHERE artwork_id = ?", [artwork_id])
        self.conn.executemany(
            "INSERT OR IGNORE INTO artwork_tags (artwork_id, tag, position) VALUES (?, ?, ?)",
            [(artwork_id, t["name"], i) for i, t in enumerate(tags)],
        )

    def _replace_images(self, artwork_id: str, images: list[dict[str, Any]], now: str) -> None:
        """The artwork's image rows, and what the stages found on them, written anew."""
        # A re-uploaded artwork may have fewer pages now: its old rows go.
        self.conn.execute("DELETE FROM faces WHERE artwork_id = ?", [artwork_id])
        self.conn.execute("DELETE FROM image_tags WHERE artwork_id = ?", [artwork_id])
        self.conn.execute("DELETE FROM curation_runs WHERE artwork_id = ?", [artwork_id])
        self.conn.execute("DELETE FROM images WHERE artwork_id = ?", [artwork_id])
        self.conn.executemany(
            """
            INSERT INTO images (artwork_id, page, url, path, original_path, sha256, width,
                height, format, source_format, frame_delays, status, reason, stored_at,
                classifier_label, classifier_score, classifier_model, classifier_target,
                colorfulness, line_art, phash)
            VALUES (:artwork_id, :page, :url, :path, :original_path, :sha256, :width,
                :height, :format, :source_format, :frame_delays, :status, :reason, :now,
                :classifier_label, :classifier_score, :classifier_model, :classifier_target,
                :colorfulness, :line_art, :phash)
            """,
            [
                {
                    "artwork_id": artwork_id,
                    "now": now,
                    **{k: img.get(k) for k in (
                        "page", "url", "path", "original_path", "sha256", "width",
                        "height", "format", "source_format", "status", "reason",
                        "colorfulness", "line_art", "phash",
                    )},
                    "frame_delays": (
                        json.dumps(img["frame_delays"]) if img.get("frame_delays") else None
                    ),
                    "classifier_label": (img.get("classifier") or {}).get("label"),
                    "classifier_score": (img.get("classifier") or {}).get("score"),
                    "classifier_model": (img.get("classifier") or {}).get("model"),
                    "classifier_target": (img.get("classifier") or {}).get("target"),
                }
                for img in images
            ],
        )
        self._insert_stage_results(artwork_id, images, now)

    def _insert_stage_results(self, artwork_id: str, images: list[dict[str, Any]], now: str) -> None:
        """What the curation stages found on each page: faces, model tags, and which stages ran."""
        self.conn.executemany(
            """
            INSERT INTO faces (artwork_id, page, idx, x, y, w, h, score, sources, path)
            VALUES (:artwork_id, :page, :index, :x, :y, :w, :h, :score, :sources, :path)
            """,
            [
                {"artwork_id": artwork_id, "page": img["page"], "score": None,
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
                {"artwork_id": artwork_id, "page": img["page"], "category": None, **tag}
                for img in images
                for tag in img.get("model_tags") or []
            ],
        )
        self.conn.executemany(
            """
            INSERT INTO curation_runs (artwork_id, page, stage, model, processed_at, error)
            VALUES (?, ?, ?, ?, ?, ?)
            """,
            [
                (artwork_id, img["page"], stage, model, now, error)
                for img in images
                for stage, model, error in stages_tried(img)
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
        assert cur.lastrowid is not None  # an INSERT always sets it
        return cur.lastrowid

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

    # --- merging node catalogues (`scrapy catalog merge`, distributed crawls) ------------------------
    # The tables merged by their own rule; every other table with an artwork_id column goes with
    # its artwork. Other tables (sprites, ...) are not crawl results of a node and are left alone.
    _MERGED_BY_RULE = ("artworks", "tags", "crawls", "search_coverage")

    def merge_from(self, source: str | os.PathLike[str], node: str | None = None) -> dict[str, Any]:
        """Fold another catalogue (a crawler node's) into this one, in one transaction.

        Artworks by id: the newer ``update_date`` wins, with its pages and everything else keyed
        by ``artwork_id`` (images, faces, model tags, ...); at the same date a row in error gives
        way to one that is not, and two different final outcomes are settled by the later
        ``last_seen``. Otherwise this catalogue's row stays (curation done here is kept), taking the
        earlier ``first_seen`` and later ``last_seen``. Tags: union, keeping a known translation.
        Crawls: appended once each (by host, pid and start) with ``node`` saying where they ran.
        Coverage: the deeper mark per query. Merging the same source twice changes nothing more.
        """
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"no catalogue at {source}")
        if source.resolve() == self.path.resolve():
            raise ValueError(f"{source} is this catalogue")
        label = node or str(source)
        conn = self.conn
        conn.execute("ATTACH DATABASE ? AS src", [str(source)])
        try:
            src_tables = {r[0] for r in conn.execute("SELECT name FROM src.sqlite_master WHERE type = 'table'")}
            if "artworks" not in src_tables:
                raise ValueError(f"{source} is not a catalogue (it has no artworks table)")
            conn.execute("BEGIN IMMEDIATE")
            try:
                counts = self._merge_attached(src_tables, label)
                conn.execute("COMMIT")  # deferred foreign keys are checked here
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("DROP TABLE IF EXISTS temp.merge_winners")
            conn.execute("DROP TABLE IF EXISTS temp.merge_seen")
            conn.execute("DETACH DATABASE src")
        return counts

    def _columns(self, schema: str, table: str) -> list[str]:
        return [r[1] for r in self.conn.execute(f'PRAGMA {schema}.table_info("{table}")')]

    def _shared_columns(self, table: str) -> str:
        src = set(self._columns("src", table))
        return ", ".join(f'"{c}"' for c in self._columns("main", table) if c in src)

    def _merge_attached(self, src_tables: set[str], label: str) -> dict[str, Any]:
        conn = self.conn
        def one(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])

        conn.execute("PRAGMA defer_foreign_keys = ON")  # rows of one artwork move in any order
        conn.execute("CREATE TEMP TABLE merge_winners (id TEXT PRIMARY KEY)")
        conn.execute(
            """
            INSERT INTO temp.merge_winners
            SELECT s.id FROM src.artworks s LEFT JOIN main.artworks d ON d.id = s.id
            WHERE d.id IS NULL
               OR coalesce(s.update_date, '') > coalesce(d.update_date, '')
               OR (coalesce(s.update_date, '') = coalesce(d.update_date, '') AND s.status != d.status
                   AND (d.status = 'error' OR (s.status != 'error' AND s.last_seen > d.last_seen)))
            """
        )
        conn.execute(
            """
            CREATE TEMP TABLE merge_seen AS
            SELECT s.id, min(s.first_seen, d.first_seen) AS first_seen, max(s.last_seen, d.last_seen) AS last_seen
            FROM src.artworks s JOIN main.artworks d ON d.id = s.id
            """
        )
        added = one("SELECT count(*) FROM temp.merge_winners WHERE id NOT IN (SELECT id FROM main.artworks)")
        replaced = one("SELECT count(*) FROM temp.merge_winners") - added

        if "tags" in src_tables:
            conn.execute(
                """
                INSERT INTO main.tags (name, translation_en) SELECT name, translation_en FROM src.tags WHERE true
                ON CONFLICT(name) DO UPDATE SET translation_en = coalesce(excluded.translation_en, translation_en)
                """
            )
        main_tables = [r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")]
        by_artwork = [t for t in main_tables if t not in self._MERGED_BY_RULE and "artwork_id" in self._columns("main", t)]
        winners = "SELECT id FROM temp.merge_winners"
        for table in by_artwork:
            conn.execute(f'DELETE FROM main."{table}" WHERE artwork_id IN ({winners})')
        conn.execute(f"DELETE FROM main.artworks WHERE id IN ({winners})")
        columns = self._shared_columns("artworks")
        conn.execute(f"INSERT INTO main.artworks ({columns}) SELECT {columns} FROM src.artworks WHERE id IN ({winners})")
        for table in by_artwork:
            if table in src_tables:
                columns = self._shared_columns(table)
                conn.execute(
                    f'INSERT INTO main."{table}" ({columns}) SELECT {columns} FROM src."{table}" WHERE artwork_id IN ({winners})'
                )
        conn.execute(
            """
            UPDATE main.artworks SET
                first_seen = (SELECT m.first_seen FROM temp.merge_seen m WHERE m.id = artworks.id),
                last_seen = (SELECT m.last_seen FROM temp.merge_seen m WHERE m.id = artworks.id)
            WHERE id IN (SELECT id FROM temp.merge_seen)
            """
        )
        crawl_ids, crawls_added = self._merge_crawls(label) if "crawls" in src_tables else ({}, 0)
        coverage = self._merge_coverage(crawl_ids) if "search_coverage" in src_tables else 0
        skipped = sorted(
            t for t in src_tables - set(self._MERGED_BY_RULE) - set(by_artwork)
            if not t.startswith("sqlite_") and one(f'SELECT count(*) FROM src."{t}"')
        )
        return {
            "artworks_added": added, "artworks_replaced": replaced,
            "images_copied": one(f"SELECT count(*) FROM main.images WHERE artwork_id IN ({winners})"),
            "crawls_added": crawls_added, "coverage_moved": coverage, "tables_not_merged": skipped,
        }

    def _merge_crawls(self, label: str) -> tuple[dict[int, int], int]:
        """Append the source's crawls not already here; map their ids to this catalogue's."""
        conn = self.conn
        columns = [c for c in self._shared_columns("crawls").split(", ") if c not in ('"id"', '"node"')]
        has_node = "node" in self._columns("src", "crawls")
        mapping, added = {}, 0
        rows = conn.execute(
            f"SELECT id, {'node' if has_node else 'NULL'}, {', '.join(columns)} FROM src.crawls ORDER BY id"
        ).fetchall()
        names = [c.strip('"') for c in columns]
        for src_id, node, *values in rows:
            row = dict(zip(names, values))
            found = conn.execute(
                "SELECT id FROM main.crawls WHERE host IS ? AND pid IS ? AND started = ? AND spider = ?",
                [row.get("host"), row.get("pid"), row["started"], row["spider"]],
            ).fetchone()
            if found:
                mapping[src_id] = found[0]
                continue
            cur = conn.execute(
                f"INSERT INTO main.crawls ({', '.join(columns)}, node) VALUES ({', '.join('?' * len(columns))}, ?)",
                [*values, node or label],
            )
            assert cur.lastrowid is not None
            mapping[src_id] = cur.lastrowid
            added += 1
        return mapping, added

    def _merge_coverage(self, crawl_ids: dict[int, int]) -> int:
        """Each query keeps the deeper "complete below" mark: the union of two catalogues that are
        each complete below a point is complete below both."""
        moved = 0
        for query_key, tag, date, artwork_id, crawl_id, updated in self.conn.execute(
            "SELECT query_key, tag, complete_below_date, complete_below_id, crawl_id, updated FROM src.search_coverage"
        ).fetchall():
            have = self.conn.execute(
                "SELECT complete_below_date, complete_below_id FROM main.search_coverage WHERE query_key = ?", [query_key]
            ).fetchone()
            if have is not None and (date, artwork_id) <= tuple(have):
                continue
            self.conn.execute(
                """
                INSERT INTO main.search_coverage (query_key, tag, complete_below_date, complete_below_id, crawl_id, updated)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(query_key) DO UPDATE SET complete_below_date = excluded.complete_below_date,
                    complete_below_id = excluded.complete_below_id, crawl_id = excluded.crawl_id,
                    updated = excluded.updated
                """,
                [query_key, tag, date, artwork_id, crawl_ids.get(crawl_id), updated],
            )
            moved += 1
        return moved

    # --- curation (`scrapy curate`, jobs/curate.py) -----------------------------------------
    # The writes below do not commit: the caller groups one batch of pictures in ``with batch():``,
    # so a run killed half-way keeps every finished batch and nothing of the unfinished one.
    @contextmanager
    def batch(self) -> Iterator[Catalog]:
        with self.conn:
            yield self

    _PICTURE = "SELECT artwork_id, page, path, sha256, status, reason FROM images"

    def curatable_pictures(self) -> list[StoredPicture]:
        """Every stored still picture: kept or dropped, with a file (JPEGs; any format for local:)."""
        rows = self.conn.execute(
            f"""{self._PICTURE} WHERE status IN ('kept', 'dropped') AND path IS NOT NULL
                AND (path LIKE '%.jpg' OR artwork_id LIKE 'local:%') ORDER BY artwork_id, page"""
        ).fetchall()
        return [StoredPicture(*row) for row in rows]

    def picture(self, artwork_id: str, page: int) -> StoredPicture | None:
        row = self.conn.execute(f"{self._PICTURE} WHERE artwork_id = ? AND page = ?", [artwork_id, page]).fetchone()
        return StoredPicture(*row) if row else None

    def picture_at(self, path: str) -> StoredPicture | None:
        row = self.conn.execute(f"{self._PICTURE} WHERE path = ? ORDER BY artwork_id, page", [path]).fetchone()
        return StoredPicture(*row) if row else None

    def stage_done(self, artwork_id: str, page: int, stage: str, model: str) -> bool:
        """Whether ``model`` already ran this stage on the picture without an error.

        Without a ``curation_runs`` row (a catalogue written before there was one), a stored
        classifier score or model tags of this version count as done too.
        """
        key = [artwork_id, page]
        row = self.conn.execute(
            "SELECT model, error FROM curation_runs WHERE artwork_id = ? AND page = ? AND stage = ?", [*key, stage]
        ).fetchone()
        if row is not None:
            return row[0] == model and row[1] is None
        if stage == "classify":
            sql = "SELECT 1 FROM images WHERE artwork_id = ? AND page = ? AND classifier_model = ?"
        elif stage == "tag":
            sql = "SELECT 1 FROM image_tags WHERE artwork_id = ? AND page = ? AND model = ? LIMIT 1"
        else:
            return False
        return self.conn.execute(sql, [*key, model]).fetchone() is not None

    def picture_stats(self, artwork_id: str, page: int) -> dict[str, Any] | None:
        """The stored pixel statistics (colorfulness, line_art, phash), or None when not taken yet."""
        row = self.conn.execute(
            "SELECT colorfulness, line_art, phash FROM images WHERE artwork_id = ? AND page = ?", [artwork_id, page]
        ).fetchone()
        return None if row is None or row[0] is None else {"colorfulness": row[0], "line_art": row[1], "phash": row[2]}

    def set_picture_stats(self, artwork_id: str, page: int, stats: dict[str, Any]) -> None:
        self.conn.execute(
            "UPDATE images SET colorfulness = ?, line_art = ?, phash = ? WHERE artwork_id = ? AND page = ?",
            [stats["colorfulness"], stats["line_art"], stats["phash"], artwork_id, page],
        )

    def duplicate_facts(self) -> dict[tuple[str, int], tuple[str | None, str | None, int, int | None]]:
        """(artwork_id, page) -> (sha256, phash, width x height, bookmark count) of every picture with
        a file, read in one query for the curate-time duplicate grouping."""
        return {
            (artwork_id, page): (sha256, phash, (width or 0) * (height or 0), bookmarks)
            for artwork_id, page, sha256, phash, width, height, bookmarks in self.conn.execute(
                "SELECT i.artwork_id, i.page, i.sha256, i.phash, i.width, i.height, a.bookmark_count "
                "FROM images i LEFT JOIN artworks a ON a.id = i.artwork_id WHERE i.path IS NOT NULL"
            )
        }

    def curation_state(self, artwork_id: str, page: int) -> dict[str, Any]:
        """What is stored about one picture, shaped as the decision rules read a crawl's records:
        ``{"picture", "record": {page, width, height, colorfulness, line_art, phash, classifier, faces,
        model_tags}, "artwork": {x_restrict, ai_type, bookmark_count, tags}}``.

        ``faces`` is None unless the face stage ran without an error (or left rows, in a catalogue
        older than ``curation_runs``); ``model_tags`` are those of the tagger version that last ran;
        ``identity`` is the last identity match (``identity_match``), or None.
        """
        key = [artwork_id, page]
        picture = self.picture(artwork_id, page)
        runs = {
            stage: (model, error)
            for stage, model, error in self.conn.execute(
                "SELECT stage, model, error FROM curation_runs WHERE artwork_id = ? AND page = ?", key
            )
        }
        (label, score, model, target, width, height, colorfulness, line_art, phash) = self.conn.execute(
            "SELECT classifier_label, classifier_score, classifier_model, classifier_target, width, height, "
            "colorfulness, line_art, phash FROM images WHERE artwork_id = ? AND page = ?",
            key,
        ).fetchone() or (None,) * 9
        record: dict[str, Any] = {"page": page, "width": width, "height": height, "colorfulness": colorfulness,
                                  "line_art": line_art, "phash": phash}
        record["classifier"] = (
            {"label": label, "score": score, "target": target, "model": model} if model is not None else None
        )
        boxes = [
            {"index": idx, "x": x, "y": y, "w": w, "h": h, "score": face_score, "sources": sources, "path": path}
            for idx, x, y, w, h, face_score, sources, path in self.conn.execute(
                "SELECT idx, x, y, w, h, score, sources, path FROM faces WHERE artwork_id = ? AND page = ? ORDER BY idx",
                key,
            )
        ]
        faces_run = runs.get("faces")
        record["faces"] = boxes if (faces_run and faces_run[1] is None) or boxes else None
        record["identity"] = self.identity_match(artwork_id, page)
        tag_run = runs.get("tag")
        tag_model = tag_run[0] if tag_run and tag_run[1] is None else self.conn.execute(
            "SELECT min(model) FROM image_tags WHERE artwork_id = ? AND page = ?", key
        ).fetchone()[0]
        record["model_tags"] = [
            {"tag": tag, "category": category, "score": tag_score, "model": tag_model}
            for tag, category, tag_score in self.conn.execute(
                "SELECT tag, category, score FROM image_tags WHERE artwork_id = ? AND page = ? AND model = ? "
                "ORDER BY score DESC, tag",
                [*key, tag_model],
            )
        ]
        x_restrict, ai_type, bookmark_count = self.conn.execute(
            "SELECT x_restrict, ai_type, bookmark_count FROM artworks WHERE id = ?", [artwork_id]
        ).fetchone() or (None, None, None)
        artwork = {
            "x_restrict": x_restrict,
            "ai_type": ai_type,
            "bookmark_count": bookmark_count,
            "tags": [
                {"name": name}
                for (name,) in self.conn.execute(
                    "SELECT tag FROM artwork_tags WHERE artwork_id = ? ORDER BY position", [artwork_id]
                )
            ],
        }
        record["manual"] = self.manual_decision(artwork_id, page)  # a person's word outranks the rules
        return {"picture": picture, "record": record, "artwork": artwork}

    def add_local_picture(self, artwork_id: str, title: str, image: dict[str, Any], now: str) -> None:
        """A picture read from a folder: an artwork of one page, content-addressed by ``artwork_id``."""
        self.conn.execute(
            """
            INSERT INTO artworks (id, title, page_count, tags, status, first_seen, last_seen)
            VALUES (?, ?, 1, '[]', 'ok', ?, ?) ON CONFLICT(id) DO NOTHING
            """,
            [artwork_id, title, now, now],
        )
        self.conn.execute(
            """
            INSERT INTO images (artwork_id, page, path, sha256, width, height, format, source_format,
                status, reason, stored_at)
            VALUES (:artwork_id, 0, :path, :sha256, :width, :height, :format, :format, :status, :reason, :now)
            """,
            {"artwork_id": artwork_id, "now": now, "width": None, "height": None, "format": None,
             "reason": None, **image},
        )

    def set_picture_path(self, artwork_id: str, page: int, path: str | None) -> None:
        self.conn.execute("UPDATE images SET path = ? WHERE artwork_id = ? AND page = ?", [path, artwork_id, page])

    def set_classifier(self, artwork_id: str, page: int, result: dict[str, Any]) -> None:
        self.conn.execute(
            """
            UPDATE images SET classifier_label = ?, classifier_score = ?, classifier_model = ?,
                classifier_target = ?
            WHERE artwork_id = ? AND page = ?
            """,
            [result["label"], result["score"], result["model"], result.get("target"), artwork_id, page],
        )

    def replace_model_tags(self, artwork_id: str, page: int, model: str, tags: list[dict[str, Any]]) -> None:
        """This tagger version's tags for the picture; other versions' rows stay."""
        self.conn.execute(
            "DELETE FROM image_tags WHERE artwork_id = ? AND page = ? AND model = ?", [artwork_id, page, model]
        )
        self.conn.executemany(
            "INSERT INTO image_tags (artwork_id, page, tag, category, score, model) VALUES (?, ?, ?, ?, ?, ?)",
            [(artwork_id, page, t["tag"], t.get("category"), t["score"], model) for t in tags],
        )

    def replace_faces(self, artwork_id: str, page: int, faces: list[dict[str, Any]]) -> None:
        self.conn.execute("DELETE FROM faces WHERE artwork_id = ? AND page = ?", [artwork_id, page])
        self.conn.executemany(
            """
            INSERT INTO faces (artwork_id, page, idx, x, y, w, h, score, sources, path)
            VALUES (:artwork_id, :page, :index, :x, :y, :w, :h, :score, :sources, :path)
            """,
            [{"artwork_id": artwork_id, "page": page, "score": None, "sources": None, "path": None, **face}
             for face in faces],
        )

    def identity_embedding(self, artwork_id: str, page: int) -> tuple[str, str, bytes] | None:
        """(embedder version, source, float32 bytes) stored for the picture, or None."""
        row: tuple[str, str, bytes] | None = self.conn.execute(
            "SELECT embedder, source, embedding FROM identity WHERE artwork_id = ? AND page = ?", [artwork_id, page]
        ).fetchone()
        return row

    def set_identity_embedding(self, artwork_id: str, page: int, embedder: str, source: str, embedding: bytes) -> None:
        """A new embedding; the match of an older one no longer holds, so it is cleared."""
        self.conn.execute(
            """
            INSERT INTO identity (artwork_id, page, embedder, source, embedding) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (artwork_id, page) DO UPDATE SET embedder = excluded.embedder, source = excluded.source,
                embedding = excluded.embedding, matched = NULL, distance = NULL, cluster = NULL,
                cluster_size = NULL, reason = NULL, matched_at = NULL
            """,
            [artwork_id, page, embedder, source, embedding],
        )

    def set_identity_match(self, artwork_id: str, page: int, match: dict[str, Any], now: str) -> None:
        self.conn.execute(
            "UPDATE identity SET matched = ?, distance = ?, cluster = ?, cluster_size = ?, reason = ?, matched_at = ? "
            "WHERE artwork_id = ? AND page = ?",
            [int(match["matched"]), match["distance"], match["cluster"], match["cluster_size"], match["reason"], now,
             artwork_id, page],
        )

    def identity_match(self, artwork_id: str, page: int) -> dict[str, Any] | None:
        """The last identity match of the picture (``matched``, ``distance``, ``cluster``, ``cluster_size``,
        ``reason``, ``embedder``), or None when none was made."""
        row = self.conn.execute(
            "SELECT matched, distance, cluster, cluster_size, reason, embedder FROM identity "
            "WHERE artwork_id = ? AND page = ? AND matched IS NOT NULL", [artwork_id, page]
        ).fetchone()
        if row is None:
            return None
        keys = ("matched", "distance", "cluster", "cluster_size", "reason", "embedder")
        return {**dict(zip(keys, row)), "matched": bool(row[0])}

    def record_stage_run(self, artwork_id: str, page: int, stage: str, model: str, error: str | None, now: str) -> None:
        """That ``model`` ran ``stage`` on the picture (and why it failed, if it did).

        The same failure again leaves the row as it was, so re-running over a broken picture
        changes nothing.
        """
        self.conn.execute(
            """
            INSERT INTO curation_runs (artwork_id, page, stage, model, processed_at, error)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (artwork_id, page, stage) DO UPDATE SET
                model = excluded.model, processed_at = excluded.processed_at, error = excluded.error
            WHERE excluded.error IS NULL OR curation_runs.model IS NOT excluded.model
                OR curation_runs.error IS NOT excluded.error
            """,
            [artwork_id, page, stage, model, now, error],
        )

    def set_decision(self, artwork_id: str, page: int, status: str, reason: str | None, path: str | None) -> None:
        self.conn.execute(
            "UPDATE images SET status = ?, reason = ?, path = ? WHERE artwork_id = ? AND page = ?",
            [status, reason, path, artwork_id, page],
        )

    def manual_decision(self, artwork_id: str, page: int) -> dict[str, str] | None:
        """``{"decision": "keep"|"drop", "decided_at": ...}`` when a person decided this picture."""
        row = self.conn.execute(
            "SELECT decision, decided_at FROM manual_decisions WHERE artwork_id = ? AND page = ?", [artwork_id, page]
        ).fetchone()
        return {"decision": row[0], "decided_at": row[1]} if row else None

    def set_manual_decision(self, artwork_id: str, page: int, decision: str | None, now: str) -> None:
        """Record a person's keep or drop; None clears it (the rules decide again at the next curate)."""
        if decision is None:
            self.conn.execute("DELETE FROM manual_decisions WHERE artwork_id = ? AND page = ?", [artwork_id, page])
            return
        self.conn.execute(
            """
            INSERT INTO manual_decisions (artwork_id, page, decision, decided_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (artwork_id, page) DO UPDATE SET decision = excluded.decision, decided_at = excluded.decided_at
            """,
            [artwork_id, page, decision, now],
        )

    # --- review (`scrapy report`, jobs/report.py) --------------------------------------------------
    def thumbnail(self, artwork_id: str, page: int, source: str) -> bytes | None:
        """The stored thumbnail JPEG if it was made from this very picture (``source``: its sha256)."""
        row = self.conn.execute(
            "SELECT jpeg FROM thumbnails WHERE artwork_id = ? AND page = ? AND source = ?", [artwork_id, page, source]
        ).fetchone()
        return row[0] if row else None

    def put_thumbnail(self, artwork_id: str, page: int, source: str, width: int, height: int, jpeg: bytes) -> None:
        """Store a thumbnail; no commit, so the caller can group many (``with catalog.batch():``)."""
        self.conn.execute(
            """
            INSERT INTO thumbnails (artwork_id, page, source, width, height, jpeg) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (artwork_id, page) DO UPDATE SET source = excluded.source, width = excluded.width,
                height = excluded.height, jpeg = excluded.jpeg
            """,
            [artwork_id, page, source, width, height, jpeg],
        )

    # --- what the report, the review page and the demo list -------------------------------------------
    def report_rows(self) -> list[tuple[Any, ...]]:
        """Every picture with its artwork and classifier result, newest artwork first (jobs/report.py)."""
        return self.conn.execute(
            """
            SELECT i.artwork_id, i.page, i.status, i.reason, i.path, i.sha256, a.title, a.user_name, a.tags,
                   i.classifier_label, i.classifier_score, i.classifier_model, i.classifier_target
            FROM images i LEFT JOIN artworks a ON a.id = i.artwork_id
            ORDER BY length(i.artwork_id) DESC, i.artwork_id DESC, i.page
            """
        ).fetchall()

    def last_tagger_versions(self) -> dict[tuple[str, int], str]:
        """The tagger version that last ran without an error on each picture (as `scrapy curate` recorded it)."""
        return {
            (artwork_id, page): model
            for artwork_id, page, model in self.conn.execute(
                "SELECT artwork_id, page, model FROM curation_runs WHERE stage = 'tag' AND error IS NULL"
            )
        }

    def model_tags_best_first(self) -> Iterator[tuple[str, int, str, float, str]]:
        """(artwork id, page, tag, score, tagger version) of every model tag, by picture, best first."""
        yield from self.conn.execute(
            "SELECT artwork_id, page, tag, score, model FROM image_tags ORDER BY artwork_id, page, score DESC, tag"
        )

    def face_crop_paths(self) -> dict[tuple[str, int], list[str]]:
        """The stored face crops of each picture, in face order."""
        faces: dict[tuple[str, int], list[str]] = {}
        for artwork_id, page, path in self.conn.execute(
            "SELECT artwork_id, page, path FROM faces WHERE path IS NOT NULL ORDER BY artwork_id, page, idx"
        ):
            faces.setdefault((artwork_id, page), []).append(path)
        return faces

    def review_listing(self, status: str | None, limit: int, offset: int) -> tuple[list[tuple[Any, ...]], int]:
        """One page of pictures (all, or of one status) with their manual decision, and how many there are
        (jobs/review.py)."""
        where, params = ("", []) if status is None else ("WHERE i.status = ?", [status])
        total: int = self.conn.execute(f"SELECT count(*) FROM images i {where}", params).fetchone()[0]
        rows = self.conn.execute(
            f"""
            SELECT i.artwork_id, i.page, i.status, i.reason, i.path, a.title, m.decision
            FROM images i LEFT JOIN artworks a ON a.id = i.artwork_id
            LEFT JOIN manual_decisions m ON m.artwork_id = i.artwork_id AND m.page = i.page
            {where}
            ORDER BY length(i.artwork_id) DESC, i.artwork_id DESC, i.page LIMIT ? OFFSET ?
            """,
            [*params, limit, offset],
        ).fetchall()
        return rows, total

    def last_crawl(self) -> tuple[int, str, int, int] | None:
        """(id, status, artworks seen, artworks fetched) of the newest crawl."""
        row: tuple[int, str, int, int] | None = self.conn.execute(
            "SELECT id, status, artworks_seen, artworks_fetched FROM crawls ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return row

    def failure_counts(self) -> list[tuple[str, int]]:
        """How many pictures failed for each reason, most first."""
        return self.conn.execute(
            "SELECT reason, count(*) FROM images WHERE status = 'failed' GROUP BY reason ORDER BY 2 DESC"
        ).fetchall()

    def artwork_status_counts(self) -> list[tuple[str, int]]:
        return self.conn.execute("SELECT status, count(*) FROM artworks GROUP BY status").fetchall()

    def decided_pictures(self) -> list[tuple[str, str, str | None]]:
        """(artwork id, status, reason) of every kept or dropped picture."""
        return self.conn.execute(
            "SELECT artwork_id, status, reason FROM images WHERE status IN ('kept', 'dropped') ORDER BY artwork_id, page"
        ).fetchall()

    # --- sprites (stages/sprites/) ----------------------------------------------------------
    _SPRITE_COLUMNS = (
        "key", "kind", "game_id", "css_id", "labelled", "name_en", "name_zh", "quality", "charge",
        "description", "sheet_url", "sheet_sha1", "x", "y", "w", "h", "sha256", "blank", "duplicate_of",
        "path", "upscale_path",
    )

    def record_sprite_sheet(self, sheet_url: str, sprites: Iterable[dict[str, Any]], now: str) -> None:
        """One sheet's sprites (``Sprite.row()`` dicts) in one transaction.

        Rows of this sheet that the new slice no longer has (an id that gained a table row, say)
        are removed; ``sliced_at`` moves only for a sprite whose pixels or place changed.
        """
        rows = [{column: row.get(column) for column in self._SPRITE_COLUMNS} for row in sprites]
        keys = {row["key"] for row in rows}
        columns = ", ".join(self._SPRITE_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in self._SPRITE_COLUMNS if c != "key")
        with self.conn:
            stale = [
                (key,) for (key,) in self.conn.execute("SELECT key FROM sprites WHERE sheet_url = ?", [sheet_url])
                if key not in keys
            ]
            self.conn.executemany("DELETE FROM sprites WHERE key = ?", stale)
            self.conn.executemany(
                f"""
                INSERT INTO sprites ({columns}, sliced_at)
                VALUES ({", ".join(":" + c for c in self._SPRITE_COLUMNS)}, :now)
                ON CONFLICT(key) DO UPDATE SET {updates},
                    sliced_at = CASE WHEN sprites.sha256 = excluded.sha256 AND sprites.sheet_url = excluded.sheet_url
                        AND sprites.x = excluded.x AND sprites.y = excluded.y AND sprites.w = excluded.w
                        AND sprites.h = excluded.h THEN sprites.sliced_at ELSE excluded.sliced_at END
                """,
                [{**row, "now": now} for row in rows],
            )

    def sprites(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Sprite rows as dicts, labelled ones first by (kind, in-game id), then unlabelled by CSS id."""
        sql = f"SELECT {', '.join(self._SPRITE_COLUMNS)}, sliced_at FROM sprites"
        cursor = self.conn.execute(
            sql + (" WHERE kind = ?" if kind else "") + " ORDER BY kind, labelled DESC, game_id, css_id",
            [kind] if kind else [],
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def sprite_sheets(self) -> dict[str, str | None]:
        """Each sliced sheet's URL and the sha1 it had: a sheet whose sha1 is unchanged needs no re-slice."""
        return dict(self.conn.execute("SELECT sheet_url, max(sheet_sha1) FROM sprites GROUP BY sheet_url"))

    def wiki_page(self, kind: str) -> dict[str, Any] | None:
        """The ``wiki_pages`` row of a kind, as a dict, or None."""
        cursor = self.conn.execute("SELECT * FROM wiki_pages WHERE kind = ?", [kind])
        row = cursor.fetchone()
        return dict(zip([d[0] for d in cursor.description], row)) if row else None

    def record_wiki_page(self, kind: str, page_url: str, now: str, *, status: str = "ok", reason: str | None = None,
                         sliced: dict[str, Any] | None = None) -> None:
        """Note a look at a kind's page: ``sliced`` (source, revid, styles_sha1, sheet_url, sheet_sha1,
        problems) when its sheet was cut; without it only the status and time move."""
        with self.conn:
            self.conn.execute(
                """
                INSERT INTO wiki_pages (kind, page_url, status, reason, checked_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(kind) DO UPDATE SET page_url = excluded.page_url, status = excluded.status,
                    reason = excluded.reason, checked_at = excluded.checked_at
                """,
                [kind, page_url, status, reason, now],
            )
            if sliced is not None:
                self.conn.execute(
                    "UPDATE wiki_pages SET source = ?, revid = ?, styles_sha1 = ?, sheet_url = ?, sheet_sha1 = ?, "
                    "problems = ?, sliced_at = ? WHERE kind = ?",
                    [sliced.get("source"), sliced.get("revid"), sliced.get("styles_sha1"), sliced.get("sheet_url"),
                     sliced.get("sheet_sha1"), json.dumps(sliced.get("problems") or {}, ensure_ascii=False), now, kind],
                )

    def sprite_originals(self, except_sheet: str | None = None) -> dict[str, str]:
        """sha256 -> key of every written sprite of the other sheets, so a cross-sheet twin is a duplicate."""
        return dict(self.conn.execute(
            "SELECT sha256, key FROM sprites WHERE duplicate_of IS NULL AND blank = 0 AND sheet_url IS NOT ? "
            "ORDER BY kind DESC, labelled, game_id DESC, css_id DESC",
            [except_sheet],
        ))


def connect_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection that cannot write (``mode=ro``) and waits up to 30 s for a writer's lock: for
    readers beside a running crawl (its decision stage, the export, the tag index)."""
    return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def crawl_started_by(path: str | os.PathLike[str], pid: int, host: str, since: str) -> tuple[int, str, str | None] | None:
    """(id, status, reason) of the newest crawl that process ``pid`` on ``host`` started at or after
    ``since`` (ops/scheduled.py: how a scheduled run ended); None when there is none or the
    catalogue cannot be read."""
    if not Path(path).exists():
        return None
    try:
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            row: tuple[int, str, str | None] | None = conn.execute(
                "SELECT id, status, reason FROM crawls WHERE pid = ? AND host = ? AND started >= ? "
                "ORDER BY id DESC LIMIT 1",
                [pid, host, since],
            ).fetchone()
            return row
    except sqlite3.Error:
        return None


def read_manual_decisions(path: str | os.PathLike[str]) -> dict[tuple[str, int], dict[str, str]]:
    """Every manual decision (``scrapy review``) by (artwork id, page); {} without a catalogue.

    Read once, read-only, by the crawl's decision stage, so that a re-crawled picture keeps it.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    with closing(connect_read_only(path)) as conn:
        try:
            rows = conn.execute("SELECT artwork_id, page, decision, decided_at FROM manual_decisions").fetchall()
        except sqlite3.OperationalError:  # a catalogue from before manual decisions
            return {}
    return {(artwork_id, page): {"decision": decision, "decided_at": at} for artwork_id, page, decision, at in rows}


def stages_tried(record: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(stage, model version, error) for each curation stage the crawl ran on this page record."""
    tried = []
    classifier = record.get("classifier") or {}
    tags = record.get("model_tags") or []
    for stage, model, error in (
        ("faces", record.get("faces_model"), record.get("faces_error")),
        ("classify", record.get("classifier_model") or classifier.get("model"), record.get("classifier_error")),
        ("tag", record.get("tagger_model") or (tags[0]["model"] if tags else None), record.get("tagger_error")),
    ):
        if model:
            tried.append((stage, model, error))
    return tried


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
