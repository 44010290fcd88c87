"""Tag aliases and implications over the catalogue (Hydrus's siblings and parents), and tag search.

Artists tag one character in several languages (``モナ(原神)``, ``莫娜``, ``Mona``) and the tagger
speaks Danbooru (``mona_(genshin_impact)``). An **alias** says two names are one tag; an
**implication** says a tag brings another with it (``mona_(genshin_impact)`` → ``genshin_impact``).
Keep/drop rules (``stages/decide.py``), ``scrapy tags search`` and the export compare tags through
them. The rules:

* Names are compared by their key, ``normalise(name)``: NFKC (full-width and half-width forms are one),
  case-folded, runs of whitespace written as one ``_`` (``Long Hair`` is ``long_hair``).
* ``alias A → B`` makes A another name of B. Chains resolve (A → B and B → C: A's canonical tag is
  C); one that would loop is refused with the loop spelled out.
* ``implication A → B``: a picture with A (or any alias of A) also counts as having B, and whatever B
  implies. A tag that would end up implying itself is refused.
* Where the canonical form comes from: what a person wrote (``scrapy tags alias``, a tags file) wins.
  ``seed_from_translations`` makes each Pixiv English translation an alias *of its tag*
  (``Mona (Genshin Impact)`` → ``モナ(原神)``); it never replaces a row that exists, never makes a loop,
  and a translation that several tags share goes to the tag on the most artworks. A person's alias
  that loops with translation rows removes those rows (the person wins).

Everything here takes a ``sqlite3.Connection`` to the catalogue (``Catalog.conn``) and is plain
functions, so the crawl's decision stage, ``scrapy tags`` and ``scrapy export`` share one meaning of
"the same tag". The schema lives in ``catalog/store.py``: ``tag_aliases``, ``tag_implications``.
"""

from __future__ import annotations

import difflib
import json
import re
import sqlite3
import tomllib
import unicodedata
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from catalog.store import connect_read_only
from core.errors import ProjectError

TRANSLATION = "translation"  # the source of rows made by seed_from_translations; any other is a person's
USER = "user"  # the source of rows made by `scrapy tags alias` / `imply`
FUZZY_CUTOFF = 0.6  # difflib ratio below which a name does not match a query at all


class TagError(ProjectError, ValueError):
    """An alias or implication that cannot be added (a loop, a tag aliased to itself, a bad file)."""


def normalise(name: str) -> str:
    """The key two names are compared by: NFKC, case-folded, whitespace runs as one ``_``."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", str(name)).casefold())
    return re.sub(r"\s+", "_", text.strip())


@dataclass
class TagIndex:
    """The alias and implication tables in memory: read once, then every lookup is a dict lookup."""

    aliases: dict[str, str] = field(default_factory=dict)  # alias key -> the tag it names, as written
    sources: dict[str, str] = field(default_factory=dict)  # alias key -> source
    written: dict[str, str] = field(default_factory=dict)  # alias key -> the alias as written
    display: dict[str, str] = field(default_factory=dict)  # key of a canonical tag -> how it is written
    implies: dict[str, set[str]] = field(default_factory=dict)  # canonical key -> implied canonical keys
    _closure: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> TagIndex:
        index = cls()
        if not _has_tag_tables(conn):
            return index
        for alias, canonical, source, written in conn.execute(
            "SELECT alias, canonical, source, written FROM tag_aliases ORDER BY rowid"
        ):
            index.aliases[alias] = canonical
            index.sources[alias] = source or ""
            index.written[alias] = written or alias
        for canonical in index.aliases.values():
            index.display.setdefault(normalise(canonical), canonical)
        # First written first: a tag written two ways is shown the way it was first written.
        for tag, implied in conn.execute("SELECT tag, implies FROM tag_implications ORDER BY rowid"):
            index.implies.setdefault(index.key(tag), set()).add(index.key(implied))
            for name in (tag, implied):
                index.display.setdefault(index.key(name), index.canonical(name))
        return index

    def __bool__(self) -> bool:
        return bool(self.aliases or self.implies)

    def chain(self, name: str) -> list[str]:
        """The names from ``name`` to its canonical tag, following aliases (stops before a loop)."""
        names, seen = [name], {normalise(name)}
        while (key := normalise(names[-1])) in self.aliases:
            target = self.aliases[key]
            if normalise(target) in seen:
                break
            seen.add(normalise(target))
            names.append(target)
        return names

    def canonical(self, name: str) -> str:
        """The tag ``name`` stands for, as its canonical form is written; ``name`` itself if unaliased."""
        last = self.chain(name)[-1]
        return self.display.get(normalise(last), last)

    def key(self, name: str) -> str:
        """The key of ``name``'s canonical tag: equal keys, same tag."""
        return normalise(self.chain(name)[-1])

    def implied_keys(self, name: str) -> frozenset[str]:
        """Keys of every tag ``name`` implies, directly or through others (not its own)."""
        return self._implied_by_key(self.key(name))

    def _implied_by_key(self, start: str) -> frozenset[str]:
        if start not in self._closure:
            found: set[str] = set()
            todo = list(self.implies.get(start, ()))
            while todo:
                key = todo.pop()
                if key not in found and key != start:
                    found.add(key)
                    todo.extend(self.implies.get(key, ()))
            self._closure[start] = frozenset(found)
        return self._closure[start]

    def keys(self, name: str) -> frozenset[str]:
        """The key of ``name``'s tag and of every tag it implies: what a rule or a filter compares."""
        return self.implied_keys(name) | {self.key(name)}

    def implied(self, name: str) -> list[str]:
        """The canonical tags ``name`` implies, sorted."""
        return sorted(self.display.get(key, key) for key in self.implied_keys(name))

    def expand(self, names: Iterable[str]) -> list[str]:
        """Canonical tags of ``names`` followed by what they imply, each once, in first-seen order.

        What a caption or a filter should see for a picture tagged ``names``.
        """
        out: dict[str, str] = {}
        names = list(names)
        for name in names:
            out.setdefault(self.key(name), self.canonical(name))
        for name in names:
            for implied in self.implied(name):
                out.setdefault(normalise(implied), implied)
        return list(out.values())

    def implying_keys(self, key: str) -> set[str]:
        """Keys of every tag that implies the tag with this key, directly or not."""
        return {start for start in self.implies if key in self._implied_by_key(start)}


