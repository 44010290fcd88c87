"""Reading the catalogue where nothing may be written: the export's connection and its ``--where`` sandbox.

The export only reads. Its connection is ``mode=ro`` with ``query_only`` and an authorizer that
allows nothing but reading and harmless functions. A user's ``--where`` SQL expression is first
checked to be one expression (``check_one_expression``: it cannot close the parentheses
``picture_query`` wraps it in), then runs under a stricter authorizer (the picture and tag tables,
plain functions) and a clock (``select_pictures``). Errors are ``SelectionError``, worded for the
person who typed the expression.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from catalog.store import connect_read_only
from core.errors import ProjectError

STATUSES = ("kept", "dropped")  # the picture statuses an export may select
BLOCKED_SQL_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
# What a --where expression may read: the pictures, their artworks and the tag tables; nothing else.
WHERE_TABLES = frozenset({"images", "artworks", "tags", "artwork_tags", "image_tags", "tag_aliases", "tag_implications"})
# The functions it may call: plain text, number, date and JSON ones. Left out: those that build
# huge values (printf, format, randomblob, zeroblob) and everything an extension adds.
WHERE_FUNCTIONS = frozenset({
    "abs", "avg", "char", "coalesce", "count", "date", "datetime", "glob", "group_concat", "hex", "ifnull",
    "iif", "instr", "json_array_length", "json_extract", "json_type", "json_valid", "julianday", "length",
    "like", "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif", "replace", "round", "rtrim",
    "strftime", "substr", "substring", "sum", "time", "total", "trim", "typeof", "unicode", "unixepoch",
    "unlikely", "upper", "->", "->>",
})
# Memory, which the clock does not bound: 28 nested hex() build a gigabyte string in well under the
# timeout. While the picture query runs, no string or blob may exceed WHERE_MAX_VALUE bytes (SQLite's
# SQLITE_LIMIT_LENGTH), SQLite may hold at most WHERE_MAX_MEMORY bytes in all (hard_heap_limit), and
# the expression itself is at most WHERE_MAX_TEXT characters, nested at most WHERE_MAX_DEPTH deep.
WHERE_MAX_VALUE = 16 * 1024 * 1024  # bytes
WHERE_MAX_MEMORY = 512 * 1024 * 1024  # bytes
WHERE_MAX_TEXT = 10_000  # characters
WHERE_MAX_DEPTH = 100  # SQLITE_LIMIT_EXPR_DEPTH (SQLite's default is 1000)
PROGRESS_STEPS = 10_000  # SQLite VM steps between two looks at the --where clock
ROUND = 6  # decimals kept of a score (faces here; the export's metadata too)


class SelectionError(ProjectError, ValueError):
    """A ``--where`` expression that is refused or failed; the message says why."""


SQL_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}  # string, and the three ways to quote a name


def check_one_expression(text: str) -> None:
    """Refuse SQL that could reach outside the ``AND (...)`` that ``picture_query`` wraps it in.

    Scans as SQLite's tokenizer does (quotes, ``--`` and ``/* */`` comments) and counts parentheses:
    a ``)`` without its ``(`` would end the wrapper and let ``OR``, ``UNION SELECT`` ... follow; an
    unclosed ``(``, quote or comment would swallow the rest of the query.
    """
    if "\x00" in text:
        raise SelectionError("--where contains a NUL character")
    if len(text) > WHERE_MAX_TEXT:
        raise SelectionError(f"--where is {len(text):,} characters long; at most {WHERE_MAX_TEXT:,}")
    depth, at = 0, 0
    while at < len(text):
        char = text[at]
        if char in SQL_QUOTES:  # a doubled quote ('it''s') is two quoted runs back to back: same result
            end = text.find(SQL_QUOTES[char], at + 1)
            if end < 0:
                raise SelectionError(f"--where has a {char} that is never closed")
            at = end + 1
            continue
        if text.startswith("--", at):
            end = text.find("\n", at)
            at = len(text) if end < 0 else end + 1
            continue
        if text.startswith("/*", at):
            end = text.find("*/", at + 2)
            if end < 0:
                raise SelectionError("--where has a /* comment that is never closed")
            at = end + 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectionError("--where closes a parenthesis it never opened: give one SQL expression")
        at += 1
    if depth:
        raise SelectionError("--where leaves a parenthesis open: give one SQL expression")


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that can only read: ``mode=ro``, ``query_only``, and an authorizer that denies
    every action but reading and harmless functions (so no query on it can write, attach or load)."""
    conn = connect_read_only(path)
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(authorize_reading)
    return conn


def authorize_reading(action: int, _arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    """The export's own queries: any table may be read, nothing else done."""
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() not in BLOCKED_SQL_FUNCTIONS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def authorize_where(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    """The query that holds ``--where``: it may read the picture and tag tables and call the plain
    functions, nothing more (no other table, no recursive CTE, no pragma or extension)."""
    if action == sqlite3.SQLITE_SELECT:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_READ and (arg1 or "").lower() in WHERE_TABLES:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in WHERE_FUNCTIONS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


PICTURE_COLUMNS = (
    "i.artwork_id", "i.page", "i.path", "i.status", "i.width", "i.height", "i.classifier_label", "i.classifier_score",
    "i.classifier_model", "i.classifier_target", "a.title", "a.user_id", "a.x_restrict", "a.ai_type",
)


def picture_query(statuses: Sequence[str], where_sql: str | None, exclude_ai: bool = False) -> str:
    """The SELECT behind an export, runnable as it is (it goes into the manifest). ``exclude_ai``
    leaves out AI-generated works (Pixiv's aiType 2)."""
    wanted = ", ".join(f"'{s}'" for s in statuses if s in STATUSES)
    extra = "\n  AND coalesce(a.ai_type, 0) != 2" if exclude_ai else ""
    extra += f"\n  AND ({where_sql}\n  )" if where_sql else ""  # newline: a trailing -- comment stays inside
    return (
        f"SELECT {', '.join(PICTURE_COLUMNS)}\n"
        "FROM images i JOIN artworks a ON a.id = i.artwork_id\n"
        f"WHERE i.path IS NOT NULL AND i.status IN ({wanted}){extra}\n"
        "ORDER BY i.artwork_id, i.page"
    )


def select_pictures(conn: sqlite3.Connection, query: str, timeout: float) -> list[dict[str, Any]]:
    """Run the picture query under ``authorize_where``, stopped once it has run ``timeout`` seconds
    (EXPORT_WHERE_TIMEOUT):
    a ``--where`` that never ends (a huge join) must end in a message, not a hung command."""
    names = [c.split(".", 1)[1] for c in PICTURE_COLUMNS]
    deadline = time.monotonic() + timeout
    limits = {sqlite3.SQLITE_LIMIT_LENGTH: WHERE_MAX_VALUE, sqlite3.SQLITE_LIMIT_EXPR_DEPTH: WHERE_MAX_DEPTH}
    before = {limit: conn.setlimit(limit, value) for limit, value in limits.items()}
    heap = _heap_limit(conn, WHERE_MAX_MEMORY)
    conn.set_authorizer(authorize_where)
    conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
    try:
        return [dict(zip(names, row)) for row in conn.execute(query)]
    except (sqlite3.DatabaseError, MemoryError) as exc:
        if time.monotonic() > deadline:
            raise SelectionError(f"--where took longer than {timeout:g} s (EXPORT_WHERE_TIMEOUT): "
                              "simplify it or raise the limit") from None
        raise SelectionError(f"--where cannot run: {exc or type(exc).__name__}{_hint(exc)}") from None
    finally:
        conn.set_progress_handler(None, 0)
        _heap_limit(conn, heap)  # and the reading authorizer back
        for limit, value in before.items():
            conn.setlimit(limit, value)


def _heap_limit(conn: sqlite3.Connection, limit: int) -> int:
    """Set SQLite's process-wide hard heap limit (0: none) on a connection whose authorizer would refuse
    the pragma; the limit it had."""
    conn.set_authorizer(None)
    try:
        before = int(conn.execute("PRAGMA hard_heap_limit").fetchone()[0])
        conn.execute(f"PRAGMA hard_heap_limit = {int(limit)}")
    finally:
        conn.set_authorizer(authorize_reading)
    return before


def _hint(exc: BaseException) -> str:
    """What a user can do about a --where that SQLite refused."""
    text = str(exc)
    if "not authorized" in text:
        return (" (it may read only images, artworks and the tag tables, with plain functions: no other table, "
                "recursive CTE or extension)")
    if isinstance(exc, MemoryError) or "too big" in text or "out of memory" in text or "too large" in text:
        return (f" (a value may be at most {WHERE_MAX_VALUE // 2**20} MB and the query may use at most "
                f"{WHERE_MAX_MEMORY // 2**20} MB: it builds something far larger than a picture's row)")
    if "depth" in text or "stack overflow" in text:
        return f" (expressions may nest at most {WHERE_MAX_DEPTH} deep)"
    return ""


def catalog_updated(conn: sqlite3.Connection) -> str | None:
    """The catalogue's newest crawl, curation or picture time: the manifest's only date."""
    newest: str | None = conn.execute(
        """
        SELECT max(t) FROM (
            SELECT max(coalesce(finished, started)) AS t FROM crawls
            UNION ALL SELECT max(processed_at) FROM curation_runs
            UNION ALL SELECT max(stored_at) FROM images
            UNION ALL SELECT max(last_seen) FROM artworks
        )
        """
    ).fetchone()[0]
    return newest


def tag_translations(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT name, translation_en FROM tags WHERE coalesce(translation_en, '') != ''"))


def face_rows(conn: sqlite3.Connection) -> dict[tuple[str, int], list[dict[str, Any]]]:
    faces: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for artwork_id, page, idx, path, x, y, w, h, score in conn.execute(
        "SELECT artwork_id, page, idx, path, x, y, w, h, score FROM faces WHERE path IS NOT NULL "
        "ORDER BY artwork_id, page, idx"
    ):
        faces[(artwork_id, page)].append(
            {"index": idx, "path": path, "x": x, "y": y, "w": w, "h": h,
             "score": None if score is None else round(score, ROUND)}
        )
    return faces
