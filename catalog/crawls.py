"""The crawl's reads and writes of the catalogue: artworks and their pages as the pipelines leave them,
what is already known (so a re-run fetches nothing twice), the crawls table and search coverage.

``record_artwork`` writes one artwork, its tags and every page in one transaction, with plain
prepared SQL: sqlite-utils' ``upsert`` introspects the table on every call, which costs more than
the write itself at crawl rates.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from catalog.schema import CatalogBase, utc_now


@dataclass(frozen=True)
class KnownArtwork:
    update_date: str | None
    status: str
    complete: bool  # every page has an images row
    reason: str | None = None


@dataclass(frozen=True)
class Coverage:
    complete_below_date: str
    complete_below_id: int

    def contains(self, create_date: str, artwork_id: int) -> bool:
        return (create_date, artwork_id) <= (self.complete_below_date, self.complete_below_id)


class CrawlRecords(CatalogBase):
    """What a crawl reads and writes."""

    # --- reads -----------------------------------------------------------------------------------
    def known_artworks(self, ids: Iterable[str]) -> dict[str, KnownArtwork]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"""
            SELECT a.id, a.update_date, a.status, a.page_count,
                   (SELECT count(*) FROM images i WHERE i.artwork_id = a.id), a.reason
            FROM artworks a WHERE a.id IN ({marks})
            """,
            ids,
        ).fetchall()
        return {
            r[0]: KnownArtwork(update_date=r[1], status=r[2], complete=r[4] >= (r[3] or 0), reason=r[5])
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

    def record_sources(self, ids: Iterable[str], source: str, now: str) -> None:
        """Note that ``source`` listed these artworks (``artwork_sources``)."""
        rows = [(i, source, now, now) for i in ids]
        if rows:
            with self.conn:
                self.conn.executemany(
                    """
                    INSERT INTO artwork_sources (artwork_id, source, first_seen, last_seen) VALUES (?, ?, ?, ?)
                    ON CONFLICT(artwork_id, source) DO UPDATE SET last_seen = excluded.last_seen
                    """,
                    rows,
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

    def update_crawl_source(self, crawl_id: int, arguments: dict[str, Any], query_key: str | None = None) -> None:
        """The crawl's arguments once the login is checked (``logged_in`` as the site said)."""
        with self.conn:
            self.conn.execute(
                "UPDATE crawls SET arguments = ?, query_key = coalesce(?, query_key) WHERE id = ?",
                [json.dumps(arguments, ensure_ascii=False), query_key, crawl_id],
            )

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