def _has_tag_tables(conn: sqlite3.Connection) -> bool:
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {"tag_aliases", "tag_implications"} <= names


def read_index(catalog: str | Path) -> TagIndex | None:
    """The catalogue's aliases and implications, or None when it has none (or no catalogue exists yet).

    None, not an empty index, so that callers keep their plain matching when no alias was ever made.
    Opened read-only: the crawl's decision stage calls this at start, beside the catalogue writer.
    """
    path = Path(catalog)
    if not path.is_file():
        return None
    with closing(connect_read_only(path)) as conn:
        index = TagIndex.load(conn)
    return index or None


def canonical_tags(conn: sqlite3.Connection, names: Iterable[str], implications: bool = True,
                   index: TagIndex | None = None) -> list[str]:
    """The canonical tags for a picture tagged ``names`` (and what they imply), each once, in order.

    The one call an exporter needs; pass ``index`` (``TagIndex.load(conn)``) when calling it per picture.
    """
    index = index if index is not None else TagIndex.load(conn)
    if implications:
        return index.expand(names)
    return list({index.key(n): index.canonical(n) for n in names}.values())


# --- writes ------------------------------------------------------------------------------------------
# Each public write is one transaction; a refused one leaves the tables as they were.

def add_alias(conn: sqlite3.Connection, alias: str, canonical: str, source: str = USER) -> list[str]:
    """Make ``alias`` another name of ``canonical``; return notes on translation rows it removed."""
    with conn:
        return _add_alias(conn, alias, canonical, source)


def add_implication(conn: sqlite3.Connection, tag: str, implied: str, source: str = USER) -> None:
    """A picture with ``tag`` also counts as having ``implied``."""
    with conn:
        _add_implication(conn, tag, implied, source)


def _add_alias(conn: sqlite3.Connection, alias: str, canonical: str, source: str) -> list[str]:
    alias, canonical = alias.strip(), canonical.strip()
    key = normalise(alias)
    if not key or not normalise(canonical):
        raise TagError("an alias and its tag must both be non-empty")
    if key == normalise(canonical):
        raise TagError(f"{alias!r} and {canonical!r} are already the same tag")
    index = TagIndex.load(conn)
    index.aliases.pop(key, None)  # the row this one replaces, if any
    path = index.chain(canonical)  # canonical → ... → its own canonical tag
    notes = []
    if normalise(path[-1]) == key:  # the chain comes back to the alias: a loop
        steps = list(zip(path, path[1:]))
        seeded = [step for step in steps if index.sources.get(normalise(step[0])) == TRANSLATION]
        if not seeded or source == TRANSLATION:
            raise TagError(
                f"{alias} → {canonical} would make a loop: {' → '.join([alias, *path])}; "
                "remove one of those aliases first"
            )
        for a, b in seeded:  # the loop goes through translation rows: the person wins, they go
            conn.execute("DELETE FROM tag_aliases WHERE alias = ?", [normalise(a)])
            notes.append(f"removed the translation alias {a} → {b}")
    conn.execute(
        """
        INSERT INTO tag_aliases (alias, canonical, source, written) VALUES (?, ?, ?, ?)
        ON CONFLICT(alias) DO UPDATE SET canonical = excluded.canonical, source = excluded.source,
            written = excluded.written
        """,
        [key, canonical, source, alias],
    )
    _check_implications(conn, f"aliasing {alias} to {canonical}")
    return notes


