"""The catalogue's schema, in one place, and the connection every part of the catalogue works on.

The tables, their columns and what each holds (``SCHEMA``), the columns added since a table was first
released (``ADDED_COLUMNS``, added to an older catalogue when it is opened), the views for people
reading it (``VIEWS``), and ``CatalogBase``: one sqlite-utils connection in WAL mode, with the
schema brought up to date. The reads and writes live beside it by concern (crawls.py, curation.py,
merge.py, sprites.py) and come together in ``catalog.store.Catalog``.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Self

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
    -- folder outside it; NULL when failed before a file was written (or deleted by CURATE_DELETE_DROPPED)
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
-- Which sources listed each artwork (crawler/spiders/pixiv.py): a tag search, an artist's works,
-- ... A row is written when a listing names the artwork, before its detail is fetched, so an
-- artwork a killed crawl never reached may have one and no artworks row yet.
CREATE TABLE IF NOT EXISTS artwork_sources (
    artwork_id TEXT NOT NULL,
    source TEXT NOT NULL,            -- tag:原神, user:123, user:123/tag:R-18, bookmarks:123/hide/tag:原神,
                                     -- ranking:daily/20261201
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (artwork_id, source)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS artwork_sources_source ON artwork_sources(source);
CREATE TABLE IF NOT EXISTS search_coverage (
    query_key TEXT PRIMARY KEY,      -- canonical JSON of the source: tag, mode, type, ai, since, until,
                                     -- login; or source "user", user, user_tag, login
    tag TEXT,                        -- the tag, or the source's label (user:123)
    -- Every artwork at or below this position (create_date, id) down to the end of the results
    -- was catalogued by a crawl that finished cleanly. Bookmarks: ('', rank from the oldest bookmark).
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



class CatalogBase:
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

    # The writes of curation and review do not commit: the caller groups one batch of pictures in
    # ``with batch():``, so a run killed half-way keeps every finished batch and nothing of the
    # unfinished one.
    @contextmanager
    def batch(self) -> Iterator[Self]:
        with self.conn:
            yield self


def connect_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection that cannot write (``mode=ro``) and waits up to 30 s for a writer's lock: for
    readers beside a running crawl (its decision stage, the export, the tag index)."""
    return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
