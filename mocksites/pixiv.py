"""A local imitation of Pixiv's web AJAX API (www.pixiv.net) and its image host (i.pximg.net).

Why: the crawler, its tests, the demo and the benchmark need a site that behaves like Pixiv
(response shapes, JST/UTC dates, the Referer rule, throttling, deleted and re-uploaded works,
broken files) without touching the real one. Every artwork and image is generated from a seed;
no fixture file is read at runtime. With ``--characters`` the pictures show someone: about one
work in three the demo's target character, only some of them tagged so, and ``/_mock/truth`` says
who, so that a curated crawl can be scored.

Run ``python -m mocksites.pixiv --port 0 --image-port 0``: once both ports listen it prints one
JSON line ``{"api": "http://127.0.0.1:P1", "images": "http://127.0.0.1:P2"}`` and serves until
SIGTERM/SIGINT. Control endpoints live under ``/_mock/`` on the API port (see ``PixivSite``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime as dt
import json
import os
import random
import re
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from mocksites import images

JST = dt.timezone(dt.timedelta(hours=9), "JST")
CORPUS_START = dt.datetime(2024, 1, 1, tzinfo=JST)
MINUTES_BETWEEN_WORKS = 37
ID_BASE = 120_000_000
ID_STEP = 3
WORKS_PER_PAGE = 60
SEARCH_CACHE_LIMIT = 512
IMAGE_CACHE_LIMIT = 512
REQUEST_LOG_LIMIT = 200_000
STATE_VERSION = 1

ILLUST, MANGA, UGOIRA = 0, 1, 2
ROUTE_NAMES = (
    "top", "search", "user_all", "user_illusts", "user_tag", "bookmarks", "ranking", "following",
    "illust", "pages", "ugoira_meta", "image", "ugoira_zip", "other",
)

# (tag, English translation or None). Translations are what /ajax/illust shows as translation.en.
CHARACTER_TAGS = (
    ("モナ(原神)", "Mona (Genshin Impact)"),
    ("甘雨(原神)", "Ganyu (Genshin Impact)"),
    ("刻晴(原神)", "Keqing (Genshin Impact)"),
    ("ナヒーダ(原神)", "Nahida (Genshin Impact)"),
    ("パイモン(原神)", "Paimon (Genshin Impact)"),
    ("雷電将軍(原神)", "Raiden Shogun (Genshin Impact)"),
    ("フリーナ(原神)", "Furina (Genshin Impact)"),
    ("胡桃(原神)", "Hu Tao (Genshin Impact)"),
)
GENERAL_TAGS = (
    ("女の子", "girl"),
    ("GenshinImpact", None),
    ("雪", "snow"),
    ("夏", "summer"),
    ("落書き", "doodle"),
)
CHARACTER_NAMES = tuple(tag for tag, _ in CHARACTER_TAGS)
# The tags that may follow a work's first character tag: every other character or general tag.
OTHER_EXTRA_TAGS = {
    first: [tag for tag, _ in CHARACTER_TAGS + GENERAL_TAGS if tag != first] for first in CHARACTER_NAMES
}
TAG_TRANSLATIONS = {
    "原神": "Genshin Impact",
    "漫画": "manga",
    "うごイラ": "ugoira",
    "AIイラスト": "AI-generated illustration",
    "原神1000users入り": "Genshin Impact 1000+ bookmarks",
    **{tag: en for tag, en in CHARACTER_TAGS + GENERAL_TAGS if en},
}
RELATED_TAGS = [
    "GenshinImpact",
    "原神1000users入り",
    "甘雨(原神)",
    "刻晴(原神)",
    "ナヒーダ(原神)",
    "パイモン(原神)",
    "雷電将軍(原神)",
]
TITLE_ENDINGS = ("", "ちゃん", "の休日", "らくがき", "まとめ", "の一日", "と雪", "集")
USER_NAMES = (
    "みずいろ", "夜航船", "anim_k", "R_artist", "gen_ai_user", "さくら餅", "ゆきみ", "tsubame",
    "青葉", "kuro_neko", "こもれび", "Haru", "星屑", "mikan", "しおり", "Rin_0", "つきみ", "pepper",
    "はなび", "lumi",
)  # fmt: skip
USER_ID_BASE = 90_000_000

ASPECTS = images.ASPECTS  # (width, height) ratios drawn per page; the longest side is --image-size

# --characters: about one work in three shows the target character (images.TARGET_CHARACTER), and
# only some of those carry her tag, as artists tag loosely; no other work carries it.
TARGET_TAG = "モナ(原神)"
TARGET_SHARE = 1 / 3
TARGET_TAGGED_SHARE = 0.4
UNTAGGED_TITLES = ("無題", "星空", "魔女", "夜")

BOOKMARK_RANGES = [
    {"min": None, "max": None},
    {"min": 10000, "max": None},
    {"min": 5000, "max": None},
    {"min": 1000, "max": None},
    {"min": 500, "max": None},
    {"min": 300, "max": None},
    {"min": 100, "max": None},
    {"min": 50, "max": None},
]
_ADS_URL = (
    "https://pixon.ads-pixiv.net/show?zone_id={zone}&format=js&s=1&up=0&a=30&ng=g&l=en"
    "&uri=%2Fajax%2Fsearch%2Fartworks%2F_PARAM_&is_spa=1"
)
SEARCH_ZONE_CONFIG = {
    "header": {"url": _ADS_URL.format(zone="header")},
    "footer": {"url": _ADS_URL.format(zone="footer")},
    "infeed": {"url": _ADS_URL.format(zone="illust_search_grid")},
}
DETAIL_ZONE_CONFIG = {
    "responsive": {"url": "https://pixon.ads-pixiv.net/show?zone_id=illust_responsive_side_lud"},
    "rectangle": {"url": "https://pixon.ads-pixiv.net/show?zone_id=illust_rectangle"},
}

MESSAGE_NOT_FOUND = "該当作品は削除されたか、存在しない作品IDです。"
MESSAGE_PAGE_NOT_FOUND = "Couldn't find requested page"
MESSAGE_USER_NOT_FOUND = "該当ユーザーは既に退会したか、存在しないユーザーIDです"
USER_WORKS_LIMIT = 100  # the most works one profile/illusts or illustmanga/tag answer holds
# Bookmarks: each user has bookmarked about this share of the initial corpus (others' works), in an
# order of their own (not upload order), some privately; the session's account is OWN_USER.
BOOKMARK_SHARE = 0.12
PRIVATE_BOOKMARK_SHARE = 0.25
BOOKMARK_ID_BASE = 9_000_000_000
MASKED_THUMB = "https://s.pximg.net/common/images/limit_unknown_360.png"
# ranking.php: how many days of uploads each mode ranks, 50 a page, at most 500; the latest day is
# the newest work's. R-18 modes (login only) rank R-18 works, the _ai ones AI-generated works only.
RANKING_WINDOW_DAYS = {
    "daily": 1, "weekly": 7, "monthly": 30, "rookie": 7, "original": 7, "daily_ai": 1, "male": 1,
    "female": 1, "daily_r18": 1, "weekly_r18": 7, "male_r18": 1, "female_r18": 1, "daily_r18_ai": 1,
    "r18g": 7,
}  # fmt: skip
RANKING_PAGE = 50
RANKING_LIMIT = 500
RANKING_CONTENT_TYPES = {"illust": ILLUST, "manga": MANGA, "ugoira": UGOIRA}
MESSAGE_RANKING_MISSING = "該当ランキングは存在しません"
MESSAGE_UNAUTHORIZED = "Unauthorized"
CLOUDFLARE_CHALLENGE = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>cf challenge</body></html>"
MESSAGE_UNKNOWN = "An unknown error occurred"
MESSAGE_FORBIDDEN = "Forbidden"
MESSAGE_RATE_LIMIT = "Rate limit"

ORIGINAL_NAME = re.compile(r"^(?P<id>\d+)_(?P<stem>p|ugoira)(?P<index>\d+)\.(?P<ext>[A-Za-z0-9]+)$")
UGOIRA_ZIP_NAME = re.compile(r"^(?P<id>\d+)_ugoira(?P<size>600x600|1920x1080)\.zip$")
DATE_PATH = "{y}/{mo}/{d}/{h}/{mi}/{s}"


@dataclasses.dataclass
class SiteConfig:
    """Everything the CLI can set; the defaults are the demo site's."""

    host: str = "127.0.0.1"
    port: int = 0
    image_port: int = 0
    size: int = 300
    latency_ms: float = 0.0
    image_size: int = 256
    broken_every: int = 0
    throttle_429_every: int = 0
    retry_after: int = 1
    throttle_empty_every: int = 0
    ads: bool = False
    session: str = "demo-session-0001"
    max_pages: int = 1000
    follow_max_pages: int = 35
    premium: bool = False
    cloudflare: str | None = None  # cf_clearance value the API host wants (a Cloudflare challenge otherwise)
    seed: int = 1
    tag: str = "原神"
    state: str | None = None
    characters: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """One page of an artwork: how its original is encoded and its stored pixel size."""

    kind: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return images.EXTENSIONS[self.kind]