def _add_implication(conn: sqlite3.Connection, tag: str, implied: str, source: str) -> None:
    tag, implied = tag.strip(), implied.strip()
    if not normalise(tag) or not normalise(implied):
        raise TagError("a tag and the tag it implies must both be non-empty")
    index = TagIndex.load(conn)
    if index.key(tag) == index.key(implied):
        raise TagError(f"{tag} cannot imply {implied}: they are the same tag ({index.canonical(tag)})")
    if index.key(tag) in index.keys(implied):
        raise TagError(f"{tag} → {implied} would make a loop: {implied} already implies {tag}")
    for old_tag, old_implied in conn.execute("SELECT tag, implies FROM tag_implications").fetchall():
        if (normalise(old_tag), normalise(old_implied)) == (normalise(tag), normalise(implied)):
            conn.execute("DELETE FROM tag_implications WHERE tag = ? AND implies = ?", [old_tag, old_implied])
    conn.execute("INSERT INTO tag_implications (tag, implies, source) VALUES (?, ?, ?)", [tag, implied, source])


def _check_implications(conn: sqlite3.Connection, doing: str) -> None:
    """Refuse an alias that merges two tags one of which implies the other (a tag implying itself)."""
    index = TagIndex.load(conn)
    for tag, implied in conn.execute("SELECT tag, implies FROM tag_implications"):
        if index.key(tag) in index.keys(implied):
            raise TagError(f"{doing} would make {tag} imply itself (through {implied}); "
                           "remove that implication first")


@dataclass
class LoadSummary:
    aliases: int = 0
    implications: int = 0
    notes: list[str] = field(default_factory=list)


