"""Merging node catalogues into one (``scrapy catalog merge``, distributed crawls: crawler/cluster.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from catalog.schema import CatalogBase


class CatalogMerge(CatalogBase):
    """Another catalogue's crawl results, merged into this one."""

    # --- merging node catalogues (`scrapy catalog merge`, distributed crawls) ------------------------
    # The tables merged by their own rule; every other table with an artwork_id column goes with
    # its artwork. Other tables (sprites, ...) are not crawl results of a node and are left alone.
    _MERGED_BY_RULE = ("artworks", "tags", "crawls", "search_coverage", "artwork_sources")

    def merge_from(self, source: str | os.PathLike[str], node: str | None = None) -> dict[str, Any]:
        """Fold another catalogue (a crawler node's) into this one, in one transaction.

        Artworks by id: the newer ``update_date`` wins, with its pages and everything else keyed
        by ``artwork_id`` (images, faces, model tags, ...); at the same date a row in error gives
        way to one that is not, and two different final outcomes are settled by the later
        ``last_seen``. Otherwise this catalogue's row stays (curation done here is kept), taking the
        earlier ``first_seen`` and later ``last_seen``. Tags: union, keeping a known translation.
        Crawls: appended once each (by host, pid and start) with ``node`` saying where they ran.
        Coverage: the deeper mark per query. Sources that listed an artwork: union. Merging the same
        source twice changes nothing more.
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
        if "artwork_sources" in src_tables:  # union: every source that listed an artwork anywhere
            conn.execute(
                """
                INSERT INTO main.artwork_sources (artwork_id, source, first_seen, last_seen)
                SELECT artwork_id, source, first_seen, last_seen FROM src.artwork_sources WHERE true
                ON CONFLICT(artwork_id, source) DO UPDATE SET
                    first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, excluded.last_seen)
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