@dataclasses.dataclass(slots=True)
class User:
    user_id: str
    name: str
    account: str


USERS = tuple(
    User(str(USER_ID_BASE + number), name, f"acct{USER_ID_BASE + number}")
    for number, name in enumerate(USER_NAMES)
)
OWN_USER = USERS[0]  # whose login the site's session cookie (--session) is
FOLLOWED = tuple(USERS[n] for n in (2, 3, 5, 8, 11, 13, 17))  # whom OWN_USER follows (the feed)
FOLLOW_PAGE = 60


@dataclasses.dataclass(slots=True)
class Bookmark:
    work: Artwork
    private: bool
    bookmark_id: int


@dataclasses.dataclass(slots=True)
class Artwork:
    """One work's metadata; small so that 20,000 of them build in well under a second."""

    index: int
    id: str
    created: dt.datetime
    title: str
    illust_type: int
    x_restrict: int
    ai_type: int
    sl: int
    deleted: bool
    tags: tuple[str, ...]
    user: User
    bookmark_count: int
    like_count: int
    view_count: int
    comment_count: int
    pages: tuple[Page, ...]
    frame_delays: tuple[int, ...] = ()
    broken: str | None = None
    reupload_count: int = 0
    character: str | None = None  # what the pictures show (--characters); None: abstract shapes

    @property
    def uploaded(self) -> dt.datetime:
        """Last (re)upload time: createDate plus one day per re-upload, so it only moves forward."""
        return self.created + dt.timedelta(days=self.reupload_count)

    @property
    def date_path(self) -> str:
        """The JST ``YYYY/MM/DD/HH/MM/SS`` part of i.pximg.net URLs, which follows re-uploads."""
        return self.uploaded.astimezone(JST).strftime("%Y/%m/%d/%H/%M/%S")

    @property
    def is_ugoira(self) -> bool:
        return self.illust_type == UGOIRA


def jst_string(moment: dt.datetime) -> str:
    return moment.astimezone(JST).isoformat(timespec="seconds")