def read_tags_file(path: str | Path) -> dict[str, Any]:
    """``{"aliases": {canonical: [alias, ...]}, "implications": {tag: [implied, ...]}}`` from a file.

    YAML (``.yaml``/``.yml``, when PyYAML is installed), TOML (``.toml``) or JSON, by extension, so a
    typo is reported in the file's own format. A single string stands for a list of one.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TagError(f"{path}: cannot read the tags file: {exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise TagError(f"{path}: YAML needs PyYAML (not installed); write it as .toml or .json") from None
            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except TagError:
        raise
    except Exception as exc:  # each parser has its own error class; all say where
        raise TagError(f"{path}: not valid {suffix.lstrip('.').upper() or 'JSON'}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict) or set(data) - {"aliases", "implications"}:
        raise TagError(f"{path}: expected a mapping with 'aliases' and/or 'implications' only")
    out: dict[str, Any] = {}
    for section in ("aliases", "implications"):
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise TagError(f"{path}: '{section}' must map a tag to a list of tags")
        out[section] = {}
        for tag, others in entries.items():
            others = [others] if isinstance(others, str) else others
            if not isinstance(others, list) or not all(isinstance(o, str) for o in others):
                raise TagError(f"{path}: {section}.{tag} must be a tag or a list of tags")
            out[section][str(tag)] = others
    return out


def load_file(conn: sqlite3.Connection, path: str | Path) -> LoadSummary:
    """Add every alias and implication in a tags file, all or none (one transaction)."""
    data = read_tags_file(path)
    source = f"file:{Path(path).name}"
    summary = LoadSummary()
    with conn:
        for canonical, aliases in data["aliases"].items():
            for alias in aliases:
                if normalise(alias) == normalise(canonical):
                    continue  # listing a tag among its own names is harmless
                try:
                    summary.notes += _add_alias(conn, alias, canonical, source)
                except TagError as exc:
                    raise TagError(f"{path}: aliases.{canonical}: {exc}") from None
                summary.aliases += 1
        for tag, implied_tags in data["implications"].items():
            for implied in implied_tags:
                try:
                    _add_implication(conn, tag, implied, source)
                except TagError as exc:
                    raise TagError(f"{path}: implications.{tag}: {exc}") from None
                summary.implications += 1
    return summary


@dataclass
class SeedSummary:
    added: int = 0
    skipped: list[str] = field(default_factory=list)  # why each translation did not become an alias


def seed_from_translations(conn: sqlite3.Connection) -> SeedSummary:
    """Each Pixiv tag's English translation becomes an alias of the tag, where that conflicts with nothing.

    Tags on more artworks go first, so a translation shared by several tags names the most used one.
    """
    summary = SeedSummary()
    rows = conn.execute(
        """
        SELECT t.name, t.translation_en FROM tags t
        WHERE t.translation_en IS NOT NULL AND trim(t.translation_en) != ''
        ORDER BY (SELECT count(*) FROM artwork_tags a WHERE a.tag = t.name) DESC, t.name
        """
    ).fetchall()
    with conn:
        index = TagIndex.load(conn)
        for tag, translation in rows:
            key = normalise(translation)
            if key == normalise(tag):
                continue
            if key in index.aliases:
                if normalise(index.aliases[key]) != normalise(tag):
                    summary.skipped.append(
                        f"{translation} → {tag}: already an alias of {index.aliases[key]} "
                        f"({index.sources.get(key) or 'unknown source'})"
                    )
                continue
            if index.key(tag) == key:
                summary.skipped.append(f"{translation} → {tag}: {tag} is already an alias of {translation}")
                continue
            conn.execute(
                "INSERT INTO tag_aliases (alias, canonical, source, written) VALUES (?, ?, ?, ?)",
                [key, tag, TRANSLATION, translation],
            )
            index.aliases[key], index.sources[key], index.written[key] = tag, TRANSLATION, translation
            summary.added += 1
    return summary


# --- search ------------------------------------------------------------------------------------------

@dataclass
class TagMatch:
    """One tag found by ``search``, with how often it is used (its implying tags counted in)."""

    tag: str  # canonical
    score: float  # 1.0 exact; 0.8..1.0 the query is inside a name; below 0.75 fuzzy
    matched: str  # the name that matched best (an alias, a translation, a Pixiv or model tag)
    names: list[str]  # every name seen for this tag
    artworks: int = 0
    pictures: int = 0  # stored (kept or dropped)
    kept: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("tag", "score", "matched", "names", "artworks", "pictures", "kept")}


def _score(query: str, name: str, matcher: difflib.SequenceMatcher[str]) -> float:
    """How well a name's key matches the query's key: exact, substring, or a difflib ratio."""
    if query == name:
        return 1.0
    if query in name:
        return 0.8 + 0.2 * len(query) / len(name)
    matcher.set_seq1(name)
    if matcher.real_quick_ratio() < FUZZY_CUTOFF or matcher.quick_ratio() < FUZZY_CUTOFF:
        return 0.0
    ratio = matcher.ratio()
    return 0.75 * ratio if ratio >= FUZZY_CUTOFF else 0.0


def _names(conn: sqlite3.Connection, index: TagIndex) -> dict[str, dict[str, str]]:
    """Every known name, grouped by canonical key: {key: {name: what it is}}."""
    groups: dict[str, dict[str, str]] = {}

    def add(name: str | None, owner: str, kind: str) -> None:
        if name and normalise(name):
            groups.setdefault(index.key(owner), {}).setdefault(name, kind)

    for name, translation in conn.execute("SELECT name, translation_en FROM tags"):
        add(name, name, "pixiv")
        add(translation, name, "translation")
    for (name,) in conn.execute("SELECT DISTINCT tag FROM image_tags"):
        add(name, name, "model")
    for key, canonical in index.aliases.items():
        add(index.written.get(key, key), canonical, "alias")
        add(canonical, canonical, "alias")
    for key in index.implies:
        add(index.display.get(key, key), index.display.get(key, key), "implication")
    return groups


def is_known(conn: sqlite3.Connection, name: str, index: TagIndex | None = None) -> bool:
    """Whether ``name`` is in the catalogue at all: a Pixiv tag or its translation, a model tag, an
    alias or an implication (any case, width or spacing)."""
    index = index if index is not None else TagIndex.load(conn)
    return index.key(name) in _names(conn, index)


def search(conn: sqlite3.Connection, query: str, limit: int = 20, index: TagIndex | None = None) -> list[TagMatch]:
    """Tags whose names (any alias, translation, Pixiv or model tag) contain or resemble ``query``.

    One result per canonical tag, best first (ties: the most used first), with counts of artworks and
    pictures that carry it or a tag implying it.
    """
    index = index if index is not None else TagIndex.load(conn)
    wanted = normalise(query)
    if not wanted:
        return []
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(wanted)
    groups = _names(conn, index)
    uses = _artworks_per_name(conn)
    found = []  # (score, rough use, key, best name): exact counts only for those shown
    for key, names in groups.items():
        score, matched = max((_score(wanted, normalise(name), matcher), name) for name in names)
        if score > 0:
            found.append((round(score, 3), sum(uses.get(name, 0) for name in names), key, matched))
    found.sort(key=lambda f: (-f[0], -f[1], f[2]))
    matches = []
    for score, _, key, matched in found[: max(limit, 0)]:
        artworks, pictures, kept = _counts(conn, _stored_names(index, groups, key))
        matches.append(TagMatch(tag=index.display.get(key) or _pick_display(groups[key]), score=score,
                                matched=matched, names=sorted(groups[key]), artworks=artworks,
                                pictures=pictures, kept=kept))
    matches.sort(key=lambda m: (-m.score, -m.artworks, m.tag))
    return matches


def _artworks_per_name(conn: sqlite3.Connection) -> dict[str, int]:
    """Artworks per stored tag name (Pixiv and model tags added up): to rank matches before counting."""
    uses: dict[str, int] = dict(conn.execute("SELECT tag, count(*) FROM artwork_tags GROUP BY tag"))
    for tag, count in conn.execute("SELECT tag, count(DISTINCT artwork_id) FROM image_tags GROUP BY tag"):
        uses[tag] = uses.get(tag, 0) + count
    return uses


def _pick_display(names: dict[str, str]) -> str:
    """An unaliased tag's name to show: a Pixiv or model tag over a translation."""
    for kind in ("pixiv", "model", "alias", "implication", "translation"):
        for name, what in names.items():
            if what == kind:
                return name
    return next(iter(names))


