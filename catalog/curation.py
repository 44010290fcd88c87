"""Curation's reads and writes of the catalogue: the stored pictures, what each stage found and decided,
manual decisions, identity matches, thumbnails, and the listings of the report and review pages.

Shared by ``scrapy curate`` (jobs/curate.py, jobs/identity.py), the review page (jobs/review.py),
the report (jobs/report.py) and the export (jobs/export.py).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from catalog.schema import LOCAL_PREFIX, CatalogBase, connect_read_only


@dataclass(frozen=True)
class StoredPicture:
    """One ``images`` row as ``scrapy curate`` sees it."""

    artwork_id: str
    page: int
    path: str | None
    sha256: str | None
    status: str
    reason: str | None

    @property
    def still(self) -> bool:
        return is_still(self.artwork_id, self.path or "")


def is_still(artwork_id: str, path: str) -> bool:
    """A still picture the curation stages read: a crawled JPEG, or any file from a folder (local:).
    A crawled ugoira (its animated WebP) is not: only the rules decide it, by its artwork and tags."""
    return artwork_id.startswith(LOCAL_PREFIX) or path.lower().endswith(".jpg")


class CurationRecords(CatalogBase):
    """What curation, review, the report and the export read and write."""

    # --- curation (`scrapy curate`, jobs/curate.py): writes commit in the caller's ``batch()`` ---------
    _PICTURE = "SELECT artwork_id, page, path, sha256, status, reason FROM images"

    def curatable_pictures(self) -> list[StoredPicture]:
        """Every stored picture, kept or dropped, with a file: the stills the stages read (JPEGs; any
        format for local:) and the ugoira animations, which only the rules decide."""
        rows = self.conn.execute(
            f"""{self._PICTURE} WHERE status IN ('kept', 'dropped') AND path IS NOT NULL
                ORDER BY artwork_id, page"""
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

    def manual_decision_counts(self) -> tuple[int, int]:
        """(keeps, drops) said by hand: the labels the review page's learning has."""
        keep, drop = self.conn.execute(
            "SELECT coalesce(sum(decision = 'keep'), 0), coalesce(sum(decision = 'drop'), 0) FROM manual_decisions"
        ).fetchone()
        return int(keep), int(drop)

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

    def face_crops_of(self, artwork_id: str, page: int) -> list[tuple[int, str]]:
        """(index, crop path) of one picture's stored face crops, in face order."""
        return self.conn.execute(
            "SELECT idx, path FROM faces WHERE artwork_id = ? AND page = ? AND path IS NOT NULL ORDER BY idx",
            [artwork_id, page],
        ).fetchall()

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

    def review_queue(self, status: str | None = None, manual: bool | None = None, min_score: float | None = None,
                     max_score: float | None = None) -> list[tuple[Any, ...]]:
        """Every picture the labelling queue may offer (jobs/review_queue.py ``QueuedPicture``'s fields),
        narrowed by status, by having a manual decision or not, and by classifier score (both ends in)."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("i.status = ?")
            params.append(status)
        if manual is not None:
            where.append("m.decision IS NOT NULL" if manual else "m.decision IS NULL")
        if min_score is not None:
            where.append("i.classifier_score >= ?")
            params.append(min_score)
        if max_score is not None:
            where.append("i.classifier_score <= ?")
            params.append(max_score)
        return self.conn.execute(
            f"""
            SELECT i.artwork_id, i.page, i.status, i.reason, a.title, m.decision, i.classifier_score,
                   i.classifier_label, i.classifier_model, i.sha256, i.phash, d.cluster, a.create_date,
                   i.path IS NOT NULL
            FROM images i LEFT JOIN artworks a ON a.id = i.artwork_id
            LEFT JOIN manual_decisions m ON m.artwork_id = i.artwork_id AND m.page = i.page
            LEFT JOIN identity d ON d.artwork_id = i.artwork_id AND d.page = i.page
            {"WHERE " + " AND ".join(where) if where else ""}
            ORDER BY i.artwork_id, i.page
            """,
            params,
        ).fetchall()

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

    def face_counts(self) -> dict[str, int]:
        """Faces found on kept and dropped pictures: how many faces, on how many pictures (of how many)."""
        faces, with_faces = self.conn.execute(
            "SELECT count(*), count(DISTINCT f.artwork_id || '_' || f.page) FROM faces f JOIN images i "
            "USING (artwork_id, page) WHERE i.status IN ('kept', 'dropped')").fetchone()
        stored = self.conn.execute("SELECT count(*) FROM images WHERE status IN ('kept', 'dropped')").fetchone()[0]
        return {"faces": faces, "pictures_with_faces": with_faces, "pictures": stored}

    def decided_pictures(self) -> list[tuple[str, str, str | None]]:
        """(artwork id, status, reason) of every kept or dropped picture."""
        return self.conn.execute(
            "SELECT artwork_id, status, reason FROM images WHERE status IN ('kept', 'dropped') ORDER BY artwork_id, page"
        ).fetchall()


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