def utc_string(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def artwork_id(index: int) -> str:
    return str(ID_BASE + ID_STEP * index)


def _draw_page(rng: random.Random, image_size: int, *, kind: str | None = None) -> Page:
    """Pick a page's encoding and shape; the stored size is what the image host will serve."""
    kind = kind or images.pick_page_kind(rng)
    return Page(kind, *images.page_size(rng, kind, image_size))


def make_artwork(index: int, config: SiteConfig) -> Artwork:
    """Generate work ``index`` (0 = oldest) from ``random.Random(f"{seed}:{id}")`` alone."""
    work_id = artwork_id(index)
    rng = random.Random(f"{config.seed}:{work_id}")
    type_roll = rng.random()
    if type_roll < 0.75:
        illust_type, page_count = ILLUST, 2 if rng.random() < 0.1 else 1
    elif type_roll < 0.87:
        illust_type, page_count = MANGA, rng.randint(2, 4)
    elif type_roll < 0.92:
        illust_type, page_count = UGOIRA, 1
    else:
        illust_type, page_count = ILLUST, 1
    x_restrict = 1 if rng.random() < 0.08 else 0
    ai_type = 2 if rng.random() < 0.10 else 1
    deleted = rng.random() < 0.02

    pages: tuple[Page, ...]
    if illust_type == UGOIRA:
        pages = (_draw_page(rng, config.image_size, kind=images.JPEG),)
        frame_count = rng.randint(4, 8)
        base_delay = rng.choice((60, 80, 100))
        delays = [base_delay] * frame_count
        delays[rng.randrange(1, frame_count - 1)] = base_delay + 40
        delays[-1] = 500  # a held last frame, as real loops often have
        frame_delays = tuple(delays)
    else:
        pages = tuple(_draw_page(rng, config.image_size) for _ in range(page_count))
        frame_delays = ()

    first_character = rng.choice(CHARACTER_NAMES)
    extra_tags = [first_character, *rng.sample(OTHER_EXTRA_TAGS[first_character], rng.randint(0, 2))]
    user = USERS[rng.randrange(len(USERS))]
    bookmark_count = min(50_000, int(rng.paretovariate(1.2) * 20) - 20)
    like_count = int(bookmark_count * rng.uniform(0.6, 0.9))
    view_count = bookmark_count * rng.randint(6, 15) + rng.randint(10, 400)
    comment_count = rng.randint(0, 12)
    title = first_character.removesuffix("(原神)") + rng.choice(TITLE_ENDINGS)
    sl = 6 if x_restrict else rng.choice((2, 2, 4))
    character = None
    if config.characters:
        character, extra_tags, title = _cast_character(config, work_id)

    tags = (
        (["R-18"] if x_restrict else [])
        + [config.tag]
        + extra_tags
        + (["AIイラスト"] if ai_type == 2 else [])
        + (["漫画"] if illust_type == MANGA else [])
        + (["うごイラ"] if illust_type == UGOIRA else [])
        + ([f"{config.tag}1000users入り"] if bookmark_count >= 1000 else [])
    )
    return Artwork(
        index=index,
        id=work_id,
        created=CORPUS_START + dt.timedelta(minutes=MINUTES_BETWEEN_WORKS * index),
        title=title,
        illust_type=illust_type,
        x_restrict=x_restrict,
        ai_type=ai_type,
        sl=sl,
        deleted=deleted,
        tags=tuple(dict.fromkeys(tags)),
        user=user,
        bookmark_count=bookmark_count,
        like_count=like_count,
        view_count=view_count,
        comment_count=comment_count,
        pages=pages,
        frame_delays=frame_delays,
        character=character,
    )


def _cast_character(config: SiteConfig, work_id: str) -> tuple[str, list[str], str]:
    """(character, character and general tags, title) of a work on a --characters site.

    A generator of its own, so turning characters on changes no other draw (pages, flags, dates).
    """
    rng = random.Random(f"{config.seed}:{work_id}:character")
    if rng.random() < TARGET_SHARE:
        if rng.random() < TARGET_TAGGED_SHARE:
            tags = [TARGET_TAG, *rng.sample(OTHER_EXTRA_TAGS[TARGET_TAG], rng.randint(0, 2))]
            title = TARGET_TAG.removesuffix("(原神)")
        else:  # drawn, not tagged: only a search wider than her tag finds her
            tags = rng.sample([tag for tag, _ in GENERAL_TAGS], rng.randint(0, 2))
            title = rng.choice(UNTAGGED_TITLES)
        return images.TARGET_CHARACTER, tags, title + rng.choice(TITLE_ENDINGS)
    first = rng.choice([name for name in CHARACTER_NAMES if name != TARGET_TAG])
    tags = [first, *rng.sample([tag for tag in OTHER_EXTRA_TAGS[first] if tag != TARGET_TAG], rng.randint(0, 2))]
    return images.OTHER_CHARACTER, tags, first.removesuffix("(原神)") + rng.choice(TITLE_ENDINGS)


def assign_broken(artwork: Artwork, broken_every: int) -> None:
    """Mark page 0 broken for indices i % N == N // 2, cycling through images.BROKEN_KINDS.

    Ugoira and deleted works are left alone: their page 0 is a frame of the zip, or unreachable.
    Truncated and bomb files are PNGs, so page 0 of those works becomes a PNG (same size) and the
    URL extension stays truthful.
    """
    if not broken_every or artwork.index % broken_every != broken_every // 2:
        return
    if artwork.is_ugoira or artwork.deleted:
        return
    kind = images.BROKEN_KINDS[(artwork.index // broken_every) % len(images.BROKEN_KINDS)]
    artwork.broken = kind
    if kind in (images.TRUNCATED, images.BOMB) and artwork.pages[0].kind != images.PNG:
        first = artwork.pages[0]
        artwork.pages = (Page(images.PNG, first.width, first.height), *artwork.pages[1:])


def _is_plain(artwork: Artwork) -> bool:
    return (
        artwork.illust_type == ILLUST
        and not artwork.x_restrict
        and artwork.ai_type == 1
        and not artwork.deleted
    )


def force_special_works(works: list[Artwork], config: SiteConfig) -> dict[str, int]:
    """Make sure the initial corpus holds each special case the tests and demo rely on.

    For each requirement the random draw missed, the newest *plain* work (a live, safe, non-AI
    single illust) is turned into it, so forcing one case never removes another. Returns
    {requirement: forced index}; with the defaults (size 300, seed 1) nothing needs forcing.
    """
    requirements: list[tuple[str, Any]] = [
        ("manga_3_pages", lambda w: w.illust_type == MANGA and len(w.pages) >= 3 and not w.deleted),
        ("ugoira", lambda w: w.is_ugoira and not w.deleted),
        ("r18", lambda w: w.x_restrict > 0 and not w.deleted),
        ("ai_generated", lambda w: w.ai_type == 2 and not w.deleted),
        ("deleted", lambda w: w.deleted),
    ]
    forced: dict[str, int] = {}
    for name, present in requirements:
        if any(present(work) for work in works):
            continue
        target = next((work for work in reversed(works) if _is_plain(work)), None)
        if target is None:
            continue
        rng = random.Random(f"{config.seed}:{target.id}:forced:{name}")
        if name == "manga_3_pages":
            target.illust_type = MANGA
            target.pages = tuple(_draw_page(rng, config.image_size) for _ in range(3))
            target.tags = (*target.tags, "漫画")
        elif name == "ugoira":
            target.illust_type = UGOIRA
            target.pages = (_draw_page(rng, config.image_size, kind=images.JPEG),)
            target.frame_delays = (80, 80, 120, 80, 500)
            target.tags = (*target.tags, "うごイラ")
        elif name == "r18":
            target.x_restrict, target.sl = 1, 6
            target.tags = ("R-18", *target.tags)
        elif name == "ai_generated":
            target.ai_type = 2
            target.tags = (*target.tags, "AIイラスト")
        else:
            target.deleted = True
        forced[name] = target.index
    return forced


class Corpus:
    """All artworks, oldest first (index order is createDate order), plus search caches."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.works: list[Artwork] = [make_artwork(index, config) for index in range(config.size)]
        self.forced = force_special_works(self.works, config)
        for work in self.works:
            assign_broken(work, config.broken_every)
        self.by_id = {work.id: work for work in self.works}
        self.added = 0
        self._search_cache: dict[tuple[Any, ...], tuple[list[Artwork], list[Artwork]]] = {}

    def add(self, count: int) -> list[Artwork]:
        """Append ``count`` newer works generated by the same rules (never forced)."""
        new_works = []
        for _ in range(count):
            work = make_artwork(len(self.works), self.config)
            assign_broken(work, self.config.broken_every)
            self.works.append(work)
            self.by_id[work.id] = work
            new_works.append(work)
        self.added += count
        self._search_cache.clear()
        return new_works

    def by_user(self, user_id: str) -> list[Artwork]:
        """The user's works, newest first, deleted ones included (profile/all still names them)."""
        return [work for work in reversed(self.works) if work.user.user_id == user_id]

    def reupload(self, work: Artwork) -> None:
        work.reupload_count += 1

    def search(
        self,
        word: str,
        *,
        logged_in: bool,
        mode: str,
        types: frozenset[int] | None,
        start: dt.date | None,
        end: dt.date | None,
        s_mode: str = "s_tag_full",
    ) -> tuple[list[Artwork], list[Artwork]]:
        """Matching works as (oldest first, newest first); cached per distinct query."""
        key = (word, logged_in, mode, types, start, end, s_mode)
        cached = self._search_cache.get(key)
        if cached is not None:
            return cached
        wanted = parse_search_words(word)
        matches = [
            work
            for work in self.works
            if words_match(wanted, work, s_mode)
            and _visible(work, logged_in=logged_in, mode=mode)
            and (types is None or work.illust_type in types)
            and (start is None or work.created.date() >= start)
            and (end is None or work.created.date() <= end)
        ]
        if len(self._search_cache) >= SEARCH_CACHE_LIMIT:
            self._search_cache.clear()
        result = (matches, matches[::-1])
        self._search_cache[key] = result
        return result


def parse_search_words(word: str) -> tuple[list[list[str]], list[str]]:
    """Pixiv's search words: space-separated terms all wanted, ``A OR B`` (or ``or``) either,
    ``-C`` none: ([[A, B], [D]], [C])."""
    groups: list[list[str]] = []
    excluded: list[str] = []
    joining = False
    for term in word.replace("\u3000", " ").split():
        if term.lower() == "or":
            joining = bool(groups)
        elif term.startswith("-") and len(term) > 1:
            excluded.append(term[1:])
        elif joining:
            groups[-1].append(term)
            joining = False
        else:
            groups.append([term])
    return groups, excluded


def words_match(wanted: tuple[list[list[str]], list[str]], work: Artwork, s_mode: str) -> bool:
    """s_tag_full: a tag equals the term; s_tag: a tag contains it (case-folded); s_tc: the title
    does (the local site's works have no caption)."""
    def has(term: str) -> bool:
        if s_mode == "s_tc":
            return term.casefold() in work.title.casefold()
        if s_mode == "s_tag":
            return any(term.casefold() in tag.casefold() for tag in work.tags)
        return term in work.tags

    groups, excluded = wanted
    return bool(groups) and all(any(has(t) for t in group) for group in groups) and not any(has(t) for t in excluded)


def _visible(work: Artwork, *, logged_in: bool, mode: str) -> bool:
    """Pixiv's rule: R-18 only for a session with explicit content enabled."""
    if mode == "r18":
        return logged_in and work.x_restrict > 0
    if mode == "safe":
        return work.x_restrict == 0
    return work.x_restrict == 0 or logged_in


SEARCH_TYPES: dict[str, frozenset[int] | None] = {
    "all": None,
    "illust_and_ugoira": frozenset({ILLUST, UGOIRA}),
    "illust": frozenset({ILLUST}),
    "manga": frozenset({MANGA}),
    "ugoira": frozenset({UGOIRA}),
}


def dump_json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=body, status=status, headers=headers, content_type="application/json", charset="utf-8"
    )


def error_body(message: str) -> bytes:
    return dump_json({"error": True, "message": message, "body": []})


def success_body(body: Any) -> bytes:
    return dump_json({"error": False, "message": "", "body": body})


def _parse_date(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _parse_positive_int(text: str | None, default: int) -> int:
    try:
        return max(1, int(text)) if text is not None else default
    except ValueError:
        return default


def _parse_offset(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def referer_allowed(referer: str | None) -> bool:
    """i.pximg.net's rule: any http(s) Referer on pixiv.net or a subdomain, case-insensitive."""
    if not referer:
        return False
    try:
        parts = urlsplit(referer.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and (host == "pixiv.net" or host.endswith(".pixiv.net"))


class RequestStats:
    """What clients asked for, so tests and the benchmark can count requests per route."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.requests: list[str] = []

    def record(self, route: str, line: str) -> None:
        self.counts[route] += 1
        if len(self.requests) < REQUEST_LOG_LIMIT:
            self.requests.append(line)

    def clear(self) -> None:
        self.counts.clear()
        self.requests.clear()

    def as_json(self) -> dict[str, Any]:
        return {"counts": {name: self.counts[name] for name in ROUTE_NAMES}, "requests": self.requests}


class PixivSite:
    """Both apps (API and image host) over one corpus, with throttling and control endpoints.

    Control endpoints (API port, not counted in stats, no User-Agent check):
      POST /_mock/add?count=N, POST /_mock/reupload?id=X, GET /_mock/truth,
      GET /_mock/stats, POST /_mock/reset-stats,
      POST /_mock/bookmark?user=U&id=X[&private=1] (a new bookmark on top of U's),
      GET /_mock/bookmarks?user=U (U's bookmarks as the truth: id, private, newest first).
    Bookmarks and the --session login live in memory only (not in --state).
    """

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.corpus = Corpus(config)
        self.images_base = ""
        self.stats = RequestStats()
        self.ajax_requests = 0
        self.search_requests = 0
        self._image_cache: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()
        self._search_items: dict[str, tuple[int, str]] = {}
        self._bookmarks: dict[str, list[Bookmark]] = {}
        self._load_state()

    # ---- state -------------------------------------------------------------------------------

    def _load_state(self) -> None:
        if not self.config.state or not Path(self.config.state).exists():
            return
        state = json.loads(Path(self.config.state).read_text(encoding="utf-8"))
        expected = {"seed": self.config.seed, "size": self.config.size, "tag": self.config.tag}
        found = {key: state.get(key) for key in expected}
        if found != expected:
            print(f"mocksites.pixiv: ignoring state {self.config.state}: made for {found}", file=sys.stderr)
            return
        self.corpus.add(int(state.get("added", 0)))
        for work_id, count in state.get("reuploads", {}).items():
            if work_id in self.corpus.by_id:
                self.corpus.by_id[work_id].reupload_count = int(count)

    def _save_state(self) -> None:
        if not self.config.state:
            return
        state = {
            "version": STATE_VERSION,
            "seed": self.config.seed,
            "size": self.config.size,
            "tag": self.config.tag,
            "added": self.corpus.added,
            "reuploads": {w.id: w.reupload_count for w in self.corpus.works if w.reupload_count},
        }
        path = Path(self.config.state)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(state, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(temporary, path)

    # ---- URLs --------------------------------------------------------------------------------

    def _master_url(self, work: Artwork, page: int, crop: str, suffix: str) -> str:
        """An img-master URL (``crop`` like "c/250x250_80_a2/" or ""); ugoira stems have no _p0."""
        stem = work.id if work.is_ugoira else f"{work.id}_p{page}"
        return f"{self.images_base}/{crop}img-master/img/{work.date_path}/{stem}_{suffix}.jpg"

    def thumb_url(self, work: Artwork, crop: str = "250x250_80_a2", page: int = 0) -> str:
        return self._master_url(work, page, f"c/{crop}/", "square1200")

    def small_url(self, work: Artwork, page: int = 0) -> str:
        return self._master_url(work, page, "c/540x540_70/", "master1200")

    def regular_url(self, work: Artwork, page: int = 0) -> str:
        return self._master_url(work, page, "", "master1200")

    def original_url(self, work: Artwork, page: int = 0) -> str:
        base = f"{self.images_base}/img-original/img/{work.date_path}"
        if work.is_ugoira:
            return f"{base}/{work.id}_ugoira{page}.jpg"
        return f"{base}/{work.id}_p{page}.{work.pages[page].extension}"

    def ugoira_zip_url(self, work: Artwork, size: str) -> str:
        return f"{self.images_base}/img-zip-ugoira/img/{work.date_path}/{work.id}_ugoira{size}.zip"

    def profile_image_url(self, user: User) -> str:
        date = "2023/05/01/21/00/00"
        return f"{self.images_base}/user-profile/img/{date}/{user.user_id}_0f1e2d3c4b5a69788796a5b4c3d2e1f0_50.jpg"

    # ---- JSON bodies -------------------------------------------------------------------------

    def _alt(self, work: Artwork) -> str:
        return f"#{work.tags[0]} {work.title} - {work.user.name}のイラスト"

    def search_item(self, work: Artwork) -> dict[str, Any]:
        first = work.pages[0]
        return {
            "id": work.id,
            "title": work.title,
            "illustType": work.illust_type,
            "xRestrict": work.x_restrict,
            "restrict": 0,
            "sl": work.sl,
            "url": self.thumb_url(work),
            "description": "",
            "tags": list(work.tags),
            "userId": work.user.user_id,
            "userName": work.user.name,
            "width": first.width,
            "height": first.height,
            "pageCount": len(work.pages),
            "isBookmarkable": True,
            "bookmarkData": None,
            "alt": self._alt(work),
            "titleCaptionTranslation": {"workTitle": None, "workCaption": None},
            "createDate": jst_string(work.created),
            "updateDate": jst_string(work.uploaded),
            "isUnlisted": False,
            "isMasked": False,
            "aiType": work.ai_type,
            "profileImageUrl": self.profile_image_url(work.user),
        }

    def _encoded_search_item(self, work: Artwork) -> str:
        """Each work's search JSON is encoded once per upload, so a page is a string join."""
        cached = self._search_items.get(work.id)
        if cached is not None and cached[0] == work.reupload_count:
            return cached[1]
        encoded = json.dumps(self.search_item(work), ensure_ascii=False, separators=(",", ":"))
        self._search_items[work.id] = (work.reupload_count, encoded)
        return encoded

    def search_body(self, word: str, page_works: list[Artwork] | None, total: int) -> bytes:
        """The search envelope; ``page_works`` None means the soft-throttle (empty, total 0) page."""
        works = page_works or []
        items = [self._encoded_search_item(work) for work in works]
        if self.config.ads and items:
            items.insert(min(2, len(items)), '{"isAdContainer":true}')
        translations = {}
        for tag in dict.fromkeys([word, *(tag for work in works for tag in work.tags)]):
            if tag in TAG_TRANSLATIONS and works:
                translations[tag] = {"en": TAG_TRANSLATIONS[tag]}
        quoted = quote(word, safe="")
        rest = {
            "popular": {"recent": [], "permanent": []},
            "relatedTags": RELATED_TAGS,
            "tagTranslation": translations,
            "zoneConfig": SEARCH_ZONE_CONFIG,
            "extraData": {
                "meta": {
                    "title": f"#{word} Illustrations, Comics on pixiv, Japan",
                    "description": "pixiv",
                    "canonical": f"https://www.pixiv.net/en/tags/{quoted}",
                    "alternateLanguages": {
                        "ja": f"https://www.pixiv.net/tags/{quoted}",
                        "en": f"https://www.pixiv.net/en/tags/{quoted}",
                    },
                    "descriptionHeader": "pixiv",
                }
            },
        }
        tail = json.dumps(rest, ensure_ascii=False, separators=(",", ":"))
        ranges = json.dumps(BOOKMARK_RANGES, separators=(",", ":"))
        text = (
            '{"error":false,"body":{"illustManga":{"data":['
            + ",".join(items)
            + f'],"total":{total},"bookmarkRanges":{ranges}}},'
            + tail[1:]
            + "}"
        )
        return text.encode()

    def bookmarks_of(self, user_id: str) -> list[Bookmark]:
        """The user's bookmarks, newest first: drawn from the initial corpus alone, so works added
        later change nothing until someone bookmarks them (``/_mock/bookmark``). One at least is a
        work deleted since, which the listing shows masked."""
        if user_id in self._bookmarks:
            return self._bookmarks[user_id]
        rng = random.Random(f"{self.config.seed}:bookmarks:{user_id}")
        others = [w for w in self.corpus.works[: self.config.size] if w.user.user_id != user_id]
        picks = rng.sample(others, max(1, round(len(others) * BOOKMARK_SHARE)))
        deleted = next((w for w in others if w.deleted), None)
        if deleted is not None and not any(w.deleted for w in picks):
            picks[rng.randrange(len(picks))] = deleted
        count = len(picks)
        marks = [
            Bookmark(work, rng.random() < PRIVATE_BOOKMARK_SHARE, BOOKMARK_ID_BASE + count - number)
            for number, work in enumerate(picks)
        ]
        self._bookmarks[user_id] = marks
        return marks

    def bookmark_item(self, mark: Bookmark, *, owner_view: bool) -> dict[str, Any]:
        """A bookmarks entry: the search-result shape with the viewer's own ``bookmarkData``; a work
        deleted since is masked (placeholder thumbnail, no title, user 0, numeric id)."""
        data = {"id": str(mark.bookmark_id), "private": mark.private} if owner_view else None
        work = mark.work
        if work.deleted:
            return {
                "id": int(work.id), "title": "-----", "illustType": 0, "xRestrict": 0, "restrict": 0,
                "sl": 0, "url": MASKED_THUMB, "description": "-----", "tags": [], "userId": 0,
                "userName": "-----", "width": 500, "height": 500, "pageCount": 1, "isBookmarkable": False,
                "bookmarkData": data, "alt": "", "titleCaptionTranslation": {"workTitle": None, "workCaption": None},
                "createDate": jst_string(work.created), "updateDate": jst_string(work.created),
                "isUnlisted": False, "isMasked": True, "aiType": 0,
            }
        return {**self.search_item(work), "bookmarkData": data}

    def latest_ranking_day(self) -> dt.date:
        return self.corpus.works[-1].created.astimezone(JST).date()

    def ranking(self, mode: str, day: dt.date, content: str | None) -> list[Artwork]:
        """The mode's works uploaded in its window ending on ``day``, best first by a score drawn
        from the bookmarks and the seed."""
        first = day - dt.timedelta(days=RANKING_WINDOW_DAYS[mode] - 1)
        r18, ai = "r18" in mode, mode.endswith("_ai")
        wanted = RANKING_CONTENT_TYPES.get(content or "")
        works = [
            w for w in self.corpus.works
            if first <= w.created.astimezone(JST).date() <= day and not w.deleted
            and (w.x_restrict == 2 if mode == "r18g" else bool(w.x_restrict) == r18)
            and (w.ai_type == 2) == ai and (wanted is None or w.illust_type == wanted)
        ]

        def score(work: Artwork) -> float:
            return work.bookmark_count * random.Random(f"{self.config.seed}:{work.id}:{mode}").uniform(0.5, 1.5)

        return sorted(works, key=score, reverse=True)[:RANKING_LIMIT]

    def ranking_item(self, work: Artwork, rank: int) -> dict[str, Any]:
        """A ranking entry with the fields PixivUtil2 reads (illust_id, user_id, rating_count,
        illust_content_type) and others of the web page's JSON (no live capture here)."""
        first = work.pages[0]
        return {
            "title": work.title,
            "date": work.created.astimezone(JST).strftime("%Y年%m月%d日 %H:%M"),
            "tags": list(work.tags),
            "url": self.thumb_url(work, "240x480"),
            "illust_type": str(work.illust_type),
            "illust_book_style": "0",
            "illust_page_count": str(len(work.pages)),
            "user_name": work.user.name,
            "profile_img": self.profile_image_url(work.user),
            "illust_content_type": {
                "sexual": 2 if work.x_restrict else 0, "lo": False, "grotesque": work.x_restrict == 2,
                "violent": False, "homosexual": False, "drug": False, "thoughts": False, "antisocial": False,
                "religion": False, "original": False, "furry": False, "bl": False, "yuri": False,
            },
            "illust_series": False,
            "illust_id": int(work.id),
            "width": first.width,
            "height": first.height,
            "user_id": int(work.user.user_id),
            "rank": rank,
            "yes_rank": 0,
            "rating_count": work.like_count,
            "view_count": work.view_count,
            "illust_upload_timestamp": int(work.created.timestamp()),
            "attr": "",
            "is_bookmarked": False,
            "bookmarkable": True,
        }

    def profile_all_body(self, works: list[Artwork]) -> dict[str, Any]:
        """``profile/all``: ids as keys with null values; an empty section is ``[]`` (PHP's way)."""
        illusts = {w.id: None for w in works if w.illust_type != MANGA}
        manga = {w.id: None for w in works if w.illust_type == MANGA}
        return {
            "illusts": illusts or [],
            "manga": manga or [],
            "novels": [],
            "mangaSeries": [],
            "novelSeries": [],
            "pickup": [],
            "bookmarkCount": {"public": {"illust": 0, "novel": 0}, "private": {"illust": 0, "novel": 0}},
            "externalSiteWorksStatus": {"booth": False, "sketch": False, "vroidHub": False},
            "request": {"showRequestTab": False, "postWorks": {"artworks": [], "novels": []}},
        }

    def _user_meta(self, user: User) -> dict[str, Any]:
        return {
            "meta": {
                "title": f"{user.name} - pixiv",
                "description": "pixiv",
                "canonical": f"https://www.pixiv.net/en/users/{user.user_id}",
                "ogp": {"title": f"{user.name} - pixiv", "type": "article"},
                "twitter": {"title": f"{user.name} - pixiv", "card": "summary"},
                "alternateLanguages": {
                    "ja": f"https://www.pixiv.net/users/{user.user_id}",
                    "en": f"https://www.pixiv.net/en/users/{user.user_id}",
                },
                "descriptionHeader": "pixiv",
            }
        }

    def _detail_tags(self, work: Artwork, english: bool = True) -> list[dict[str, Any]]:
        """The first two tags count as the author's own (locked), as on real works. ``english``
        False: the session account's language (Japanese here), which has no translations."""
        entries = []
        for position, tag in enumerate(work.tags):
            by_author = position < 2
            entry: dict[str, Any] = {"tag": tag, "locked": by_author, "deletable": not by_author}
            if by_author:
                entry["userId"] = work.user.user_id
            if tag in TAG_TRANSLATIONS and english:
                entry["translation"] = {"en": TAG_TRANSLATIONS[tag]}
            if by_author:
                entry["userName"] = work.user.name
            entries.append(entry)
        return entries

    def detail_body(self, work: Artwork, *, logged_in: bool, lang: str | None = None) -> dict[str, Any]:
        """``lang``: the language ``translation.en`` holds; without it a logged-in session gets its
        account's language (Japanese: no translations), a visitor English."""
        hidden = bool(work.x_restrict) and not logged_in
        first = work.pages[0]
        urls: dict[str, str | None]
        if hidden:
            urls = dict.fromkeys(("mini", "thumb", "small", "regular", "original"))
        else:
            urls = {
                "mini": self.thumb_url(work, "48x48"),
                "thumb": self.thumb_url(work),
                "small": self.small_url(work),
                "regular": self.regular_url(work),
                "original": self.original_url(work),
            }
        comment = f"{work.title}です<br />#{work.tags[0]}"
        alt = self._alt(work)
        neighbour = str(int(work.id) - 100 * ID_STEP)
        body: dict[str, Any] = {
            "illustId": work.id,
            "illustTitle": work.title,
            "illustComment": comment,
            "id": work.id,
            "title": work.title,
            "description": comment,
            "illustType": work.illust_type,
            "createDate": utc_string(work.created),
            "uploadDate": utc_string(work.uploaded),
            "restrict": 0,
            "xRestrict": work.x_restrict,
            "sl": work.sl,
            "urls": urls,
            "tags": {
                "authorId": work.user.user_id,
                "isLocked": False,
                "tags": self._detail_tags(work, english=(lang or ("ja" if logged_in else "en")) == "en"),
                "writable": not hidden,
            },
            "alt": alt,
            "userId": work.user.user_id,
            "userName": work.user.name,
            "userAccount": work.user.account,
            "userIllusts": {work.id: self.search_item(work), neighbour: None},
            "likeData": False,
            "width": first.width,
            "height": first.height,
            "pageCount": len(work.pages),
            "bookmarkCount": work.bookmark_count,
            "likeCount": work.like_count,
            "commentCount": work.comment_count,
            "responseCount": 0,
            "viewCount": work.view_count,
            "bookStyle": 0,
            "isHowto": False,
            "isOriginal": False,
            "imageResponseOutData": [],
            "imageResponseData": [],
            "imageResponseCount": 0,
            "pollData": None,
            "seriesNavData": None,
            "descriptionBoothId": None,
            "descriptionYoutubeId": None,
            "comicPromotion": None,
            "fanboxPromotion": None,
            "contestBanners": [],
            "isBookmarkable": True,
            "bookmarkData": None,
            "contestData": None,
            "zoneConfig": DETAIL_ZONE_CONFIG,
            "extraData": {
                "meta": {
                    "title": f"{alt} - pixiv",
                    "description": "",
                    "canonical": f"https://www.pixiv.net/artworks/{work.id}",
                    "alternateLanguages": {
                        "ja": f"https://www.pixiv.net/artworks/{work.id}",
                        "en": f"https://www.pixiv.net/en/artworks/{work.id}",
                    },
                    "descriptionHeader": "pixiv",
                }
            },
            "titleCaptionTranslation": {"workTitle": None, "workCaption": None},
            "isUnlisted": False,
            "request": None,
            "commentOff": 0,
            "aiType": work.ai_type,
            "reuploadDate": utc_string(work.uploaded) if work.reupload_count else None,
            "locationMask": False,
            "commissionLinkHidden": False,
            "isLoginOnly": False,
        }
        if hidden:
            body["noLoginData"] = {
                "breadcrumbs": {"successor": [], "current": {"en": "R-18"}},
                "zengoIdWorks": [],
            }
        return body

    def pages_body(self, work: Artwork) -> list[dict[str, Any]]:
        entries = []
        for number, page in enumerate(work.pages):
            entries.append(
                {
                    "urls": {
                        "thumb_mini": self.thumb_url(work, "128x128", number),
                        "small": self.small_url(work, number),
                        "regular": self.regular_url(work, number),
                        "original": self.original_url(work, number),
                    },
                    "width": page.width,
                    "height": page.height,
                }
            )
        return entries

    def ugoira_meta_body(self, work: Artwork) -> dict[str, Any]:
        return {
            "src": self.ugoira_zip_url(work, "600x600"),
            "originalSrc": self.ugoira_zip_url(work, "1920x1080"),
            "mime_type": "image/jpeg",
            "frames": [
                {"file": images.ugoira_frame_name(number), "delay": delay}
                for number, delay in enumerate(work.frame_delays)
            ],
        }

    def truth(self) -> list[dict[str, Any]]:
        """Ground truth per work, for tests and the benchmark to check a crawl against."""
        forced_by_index = collections.defaultdict(list)
        for requirement, index in self.corpus.forced.items():
            forced_by_index[index].append(requirement)
        entries = []
        for work in self.corpus.works:
            entries.append(
                {
                    "id": work.id,
                    "index": work.index,
                    "title": work.title,
                    "userId": work.user.user_id,
                    "illustType": work.illust_type,
                    "pageCount": len(work.pages),
                    "xRestrict": work.x_restrict,
                    "aiType": work.ai_type,
                    "deleted": work.deleted,
                    "broken": work.broken,
                    "formats": [page.extension for page in work.pages],
                    "pages": [
                        {
                            "format": page.extension,
                            "width": page.width,
                            "height": page.height,
                            "transparent": page.kind == images.PNG_RGBA,
                            "exifOrientation": 6 if page.kind == images.JPEG_EXIF6 else None,
                            "original": self.original_url(work, number),
                        }
                        for number, page in enumerate(work.pages)
                    ],
                    "frameDelays": list(work.frame_delays) or None,
                    "createDate": jst_string(work.created),
                    "updateDate": jst_string(work.uploaded),
                    "reuploadCount": work.reupload_count,
                    "bookmarkCount": work.bookmark_count,
                    "tags": list(work.tags),
                    "character": work.character,
                    "forced": forced_by_index.get(work.index, []),
                }
            )
        return entries

    # ---- image bytes -------------------------------------------------------------------------

    def _cached(self, key: tuple[Any, ...], make: Any) -> Any:
        """A bounded LRU: the benchmark fetches thousands of distinct images, each about once."""
        value = self._image_cache.get(key)
        if value is not None:
            self._image_cache.move_to_end(key)
            return value
        value = make()
        self._image_cache[key] = value
        if len(self._image_cache) > IMAGE_CACHE_LIMIT:
            self._image_cache.popitem(last=False)
        return value

    def _image_seed(self, work: Artwork, page: int) -> str:
        return f"{self.config.seed}:{work.id}:{page}:{work.reupload_count}"

    def page_bytes(self, work: Artwork, page: int) -> bytes:
        spec = work.pages[page]
        key = (work.id, page, work.reupload_count, spec.kind)
        seed_key = self._image_seed(work, page)
        data: bytes = self._cached(
            key, lambda: images.render_original(seed_key, spec.width, spec.height, spec.kind, work.character)
        )
        return data

    def ugoira_frames(self, work: Artwork, *, small: bool) -> list[bytes]:
        spec = work.pages[0]
        width, height = spec.width, spec.height
        if small:  # the 600x600 zip holds smaller frames than the 1920x1080 one
            width, height = max(1, width // 2), max(1, height // 2)
        key = (work.id, "frames", work.reupload_count, small)
        seed_key = self._image_seed(work, 0) + (":small" if small else "")
        frames: list[bytes] = self._cached(
            key, lambda: images.render_ugoira_frames(seed_key, width, height, len(work.frame_delays), work.character)
        )
        return frames

    def ugoira_zip(self, work: Artwork, *, small: bool) -> bytes:
        key = (work.id, "zip", work.reupload_count, small)
        data: bytes = self._cached(key, lambda: images.ugoira_zip(self.ugoira_frames(work, small=small)))
        return data

    # ---- apps --------------------------------------------------------------------------------

    def logged_in(self, request: web.Request) -> bool:
        return request.cookies.get("PHPSESSID") == self.config.session

    @web.middleware
    async def _common_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Record the request, add the simulated round trip, then apply the API's gatekeepers."""
        is_control = request.path.startswith("/_mock/")
        if not is_control:
            route = request.match_info.route.name or "other"
            self.stats.record(route, f"{request.method} {request.raw_path}")
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)
        challenged = self.config.cloudflare and not request.path.startswith(("/img-", "/_mock/"))
        if challenged and request.cookies.get("cf_clearance") != self.config.cloudflare:
            return web.Response(status=403, text=CLOUDFLARE_CHALLENGE, content_type="text/html")
        if request.path.startswith("/ajax/"):
            if "Mozilla/" not in request.headers.get("User-Agent", ""):
                return json_response(error_body(MESSAGE_FORBIDDEN), status=403)
            self.ajax_requests += 1
            every = self.config.throttle_429_every
            if every and self.ajax_requests % every == 0:
                return json_response(
                    error_body(MESSAGE_RATE_LIMIT),
                    status=429,
                    headers={"Retry-After": str(self.config.retry_after)},
                )
        response: web.StreamResponse = await handler(request)
        return response

    def api_app(self) -> web.Application:
        app = web.Application(middlewares=[self._common_middleware])
        app.router.add_get("/ajax/search/artworks/{word:.+}", self.handle_search, name="search")
        app.router.add_get("/ajax/user/{user_id}/profile/all", self.handle_user_all, name="user_all")
        app.router.add_get("/ajax/user/{user_id}/profile/illusts", self.handle_user_illusts, name="user_illusts")
        app.router.add_get("/ajax/user/{user_id}/illustmanga/tag", self.handle_user_tag, name="user_tag")
        app.router.add_get("/ajax/user/{user_id}/illusts/bookmarks", self.handle_bookmarks, name="bookmarks")
        app.router.add_get("/", self.handle_top, name="top")
        app.router.add_get("/ranking.php", self.handle_ranking, name="ranking")
        app.router.add_get("/ajax/follow_latest/illust", self.handle_following, name="following")
        app.router.add_get("/ajax/illust/{illust_id}/pages", self.handle_pages, name="pages")
        app.router.add_get("/ajax/illust/{illust_id}/ugoira_meta", self.handle_ugoira_meta, name="ugoira_meta")
        app.router.add_get("/ajax/illust/{illust_id}", self.handle_illust, name="illust")
        app.router.add_route("*", "/ajax/{tail:.*}", self.handle_ajax_unknown)
        app.router.add_post("/_mock/add", self.handle_add)
        app.router.add_post("/_mock/reupload", self.handle_reupload)
        app.router.add_get("/_mock/truth", self.handle_truth)
        app.router.add_get("/_mock/stats", self.handle_stats)
        app.router.add_post("/_mock/reset-stats", self.handle_reset_stats)
        app.router.add_post("/_mock/bookmark", self.handle_add_bookmark)
        app.router.add_get("/_mock/bookmarks", self.handle_bookmarks_truth)
        return app

    def image_app(self) -> web.Application:
        app = web.Application(middlewares=[self._common_middleware])
        app.router.add_get(f"/img-original/img/{DATE_PATH}/{{name}}", self.handle_original, name="image")
        app.router.add_get(f"/img-zip-ugoira/img/{DATE_PATH}/{{name}}", self.handle_ugoira_zip, name="ugoira_zip")
        return app

    # ---- API handlers ------------------------------------------------------------------------

    async def handle_search(self, request: web.Request) -> web.Response:
        word = request.match_info["word"]
        query = request.query
        self.search_requests += 1
        every = self.config.throttle_empty_every
        if every and self.search_requests % every == 0:
            return json_response(self.search_body(word, None, 0))
        ascending, descending = self.corpus.search(
            word,
            logged_in=self.logged_in(request),
            mode=query.get("mode", "all"),
            types=SEARCH_TYPES.get(query.get("type", "all")),
            start=_parse_date(query.get("scd")),
            end=_parse_date(query.get("ecd")),
            s_mode=query.get("s_mode", "s_tag_full"),
        )
        order = query.get("order")
        matches = ascending if order == "date" else descending
        if order in ("popular_d", "popular_male_d", "popular_female_d") and self.config.premium and self.logged_in(request):
            matches = sorted(descending, key=lambda w: w.bookmark_count, reverse=True)  # premium's popular sort
        page = min(_parse_positive_int(query.get("p"), 1), self.config.max_pages)
        offset = (page - 1) * WORKS_PER_PAGE
        return json_response(self.search_body(word, matches[offset : offset + WORKS_PER_PAGE], len(matches)))

    def _user(self, request: web.Request) -> User | None:
        return next((user for user in USERS if user.user_id == request.match_info["user_id"]), None)

    async def handle_user_all(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return json_response(error_body(MESSAGE_USER_NOT_FOUND), status=404)
        return json_response(success_body(self.profile_all_body(self.corpus.by_user(user.user_id))))

    async def handle_user_illusts(self, request: web.Request) -> web.Response:
        """Works by id, in the search-result shape; ids of deleted works, other users' works and
        (without a login) R-18 works are left out, as the site does."""
        user = self._user(request)
        if user is None:
            return json_response(error_body(MESSAGE_USER_NOT_FOUND), status=404)
        ids = request.query.getall("ids[]", [])
        if not ids or len(ids) > USER_WORKS_LIMIT:
            return json_response(error_body(MESSAGE_UNKNOWN), status=400)
        logged_in = self.logged_in(request)
        works = [self.corpus.by_id.get(i) for i in ids]
        shown = sorted(
            (w for w in works if w and not w.deleted and w.user is user and _visible(w, logged_in=logged_in, mode="all")),
            key=lambda w: w.index, reverse=True,
        )
        body: dict[str, Any] = {
            "works": {w.id: self.search_item(w) for w in shown} or [],
            "zoneConfig": SEARCH_ZONE_CONFIG,
            "extraData": self._user_meta(user),
        }
        return json_response(success_body(body))

    async def handle_user_tag(self, request: web.Request) -> web.Response:
        """An artist's works under one of their tags, newest first, ``offset``/``limit`` paged."""
        user = self._user(request)
        if user is None:
            return json_response(error_body(MESSAGE_USER_NOT_FOUND), status=404)
        tag = request.query.get("tag", "")
        offset = _parse_offset(request.query.get("offset"))
        limit = min(_parse_positive_int(request.query.get("limit"), 48), USER_WORKS_LIMIT)
        logged_in = self.logged_in(request)
        matches = [
            w for w in self.corpus.by_user(user.user_id)
            if not w.deleted and tag in w.tags and _visible(w, logged_in=logged_in, mode="all")
        ]
        body = {
            "works": [self.search_item(w) for w in matches[offset : offset + limit]],
            "total": len(matches),
            "zoneConfig": SEARCH_ZONE_CONFIG,
            "extraData": self._user_meta(user),
        }
        return json_response(success_body(body))

    async def handle_bookmarks(self, request: web.Request) -> web.Response:
        """``rest=show``: public bookmarks, to anyone; ``rest=hide``: private ones, to their owner only."""
        user = self._user(request)
        if user is None:
            return json_response(error_body(MESSAGE_USER_NOT_FOUND), status=404)
        rest = request.query.get("rest", "show")
        owner_view = self.logged_in(request) and user is OWN_USER
        if rest == "hide" and not owner_view:
            return json_response(error_body(MESSAGE_FORBIDDEN), status=403)
        tag = request.query.get("tag", "")
        marks = [
            m for m in self.bookmarks_of(user.user_id)
            if m.private == (rest == "hide") and (not tag or tag in m.work.tags)
        ]
        offset = _parse_offset(request.query.get("offset"))
        limit = min(_parse_positive_int(request.query.get("limit"), 48), USER_WORKS_LIMIT)
        body = {
            "works": [self.bookmark_item(m, owner_view=owner_view) for m in marks[offset : offset + limit]],
            "total": len(marks),
            "zoneConfig": SEARCH_ZONE_CONFIG,
            "extraData": self._user_meta(user),
        }
        return json_response(success_body(body))

    async def handle_top(self, request: web.Request) -> web.Response:
        """The top page, as far as a login check reads it (PixivUtil2's markers): for the session an
        ``x-userid`` header, a ``dataLayer`` with ``login: 'yes'``, the user id and premium, and the
        R-18 display setting as ``"xRestrict":2``; for anyone else a visitor's page."""
        if self.logged_in(request):
            premium = "yes" if self.config.premium else "no"
            layer = (f"var dataLayer = [{{ login: 'yes', gender: \"\", user_id: \"{OWN_USER.user_id}\", lang: \"ja\", "
                     f"illustup_flg: 'not_uploaded', premium: '{premium}', }}];")
            data = json.dumps({"userData": {"id": OWN_USER.user_id, "name": OWN_USER.name, "premium": self.config.premium,
                                            "xRestrict": 2}}, ensure_ascii=False, separators=(",", ":"))
            page = f"<!DOCTYPE html><html><head><script>{layer}</script><script>var globalData = {data};</script></head>"
            headers = {"x-userid": OWN_USER.user_id}
        else:
            page = "<!DOCTYPE html><html><head><script>var dataLayer = [{ login: 'no', }];</script></head>"
            headers = {}
        return web.Response(text=page + "<body>pixiv</body></html>", content_type="text/html", headers=headers)

    async def handle_following(self, request: web.Request) -> web.Response:
        """The feed of the artists OWN_USER follows, newest first, 60 a page; past
        ``--follow-max-pages`` it answers that page again (as the site caps non-premium accounts)."""
        if not self.logged_in(request):
            return json_response(error_body(MESSAGE_UNAUTHORIZED), status=401)
        followed = {user.user_id for user in FOLLOWED}
        r18_only = request.query.get("mode") == "r18"
        works = [w for w in reversed(self.corpus.works)
                 if w.user.user_id in followed and not w.deleted and (not r18_only or w.x_restrict)]
        page = min(_parse_positive_int(request.query.get("p"), 1), self.config.follow_max_pages)
        shown = works[(page - 1) * FOLLOW_PAGE : page * FOLLOW_PAGE]
        body = {
            "page": {"ids": [int(w.id) for w in shown], "tags": []},
            "tagTranslation": {tag: {"en": TAG_TRANSLATIONS[tag]} for w in shown for tag in w.tags if tag in TAG_TRANSLATIONS},
            "thumbnails": {"illust": [self.search_item(w) for w in shown], "novel": [], "novelSeries": [], "novelDraft": []},
            "illustSeries": [],
            "requests": [],
            "users": [],
            "zoneConfig": {zone: {"url": _ADS_URL.format(zone=zone)} for zone in ("header", "footer", "logo")},
        }
        return json_response(success_body(body))

    async def handle_ranking(self, request: web.Request) -> web.Response:
        """ranking.php?format=json: a top-level object (no AJAX envelope), ``next`` false on the last
        page; an unknown day, mode or page answers ``{"error": ...}``."""
        query = request.query
        mode = query.get("mode", "daily")
        latest = self.latest_ranking_day()
        try:
            day = dt.datetime.strptime(query["date"], "%Y%m%d").date() if "date" in query else latest
        except ValueError:
            day = None
        content = query.get("content")
        if mode not in RANKING_WINDOW_DAYS or day is None or content not in (None, *RANKING_CONTENT_TYPES):
            return json_response(dump_json({"error": MESSAGE_RANKING_MISSING}), status=400)
        if "r18" in mode and not self.logged_in(request):
            return json_response(dump_json({"error": MESSAGE_FORBIDDEN}), status=403)
        start = CORPUS_START.date()
        if not start <= day <= latest:
            return json_response(dump_json({"error": MESSAGE_RANKING_MISSING}), status=400)
        ranked = self.ranking(mode, day, content)
        pages = max(1, -(-len(ranked) // RANKING_PAGE))
        page = _parse_positive_int(query.get("p"), 1)
        if page > pages:
            return json_response(dump_json({"error": MESSAGE_RANKING_MISSING}), status=404)
        first = (page - 1) * RANKING_PAGE
        body = {
            "contents": [self.ranking_item(w, first + n + 1) for n, w in enumerate(ranked[first : first + RANKING_PAGE])],
            "mode": mode,
            "content": content or "all",
            "page": page,
            "prev": page - 1 if page > 1 else False,
            "next": page + 1 if page < pages else False,
            "date": day.strftime("%Y%m%d"),
            "prev_date": (day - dt.timedelta(days=1)).strftime("%Y%m%d") if day > start else False,
            "next_date": (day + dt.timedelta(days=1)).strftime("%Y%m%d") if day < latest else False,
            "rank_total": len(ranked),
        }
        return json_response(dump_json(body))

    def _live_work(self, request: web.Request) -> Artwork | None:
        work = self.corpus.by_id.get(request.match_info["illust_id"])
        return None if work is None or work.deleted else work

    async def handle_illust(self, request: web.Request) -> web.Response:
        work = self._live_work(request)
        if work is None:
            return json_response(error_body(MESSAGE_NOT_FOUND), status=404)
        detail = self.detail_body(work, logged_in=self.logged_in(request), lang=request.query.get("lang"))
        return json_response(success_body(detail))

    async def handle_pages(self, request: web.Request) -> web.Response:
        work = self._live_work(request)
        if work is None:
            return json_response(error_body(MESSAGE_NOT_FOUND), status=404)
        if work.x_restrict and not self.logged_in(request):
            return json_response(error_body(MESSAGE_UNKNOWN), status=403)
        return json_response(success_body(self.pages_body(work)))

    async def handle_ugoira_meta(self, request: web.Request) -> web.Response:
        work = self._live_work(request)
        if work is None:
            return json_response(error_body(MESSAGE_NOT_FOUND), status=404)
        if not work.is_ugoira:
            return json_response(error_body(MESSAGE_PAGE_NOT_FOUND), status=404)
        if work.x_restrict and not self.logged_in(request):
            return json_response(error_body(MESSAGE_UNKNOWN), status=403)
        return json_response(success_body(self.ugoira_meta_body(work)))

    async def handle_ajax_unknown(self, request: web.Request) -> web.Response:
        return json_response(error_body(MESSAGE_PAGE_NOT_FOUND), status=404)

    # ---- image handlers ----------------------------------------------------------------------

    @staticmethod
    def _plain(status: int) -> web.Response:
        reasons = {403: "403 Forbidden", 404: "404 Not Found"}
        return web.Response(status=status, text=reasons[status], content_type="text/plain")

    def _work_at_date(self, request: web.Request, work_id: str) -> Artwork | None:
        """The live work, only if the URL's date path is its current upload time."""
        work = self.corpus.by_id.get(work_id)
        if work is None or work.deleted:
            return None
        requested = DATE_PATH.format_map(request.match_info)
        return work if requested == work.date_path else None

    async def handle_original(self, request: web.Request) -> web.Response:
        if not referer_allowed(request.headers.get("Referer")):
            return self._plain(403)
        match = ORIGINAL_NAME.match(request.match_info["name"])
        work = self._work_at_date(request, match["id"]) if match else None
        if match is None or work is None:
            return self._plain(404)
        number, extension = int(match["index"]), match["ext"]
        if work.is_ugoira:
            if match["stem"] != "ugoira" or number >= len(work.frame_delays) or extension != "jpg":
                return self._plain(404)
            return web.Response(body=self.ugoira_frames(work, small=False)[number], content_type="image/jpeg")
        if match["stem"] != "p" or number >= len(work.pages) or extension != work.pages[number].extension:
            return self._plain(404)
        content_type = images.CONTENT_TYPES[extension]
        if number == 0 and work.broken:
            return await self._broken_response(work, content_type)
        return web.Response(body=self.page_bytes(work, number), content_type=content_type)

    async def _broken_response(self, work: Artwork, content_type: str) -> web.Response:
        kind = work.broken
        if kind == images.HTML:
            return web.Response(body=images.BROKEN_HTML, content_type="text/html", charset="utf-8")
        if kind == images.EMPTY:
            return web.Response(body=b"", content_type=content_type)
        if kind == images.TRUNCATED:
            return web.Response(body=images.truncated(self.page_bytes(work, 0)), content_type=content_type)
        # The bomb takes a few hundred ms to build once; keep the loop serving meanwhile.
        bomb = await asyncio.get_running_loop().run_in_executor(None, images.bomb_png)
        return web.Response(body=bomb, content_type="image/png")

    async def handle_ugoira_zip(self, request: web.Request) -> web.Response:
        if not referer_allowed(request.headers.get("Referer")):
            return self._plain(403)
        match = UGOIRA_ZIP_NAME.match(request.match_info["name"])
        work = self._work_at_date(request, match["id"]) if match else None
        if match is None or work is None or not work.is_ugoira:
            return self._plain(404)
        body = self.ugoira_zip(work, small=match["size"] == "600x600")
        return web.Response(body=body, content_type="application/zip")

    # ---- control handlers --------------------------------------------------------------------

    async def handle_add(self, request: web.Request) -> web.Response:
        count = _parse_positive_int(request.query.get("count"), 1)
        new_works = self.corpus.add(count)
        self._save_state()
        payload = {"added": [work.id for work in new_works], "size": len(self.corpus.works)}
        return json_response(dump_json(payload))

    async def handle_reupload(self, request: web.Request) -> web.Response:
        work = self.corpus.by_id.get(request.query.get("id", ""))
        if work is None:
            return json_response(error_body(MESSAGE_NOT_FOUND), status=404)
        self.corpus.reupload(work)
        self._save_state()
        payload = {
            "id": work.id,
            "reuploadCount": work.reupload_count,
            "updateDate": jst_string(work.uploaded),
            "original": self.original_url(work),
        }
        return json_response(dump_json(payload))

    async def handle_add_bookmark(self, request: web.Request) -> web.Response:
        user = next((u for u in USERS if u.user_id == request.query.get("user")), None)
        work = self.corpus.by_id.get(request.query.get("id", ""))
        if user is None or work is None:
            return json_response(error_body(MESSAGE_NOT_FOUND), status=404)
        marks = self.bookmarks_of(user.user_id)
        newest = max((m.bookmark_id for m in marks), default=BOOKMARK_ID_BASE)
        marks.insert(0, Bookmark(work, request.query.get("private") == "1", newest + 1))
        return json_response(dump_json({"user": user.user_id, "id": work.id, "bookmarks": len(marks)}))

    async def handle_bookmarks_truth(self, request: web.Request) -> web.Response:
        marks = self.bookmarks_of(request.query.get("user", ""))
        return json_response(dump_json([
            {"id": m.work.id, "private": m.private, "bookmarkId": m.bookmark_id, "deleted": m.work.deleted}
            for m in marks
        ]))

    async def handle_truth(self, request: web.Request) -> web.Response:
        return json_response(dump_json(self.truth()))

    async def handle_stats(self, request: web.Request) -> web.Response:
        return json_response(dump_json(self.stats.as_json()))

    async def handle_reset_stats(self, request: web.Request) -> web.Response:
        """Clear the stats and the throttling counters, so the next Nth request is predictable."""
        self.stats.clear()
        self.ajax_requests = 0
        self.search_requests = 0
        return json_response(dump_json({"ok": True}))


def _public_host(host: str) -> str:
    """The host to put in URLs: a wildcard bind address is not something a client can dial."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def serve(config: SiteConfig) -> None:
    """Start both hosts, announce their URLs on stdout, serve until SIGTERM/SIGINT."""
    site = PixivSite(config)
    image_runner = web.AppRunner(site.image_app(), access_log=None)
    await image_runner.setup()
    await web.TCPSite(image_runner, config.host, config.image_port).start()
    image_port = image_runner.addresses[0][1]
    site.images_base = f"http://{_public_host(config.host)}:{image_port}"

    api_runner = web.AppRunner(site.api_app(), access_log=None)
    await api_runner.setup()
    await web.TCPSite(api_runner, config.host, config.port).start()
    api_port = api_runner.addresses[0][1]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    announcement = {"api": f"http://{_public_host(config.host)}:{api_port}", "images": site.images_base}
    print(json.dumps(announcement), flush=True)
    try:
        await stop.wait()
    finally:
        await api_runner.cleanup()
        await image_runner.cleanup()


def parse_args(argv: list[str] | None = None) -> SiteConfig:
    defaults = SiteConfig()
    parser = argparse.ArgumentParser(prog="python -m mocksites.pixiv", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="API port (0 = any free port)")
    parser.add_argument("--image-port", type=int, default=defaults.image_port, help="image host port (0 = any)")
    parser.add_argument("--size", type=int, default=defaults.size, help="artworks in the corpus")
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms, help="added to every response")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="longest side of images, px")
    parser.add_argument("--broken-every", type=int, default=defaults.broken_every, help="0 = no broken originals")
    parser.add_argument("--throttle-429-every", type=int, default=defaults.throttle_429_every)
    parser.add_argument("--retry-after", type=int, default=defaults.retry_after, help="seconds, sent with 429")
    parser.add_argument("--throttle-empty-every", type=int, default=defaults.throttle_empty_every)
    parser.add_argument("--ads", action="store_true", help="add an ad slot to every search page")
    parser.add_argument("--session", default=defaults.session, help="PHPSESSID of the R-18 enabled account")
    parser.add_argument("--max-pages", type=int, default=defaults.max_pages, help="search pagination cap")
    parser.add_argument("--premium", action="store_true", help="the session's account has Pixiv Premium")
    parser.add_argument("--cloudflare", default=None, metavar="CF_CLEARANCE",
                        help="the API host answers Cloudflare's 403 challenge page unless this cf_clearance cookie comes")
    parser.add_argument("--follow-max-pages", type=int, default=defaults.follow_max_pages,
                        help="the follow feed's deepest page; past it the feed repeats that page")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--tag", default=defaults.tag, help="the tag every artwork carries")
    parser.add_argument("--state", default=None, help="JSON file persisting /_mock/add and /_mock/reupload")
    parser.add_argument(
        "--characters", action="store_true",
        help=f"about 1 in 3 works show {images.TARGET_CHARACTER} (some tagged {TARGET_TAG}); /_mock/truth says which",
    )
    args = parser.parse_args(argv)
    return SiteConfig(**vars(args))


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