def _stored_names(index: TagIndex, groups: dict[str, dict[str, str]], key: str) -> list[str]:
    """The Pixiv and model tags, as stored, of the tag with ``key`` or of a tag implying it."""
    keys = {key} | index.implying_keys(key)
    return sorted(name for k in keys for name, kind in groups.get(k, {}).items() if kind in ("pixiv", "model"))


def _hits_sql(names: list[str]) -> str:
    """A ``hits(artwork_id, page)`` CTE: pictures whose artwork has one of the Pixiv tags, or that
    have one of them as a model tag. Bound twice: ``[*names, *names]``."""
    marks = ",".join("?" * len(names)) or "NULL"
    return f"""
    WITH hits(artwork_id, page) AS (
        SELECT i.artwork_id, i.page FROM images i JOIN artwork_tags t ON t.artwork_id = i.artwork_id
        WHERE t.tag IN ({marks})
        UNION
        SELECT artwork_id, page FROM image_tags WHERE tag IN ({marks})
    )"""


def _counts(conn: sqlite3.Connection, names: list[str]) -> tuple[int, int, int]:
    """(artworks, stored pictures, kept pictures) carrying any of ``names``."""
    marks = ",".join("?" * len(names)) or "NULL"
    artworks = conn.execute(
        f"SELECT count(*) FROM (SELECT artwork_id FROM artwork_tags WHERE tag IN ({marks}) "
        f"UNION SELECT artwork_id FROM image_tags WHERE tag IN ({marks}))",
        [*names, *names],
    ).fetchone()[0]
    pictures, kept = conn.execute(
        _hits_sql(names) + """
        SELECT count(*), coalesce(sum(i.status = 'kept'), 0) FROM hits JOIN images i USING (artwork_id, page)
        WHERE i.status IN ('kept', 'dropped')""",
        [*names, *names],
    ).fetchone()
    return artworks, pictures, kept


@dataclass(frozen=True)
class TaggedPicture:
    artwork_id: str
    page: int
    path: str | None
    status: str


def pictures_with(conn: sqlite3.Connection, tag: str, statuses: Iterable[str] = ("kept",),
                  index: TagIndex | None = None) -> list[TaggedPicture]:
    """Every picture carrying ``tag``: by any alias, as a Pixiv or a model tag, or through an implication."""
    index = index if index is not None else TagIndex.load(conn)
    names = _stored_names(index, _names(conn, index), index.key(tag))
    statuses = list(statuses)
    rows = conn.execute(
        _hits_sql(names) + f"""
        SELECT i.artwork_id, i.page, i.path, i.status FROM hits JOIN images i USING (artwork_id, page)
        WHERE i.status IN ({",".join("?" * len(statuses))}) ORDER BY i.artwork_id, i.page""",
        [*names, *names, *statuses],
    ).fetchall()
    return [TaggedPicture(*row) for row in rows]
