"""The wiki sprites' reads and writes of the catalogue: icons cut from sprite sheets (stages/sprites/)
and the list pages they came from (crawler/spiders/isaac_wiki.py)."""

from __future__ import annotations

import json
from typing import Any, Iterable

from catalog.schema import CatalogBase


class SpriteRecords(CatalogBase):
    """What the sprite stage (pipelines/sprite_sheets.py) and the Isaac recognizer read and write."""

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
