"""What we know about Pixiv's web AJAX API, as pure functions (no Scrapy, no I/O).

Shapes follow real captured responses (see ``../shared/docs/pixiv-web-api.md``): ids are strings,
search dates are JST, an error envelope has ``body: []``, an anonymous view of an R-18 work has every
``urls.*`` null, and a throttled search answers HTTP 200 with an empty page and ``total: 0``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlencode, urlparse

from core.errors import EXIT_FAILED, ProjectError

PAGE_SIZE = 60
USER_PAGE_SIZE = 48  # what Pixiv's web client asks for: profile/illusts batches, illustmanga/tag pages
ORDERS = ("date_d", "date", "popular_d", "popular_male_d", "popular_female_d")
PREMIUM_ORDERS = ("popular_d", "popular_male_d", "popular_female_d")  # Pixiv Premium only
MODES = ("all", "safe", "r18")
TYPES = ("all", "illust_and_ugoira", "illust", "manga", "ugoira")
AI_CHOICES = ("include", "exclude")
# -a match=...: Pixiv's s_mode. OR and -exclusions go inside the word itself, as Pixiv writes them
# ("GuP OR ガルパン -R-18"): the query is sent as typed.
MATCH_MODES = {"exact": "s_tag_full", "partial": "s_tag", "title": "s_tc"}
ILLUST_TYPE_UGOIRA = 2
JST = timezone(timedelta(hours=9))
AI_TYPE_GENERATED = 2


class ApiError(ProjectError):
    """The API answered, but not with what we asked for (error envelope or malformed body)."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class SearchQuery:
    """One tag search; ``key`` names it in the catalogue's search_coverage table."""

    tag: str
    order: str = "date_d"
    mode: str = "all"
    type: str = "all"
    since: str | None = None  # YYYY-MM-DD -> scd
    until: str | None = None  # YYYY-MM-DD -> ecd
    ai: str = "include"
    match: str = "exact"  # exact, partial, title (MATCH_MODES)

    def __post_init__(self) -> None:
        if not self.tag.strip():
            raise ValueError("tag must not be empty")
        for name, value, allowed in (
            ("order", self.order, ORDERS),
            ("mode", self.mode, MODES),
            ("type", self.type, TYPES),
            ("ai", self.ai, AI_CHOICES),
            ("match", self.match, tuple(MATCH_MODES)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        for bound_name, bound in (("since", self.since), ("until", self.until)):
            if bound is not None:
                try:
                    date.fromisoformat(bound)
                except ValueError:
                    raise ValueError(f"{bound_name} must be a date as YYYY-MM-DD, not {bound!r}") from None
        if self.since and self.until and self.since > self.until:
            raise ValueError(f"since ({self.since}) is after until ({self.until})")

    def key(self, logged_in: bool) -> str:
        """Results differ with the query and with login (anonymous search hides R-18)."""
        fields = {"tag": self.tag, "mode": self.mode, "type": self.type, "ai": self.ai,
                  "since": self.since, "until": self.until, "login": logged_in}
        if self.match != "exact":  # exact-tag keys stay as they were before match existed
            fields["match"] = self.match
        return json.dumps(fields, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class UserQuery:
    """An artist's works (``profile/all``), or only those under one of the artist's tags.

    ``key`` names it in the catalogue's coverage table, ``label`` in ``artwork_sources``.
    """

    user_id: str
    tag: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[1-9]\d{0,19}", self.user_id):
            raise ValueError(f"user must be a Pixiv user id (digits), not {self.user_id!r}")
        if self.tag is not None and not self.tag.strip():
            raise ValueError("user_tag must not be empty")

    def key(self, logged_in: bool) -> str:
        return json.dumps(
            {"source": "user", "user": self.user_id, "user_tag": self.tag, "login": logged_in},
            ensure_ascii=False, sort_keys=True,
        )

    @property
    def label(self) -> str:
        return f"user:{self.user_id}" + (f"/tag:{self.tag}" if self.tag else "")


REST_CHOICES = ("show", "hide")
# ranking.php's web modes (PixivUtil2, gallery-dl); the R-18 ones need a login
RANKING_MODES = ("daily", "weekly", "monthly", "rookie", "original", "daily_ai", "male", "female")
RANKING_R18_MODES = ("daily_r18", "weekly_r18", "male_r18", "female_r18", "daily_r18_ai", "r18g")
RANKING_CONTENTS = ("illust", "manga", "ugoira")
RANKING_PAGE_SIZE = 50


@dataclass(frozen=True)
class RankingQuery:
    """One day's ranking (``date`` YYYYMMDD; none: the latest the site has) in one mode."""

    mode: str
    date: str | None = None
    content: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in RANKING_MODES + RANKING_R18_MODES:
            raise ValueError(f"ranking must be one of {', '.join(RANKING_MODES + RANKING_R18_MODES)}, not {self.mode!r}")
        if self.content is not None and self.content not in RANKING_CONTENTS:
            raise ValueError(f"content must be one of {', '.join(RANKING_CONTENTS)}, not {self.content!r}")
        if self.date is not None:
            try:
                datetime.strptime(self.date, "%Y%m%d")
            except ValueError:
                raise ValueError(f"date must be a day as YYYYMMDD, not {self.date!r}") from None

    @property
    def needs_login(self) -> bool:
        return self.mode in RANKING_R18_MODES

    def key(self, logged_in: bool, date: str | None = None) -> str:
        """A ranking is one fixed list per day: the key holds the day, the one the site answered
        with when none was asked for."""
        return json.dumps(
            {"source": "ranking", "mode": self.mode, "content": self.content, "date": date or self.date,
             "login": logged_in},
            sort_keys=True,
        )

    def label(self, date: str | None = None) -> str:
        day = date or self.date
        return f"ranking:{self.mode}" + (f"/{self.content}" if self.content else "") + (f"/{day}" if day else "")


@dataclass(frozen=True)
class BookmarksQuery:
    """Someone's bookmarked works (``rest=hide``: the logged-in user's private ones), newest
    bookmark first, optionally under one of their bookmark tags."""

    user_id: str
    rest: str = "show"
    tag: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[1-9]\d{0,19}", self.user_id):
            raise ValueError(f"bookmarks must be a Pixiv user id (digits), not {self.user_id!r}")
        if self.rest not in REST_CHOICES:
            raise ValueError(f"rest must be one of {', '.join(REST_CHOICES)}, not {self.rest!r}")
        if self.tag is not None and not self.tag.strip():
            raise ValueError("bookmark_tag must not be empty")

    def key(self, logged_in: bool) -> str:
        return json.dumps(
            {"source": "bookmarks", "user": self.user_id, "rest": self.rest, "bookmark_tag": self.tag,
             "login": logged_in},
            ensure_ascii=False, sort_keys=True,
        )

    @property
    def label(self) -> str:
        return f"bookmarks:{self.user_id}" + ("/hide" if self.rest == "hide" else "") + (
            f"/tag:{self.tag}" if self.tag else ""
        )


def search_url(base_url: str, query: SearchQuery, page: int, until: str | None = None, since: str | None = None) -> str:
    """The URL Pixiv's own web client calls for one page of a tag search (``until``/``since``: a
    date window moved past the page cap, in place of the query's own)."""
    params = {
        "word": query.tag,
        "order": query.order,
        "mode": query.mode,
        "p": page,
        "s_mode": MATCH_MODES[query.match],
        "type": query.type,
        "lang": "en",
    }
    if since or query.since:
        params["scd"] = since or query.since
    if until or query.until:
        params["ecd"] = until or query.until
    return f"{base_url.rstrip('/')}/ajax/search/artworks/{quote(query.tag, safe='')}?{urlencode(params)}"


def illust_url(base_url: str, artwork_id: str) -> str:
    """The detail, with ``lang=en``: ``translation.en`` holds the language asked for (else the
    account's), and the catalogue stores English translations whoever is logged in."""
    return f"{base_url.rstrip('/')}/ajax/illust/{artwork_id}?lang=en"


def pages_url(base_url: str, artwork_id: str) -> str:
    return f"{base_url.rstrip('/')}/ajax/illust/{artwork_id}/pages"


def ugoira_meta_url(base_url: str, artwork_id: str) -> str:
    return f"{base_url.rstrip('/')}/ajax/illust/{artwork_id}/ugoira_meta"


def profile_all_url(base_url: str, user_id: str) -> str:
    return f"{base_url.rstrip('/')}/ajax/user/{user_id}/profile/all?lang=en"


def profile_illusts_url(base_url: str, user_id: str, ids: list[str]) -> str:
    """One batch of an artist's works in the search-result shape, as the web client's profile asks."""
    params = [("ids[]", i) for i in ids] + [("work_category", "illustManga"), ("is_first_page", "0"), ("lang", "en")]
    return f"{base_url.rstrip('/')}/ajax/user/{user_id}/profile/illusts?{urlencode(params)}"


def user_tag_url(base_url: str, user_id: str, tag: str, offset: int) -> str:
    params = {"tag": tag, "offset": offset, "limit": USER_PAGE_SIZE, "lang": "en"}
    return f"{base_url.rstrip('/')}/ajax/user/{user_id}/illustmanga/tag?{urlencode(params)}"


def bookmarks_url(base_url: str, query: BookmarksQuery, offset: int) -> str:
    params = {"tag": query.tag or "", "offset": offset, "limit": USER_PAGE_SIZE, "rest": query.rest, "lang": "en"}
    return f"{base_url.rstrip('/')}/ajax/user/{query.user_id}/illusts/bookmarks?{urlencode(params)}"


def following_url(base_url: str, page: int) -> str:
    """The works of the artists the logged-in account follows, newest first (login only)."""
    return f"{base_url.rstrip('/')}/ajax/follow_latest/illust?{urlencode({'p': page, 'mode': 'all', 'lang': 'en'})}"


def parse_following(body: Any) -> list[dict[str, Any]]:
    """A feed page: ``page.ids`` (numbers, newest first) and their descriptions in
    ``thumbnails.illust``; an id without one is listed by id alone."""
    try:
        ids = [str(int(i)) for i in body["page"]["ids"]]
        thumbnails = body["thumbnails"]["illust"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(f"follow_latest body without page.ids/thumbnails.illust ({exc!r})") from None
    described = {str(w.get("id")): w for w in thumbnails if isinstance(w, dict)} if isinstance(thumbnails, list) else {}
    return [described.get(i) or {"id": i} for i in ids]


def ranking_url(base_url: str, query: RankingQuery, page: int) -> str:
    """The ranking page's own JSON (``format=json``), as PixivUtil2 reads it: not an AJAX envelope."""
    params: dict[str, Any] = {"mode": query.mode, "p": page, "format": "json"}
    if query.date:
        params["date"] = query.date
    if query.content:
        params["content"] = query.content
    return f"{base_url.rstrip('/')}/ranking.php?{urlencode(params)}"


@dataclass
class RankingPage:
    ids: list[str]  # in rank order
    date: str  # YYYYMMDD, the day this ranking is for
    page: int
    next_page: int | None  # None on the last page (``next: false``)
    rank_total: int


def parse_ranking(raw: bytes | str) -> RankingPage:
    """One page of ranking.php's JSON. Only what PixivUtil2 relies on is read (``illust_id``,
    ``next``, ``date``, ``rank_total``): the detail request gives everything the crawl stores."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"malformed JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("contents"), list):
        message = doc.get("error") if isinstance(doc, dict) else None
        raise ApiError(f"ranking error: {message}" if message else "ranking JSON without contents")
    try:
        ids = [str(int(item["illust_id"])) for item in doc["contents"]]
        following = doc.get("next")
        return RankingPage(
            ids=ids, date=str(doc["date"]), page=int(doc["page"]),
            next_page=following if isinstance(following, int) and not isinstance(following, bool) else None,
            rank_total=int(doc["rank_total"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(f"ranking JSON without illust_id/date/page/rank_total ({exc!r})") from None


def is_masked(work: dict[str, Any]) -> bool:
    """A listed work the site will not describe (a bookmarked work deleted or made private since):
    ``isMasked``, or the placeholder thumbnail instead of the work's own."""
    return bool(work.get("isMasked")) or "/common/images/limit_" in str(work.get("url") or "")


@dataclass(frozen=True)
class Login:
    """Who the cookie logs in as, read from the top page as PixivUtil2 reads it."""

    user_id: str | None
    premium: bool
    x_restrict: int | None  # the account's display setting: 0 hides R-18 and R-18G, 1 R-18G, 2 none


def read_login(headers: dict[str, str], page: str) -> Login | None:
    """The login the top page (``https://www.pixiv.net/``, not redirected) shows, or None for a
    visitor. PixivUtil2 (common/PixivBrowserFactory.py, loginUsingCookie and getMyId): an
    ``x-userid`` response header, or one of the page's login markers; the user id, premium and the
    R-18 setting from its ``dataLayer`` and ``"xRestrict":N``."""
    user_id = next((v for k, v in headers.items() if k.lower() == "x-userid" and v.strip()), None)
    markers = ("logout.php", "pixiv.user.loggedIn = true", "_gaq.push(['_setCustomVar', 1, 'login', 'yes'",
               "var dataLayer = [{ login: 'yes',")
    if user_id is None and not any(marker in page for marker in markers):
        return None
    if user_id is None:
        found = (re.search(r'pixiv\.user\.id = "(\d+)";', page) or re.search(r"user_id:\s?'(\d+)'", page)
                 or re.search(r"var dataLayer = .*user_id: *['\"](\d+)['\"]", page))
        user_id = found.group(1) if found else None
    plan = re.search(r"_gaq\.push\(\['_setCustomVar', 3, 'plan', '(\w+)', 1\]\)", page)
    premium = plan.group(1) == "premium" if plan else bool(re.search(r"var dataLayer = .*premium:\s?'yes'", page))
    restrict = re.search(r'"xRestrict\\?":(\d+)', page)
    return Login(user_id=user_id.strip() if user_id else None, premium=premium,
                 x_restrict=int(restrict.group(1)) if restrict else None)


def parse_envelope(raw: bytes | str) -> Any:
    """Return ``body`` of a success envelope; raise ApiError with Pixiv's message otherwise."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        snippet = raw[:80] if isinstance(raw, str) else raw[:80].decode("utf-8", "replace")
        raise ApiError(f"malformed JSON ({exc.__class__.__name__}): {snippet!r}") from None
    if not isinstance(doc, dict) or "body" not in doc:
        raise ApiError("JSON without the error/body envelope")
    if doc.get("error"):
        raise ApiError(f"API error: {doc.get('message') or '(no message)'}")
    return doc["body"]


@dataclass
class SearchPage:
    works: list[dict[str, Any]]  # ad slots removed
    total: int
    raw_count: int  # entries in data, ad slots included


def parse_search(body: Any) -> SearchPage:
    try:
        section = body["illustManga"]
        data = section["data"]
        total = int(section["total"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(f"search body without illustManga.data/total ({exc!r})") from None
    works = [w for w in data if isinstance(w, dict) and not w.get("isAdContainer") and w.get("id")]
    return SearchPage(works=works, total=total, raw_count=len(data))


def parse_profile_all(body: Any) -> list[str]:
    """An artist's illust and manga ids, newest first.

    The ids are the keys of ``illusts`` and ``manga`` (values null); PHP writes an empty one as
    ``[]``, not ``{}``.
    """
    if not isinstance(body, dict) or "illusts" not in body:
        raise ApiError("profile/all body without illusts")
    ids: set[str] = set()
    for section in ("illusts", "manga"):
        value = body.get(section)
        if isinstance(value, dict):
            ids.update(str(k) for k in value)
        elif value not in (None, []):
            raise ApiError(f"profile/all {section} is neither an object nor []")
    if not all(i.isdigit() for i in ids):
        raise ApiError("profile/all lists an id that is not a number")
    return sorted(ids, key=int, reverse=True)


def parse_profile_illusts(body: Any, ids: list[str]) -> list[dict[str, Any]]:
    """The works of one profile/illusts batch, in the order asked for; an id the site left out
    (deleted, or hidden from this session) is simply absent."""
    works = body.get("works") if isinstance(body, dict) else None
    if isinstance(works, list) and not works:
        works = {}
    if not isinstance(works, dict):
        raise ApiError("profile/illusts body without works")
    found = {str(w.get("id")): w for w in works.values() if isinstance(w, dict) and w.get("id")}
    return [found[i] for i in ids if i in found]


def parse_works_page(body: Any) -> SearchPage:
    """A page of ``works[]`` with ``total`` (an artist's tag, bookmarks)."""
    try:
        data = body["works"]
        total = int(body["total"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(f"body without works/total ({exc!r})") from None
    if not isinstance(data, list):
        raise ApiError("works is not a list")
    works = [w for w in data if isinstance(w, dict) and w.get("id") and not w.get("isAdContainer")]
    return SearchPage(works=works, total=total, raw_count=len(data))


def position(work: dict[str, Any]) -> tuple[str, int]:
    """Where a work sits in date_d order: by createDate, then id."""
    return (str(work.get("createDate") or ""), int(work["id"]))


def artwork_from_id(artwork_id: str) -> dict[str, Any]:
    """What is known of an artwork from its id alone (profile/all named it; its detail fills the rest)."""
    return {
        "id": artwork_id, "title": None, "user_id": None, "user_name": None, "illust_type": None,
        "x_restrict": None, "ai_type": None, "page_count": None, "bookmark_count": None,
        "create_date": None, "update_date": None, "tags": [],
    }


def artwork_from_search(work: dict[str, Any]) -> dict[str, Any]:
    """Catalogue fields that a search result already carries (enough to decide skip or fetch)."""
    return {
        "id": str(work["id"]),
        "title": work.get("title"),
        "user_id": str(work.get("userId")) if work.get("userId") is not None else None,
        "user_name": work.get("userName"),
        "illust_type": work.get("illustType"),
        "x_restrict": work.get("xRestrict"),
        "ai_type": work.get("aiType", 0),
        "page_count": work.get("pageCount"),
        "bookmark_count": None,
        "create_date": work.get("createDate"),
        "update_date": work.get("updateDate"),
        "tags": [{"name": t, "translation_en": None} for t in work.get("tags") or []],
    }


def merge_detail(artwork: dict[str, Any], detail: dict[str, Any]) -> dict[str, Any]:
    """Fill in what only the detail has: bookmark count and tag translations (and, for an id that
    no listing described, the listing's fields too)."""
    tags = []
    for t in (detail.get("tags") or {}).get("tags") or []:
        translation = t.get("translation") or {}
        tags.append({"name": t["tag"], "translation_en": translation.get("en")})
    known_from_detail = {
        "title": detail.get("illustTitle") or detail.get("title"),
        "user_id": str(detail["userId"]) if detail.get("userId") is not None else None,
        "user_name": detail.get("userName"),
        "illust_type": detail.get("illustType"),
        "x_restrict": detail.get("xRestrict"),
        "ai_type": detail.get("aiType"),
        # the detail writes its dates in UTC, listings in JST: store them as a listing would
        "create_date": _as_jst(detail.get("createDate")),
        "update_date": _as_jst(detail.get("uploadDate") or detail.get("updateDate")),
    }
    filled = {k: v for k, v in known_from_detail.items() if artwork.get(k) is None and v is not None}
    return {
        **artwork,
        **filled,
        "bookmark_count": detail.get("bookmarkCount"),
        "page_count": detail.get("pageCount", artwork.get("page_count")),
        "tags": tags or artwork["tags"],
    }


def _as_jst(moment: Any) -> str | None:
    try:
        return datetime.fromisoformat(str(moment)).astimezone(JST).isoformat(timespec="seconds")
    except ValueError:
        return None if moment is None else str(moment)


def original_urls_from_pages(body: Any) -> list[str]:
    if not isinstance(body, list) or not body:
        raise ApiError("pages body is not a non-empty list")
    try:
        return [p["urls"]["original"] for p in body]
    except (KeyError, TypeError) as exc:
        raise ApiError(f"pages entry without urls.original ({exc!r})") from None


SAFE_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".gif": "gif", ".webp": "webp", ".zip": "zip"}


def original_file_name(artwork_id: str, page: int, url: str, ugoira: bool = False) -> str:
    """``{id}_p{n}.{ext}`` (or ``{id}_ugoira.zip``), built from ids, never from titles or paths.

    Only the extension is taken from the URL, and only from a short whitelist, so a hostile URL
    (``../``, odd characters, ``.php``) can never steer where a file lands.
    """
    if not re.fullmatch(r"\d{1,20}", str(artwork_id)):
        raise ValueError(f"artwork id is not numeric: {artwork_id!r}")
    suffix = PurePosixPath(urlparse(url).path).suffix.lower()
    ext = SAFE_EXTENSIONS.get(suffix, "bin")
    if ugoira:
        return f"{artwork_id}_ugoira.zip"
    return f"{artwork_id}_p{int(page)}.{ext}"
