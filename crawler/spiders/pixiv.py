"""Pixiv's web AJAX API: a listing (tag search, an artist's works, bookmarks, a ranking) → artwork
details → pages / ugoira → items.

    scrapy crawl pixiv -a tag=原神 [-a pages=N] [-a order=date_d|date] [-a mode=all|safe|r18]
        [-a type=all|illust_and_ugoira|illust|manga|ugoira] [-a since=YYYY-MM-DD]
        [-a until=YYYY-MM-DD] [-a ai=include|exclude] [-a stop_after=60]
    scrapy crawl pixiv -a user=ID [-a user_tag=TAG]
    scrapy crawl pixiv -a bookmarks=ID [-a rest=show|hide] [-a bookmark_tag=TAG]
    scrapy crawl pixiv -a ranking=daily|weekly|...|daily_r18 [-a date=YYYYMMDD] [-a content=illust|manga|ugoira]
    scrapy crawl pixiv -a following=1

One source per run; ``pages``, ``ai`` and ``stop_after`` go with any. ``user``: every illust and
manga of the artist (``profile/all`` names the ids, ``profile/illusts`` describes them 48 at a time,
newest first); with ``user_tag`` only the works the artist filed under that tag (``illustmanga/tag``).
``bookmarks``: newest bookmark first, 48 a page. ``ranking``: ranking.php's JSON, 50 a page.
``following``: the logged-in account's feed of followed artists, 60 a page, to the site's page limit.
``pages`` counts listing pages. A work a listing names by id alone (a masked bookmark, a ranking
entry, an id profile/all named that its batch left out) gets its detail request unless catalogued.

Incremental: an artwork whose id and ``updateDate`` are already catalogued (with every page) gets
no detail request. Paging stops after ``stop_after`` such artworks in a row, but only counting
those inside the range that an earlier *cleanly finished* crawl of the same source completed down
to the end of its list (``search_coverage``; the place in the list is (create date, id) for tag
search with ``order=date_d``, an artist's works and the feed, and the place counted from the end for bookmarks
and a day's ranking). A crawl killed half-way therefore never lets the next one stop early in the
part it did not reach: the gap that gallery-dl's ``abort:N`` can leave (mikf/gallery-dl#1283)
cannot happen here. Every artwork a listing names is recorded with its source (``artwork_sources``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import timedelta, timezone
from typing import TYPE_CHECKING, Any, AsyncIterator

import scrapy
from scrapy.http import TextResponse

from catalog.store import Catalog, Coverage, utc_now
from core.errors import ArgumentError
from core.items import ArtworkItem
from core.storage import catalog_path
from crawler.cluster import LOCAL_META
from crawler.middlewares import WAIT_META, has_login_cookie
from sites import pixiv_api as api

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

JST = timezone(timedelta(hours=9))
# Details and their follow-ups go before the next search page, so the queue stays one page deep
# and memory stays flat however large the crawl.
PRIORITY_SEARCH, PRIORITY_DETAIL, PRIORITY_FOLLOW_UP = 0, 10, 20
MIN_BOOKMARKS_REASON = "fewer bookmarks than min_bookmarks"  # + " N: M bookmarks"
API_META = {"handle_httpstatus_all": True}


class PixivSpider(scrapy.Spider):
    name = "pixiv"
    # Set by ``from_crawler`` from the settings (Scrapy builds the spider from its arguments first).
    base_url: str
    logged_in: bool
    stop_after: int
    page_cap: int
    empty_page_retries: int
    empty_page_wait: float
    max_wait: float
    query_key: str
    cookie_set: bool  # a PHPSESSID is set (logged_in: and the site says it logs in)
    login: api.Login | None = None  # who the cookie logs in as, once checked
    following_max_pages: int
    source_label: str  # artwork_sources.source: tag:原神, user:123, user:123/tag:R-18
    catalog: Catalog
    coverage: Coverage | None
    state: dict[str, Any]  # persisted across pause and resume by Scrapy's SpiderState (JOBDIR)
    crawl_id: int | None = None  # the crawls row, once the catalogue stage opened it

    def __init__(
        self,
        tag: str | None = None,
        pages: str | int | None = None,
        order: str | None = None,
        mode: str | None = None,
        type: str | None = None,  # noqa: A002 - the argument's name on the command line
        since: str | None = None,
        until: str | None = None,
        ai: str = "include",
        stop_after: str | int | None = None,
        user: str | None = None,
        user_tag: str | None = None,
        bookmarks: str | None = None,
        rest: str | None = None,
        bookmark_tag: str | None = None,
        ranking: str | None = None,
        date: str | None = None,
        content: str | None = None,
        following: str | None = None,
        match: str | None = None,
        min_bookmarks: str | int | None = None,
        *args: Any,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.query: api.SearchQuery | None = None
        self.user_query: api.UserQuery | None = None
        self.bookmarks_query: api.BookmarksQuery | None = None
        self.ranking_query: api.RankingQuery | None = None
        if following not in (None, "", "0", "1"):
            raise ArgumentError(f"following takes 1 (the feed of the artists you follow), not {following!r}")
        self.following = following == "1"
        sources = [name for name, value in (("tag", tag), ("user", user), ("bookmarks", bookmarks), ("ranking", ranking),
                                            ("following", self.following)) if value]
        if len(sources) > 1:
            raise ArgumentError(f"{' and '.join(sources)} are {len(sources)} sources; give one per run")
        for option, needs, value in (("user_tag", "user=ID", user_tag), ("rest", "bookmarks=ID", rest),
                                     ("bookmark_tag", "bookmarks=ID", bookmark_tag),
                                     ("date", "ranking=MODE", date), ("content", "ranking=MODE", content)):
            if value is not None and sources != [needs.split("=")[0]]:
                raise ArgumentError(f"{option} goes with {needs} only")
        if ai not in api.AI_CHOICES:
            raise ArgumentError(f"ai must be one of {', '.join(api.AI_CHOICES)}, not {ai!r}")
        self.ai = ai
        if not sources:
            raise ArgumentError(
                "give a source: -a tag=TAG (e.g. scrapy crawl pixiv -a tag=原神), -a user=ID, -a bookmarks=ID, "
                "-a ranking=MODE or -a following=1"
            )
        search_only = {"order": order, "mode": mode, "type": type, "since": since, "until": until, "match": match}
        given = [name for name, value in search_only.items() if value is not None]
        if given and sources != ["tag"]:
            raise ArgumentError(f"{', '.join(given)} applies to tag search only, not to {sources[0]}")
        try:  # each query's own checks (sites/pixiv_api.py) word what is wrong
            if user:
                self.user_query = api.UserQuery(str(user), user_tag)
                self.tag = self.source_label = self.user_query.label
            elif bookmarks:
                self.bookmarks_query = api.BookmarksQuery(str(bookmarks), rest or "show", bookmark_tag)
                self.tag = self.source_label = self.bookmarks_query.label
            elif ranking:
                self.ranking_query = api.RankingQuery(str(ranking), str(date) if date else None, content)
                self.tag = self.source_label = self.ranking_query.label()
            elif self.following:
                self.tag = self.source_label = "following"
            else:
                assert tag is not None
                self.query = api.SearchQuery(
                    tag=tag, order=order or "date_d", mode=mode or "all", type=type or "all",
                    since=since, until=until, ai=ai, match=match or "exact",
                )
                self.tag = tag
                self.source_label = f"tag:{tag}"
        except ValueError as exc:
            raise ArgumentError(str(exc)) from None
        self.max_pages = _positive_int("pages", pages) if pages not in (None, "") else None
        self.min_bookmarks = _positive_int("min_bookmarks", min_bookmarks) if min_bookmarks not in (None, "") else None
        self._stop_after_arg = stop_after

    @property
    def newest_first(self) -> bool:
        """Whether the listing runs newest first, so that coverage and the early stop apply."""
        return self.query is None or self.query.order == "date_d"

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> PixivSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        s = crawler.settings
        spider.base_url = s.get("PIXIV_BASE_URL").rstrip("/")
        # whether a PHPSESSID is set; start() then asks the site whether it still logs in
        spider.logged_in = spider.cookie_set = has_login_cookie(s)
        stop_after = spider._stop_after_arg
        spider.stop_after = (
            _positive_int("stop_after", stop_after, allow_zero=True)
            if stop_after not in (None, "")
            else s.getint("PIXIV_STOP_AFTER_KNOWN")
        )
        spider.page_cap = s.getint("PIXIV_SEARCH_PAGE_CAP")
        spider.empty_page_retries = s.getint("PIXIV_EMPTY_PAGE_RETRIES")
        spider.empty_page_wait = s.getfloat("PIXIV_EMPTY_PAGE_WAIT")
        spider.max_wait = s.getfloat("PIXIV_THROTTLE_MAX_WAIT")
        if spider.bookmarks_query and spider.bookmarks_query.rest == "hide" and not spider.logged_in:
            raise ArgumentError("rest=hide lists your own private bookmarks: it needs your login (PIXIV_PHPSESSID)")
        if spider.ranking_query and spider.ranking_query.needs_login and not spider.logged_in:
            raise ArgumentError(f"ranking={spider.ranking_query.mode} is R-18: it needs a login (PIXIV_PHPSESSID)")
        if spider.following and not spider.logged_in:
            raise ArgumentError("following=1 is the feed of the artists your account follows: it needs your login "
                                "(PIXIV_PHPSESSID)")
        if spider.query and spider.query.mode == "r18" and not spider.logged_in:
            raise ArgumentError("mode=r18 lists R-18 works only, which Pixiv shows to a login: set PIXIV_PHPSESSID")
        spider.following_max_pages = s.getint("PIXIV_FOLLOWING_MAX_PAGES")
        spider.catalog = Catalog(catalog_path(s))  # beside the catalogue stage's writer: last_seen, sources
        spider._set_source_key()
        crawler.signals.connect(spider._close_catalog, signal=scrapy.signals.spider_closed)
        return spider

    def _set_source_key(self) -> None:
        """The source's coverage key and coverage, for the login as it stands (claimed, then checked)."""
        source = self.query or self.user_query or self.bookmarks_query or self.ranking_query
        # the feed is the logged-in account's: keyed by whose login the check found
        account = self.login.user_id if self.login else None
        self.query_key = source.key(self.logged_in) if source else json.dumps({"source": "following", "user": account})
        self.coverage = self.catalog.coverage(self.query_key) if self.newest_first else None

    def _needs_login(self) -> str | None:
        """What in this run needs a working login, or None."""
        if self.following:
            return "following=1"
        if self.bookmarks_query and self.bookmarks_query.rest == "hide":
            return "rest=hide"
        if self.ranking_query and self.ranking_query.needs_login:
            return f"ranking={self.ranking_query.mode}"
        if self.query and self.query.mode == "r18":
            return "mode=r18"
        return None

    def crawl_arguments(self) -> dict[str, Any]:
        """What the crawls table records about this run (no cookie: only whether one was set)."""
        common = {
            "pages": self.max_pages, "ai": self.ai, "stop_after": self.stop_after, "min_bookmarks": self.min_bookmarks,
            "logged_in": self.logged_in, "base_url": self.base_url,
        }
        if self.bookmarks_query:
            q = self.bookmarks_query
            return {"bookmarks": q.user_id, "rest": q.rest, "bookmark_tag": q.tag, **common}
        if self.ranking_query:
            r = self.ranking_query
            return {"ranking": r.mode, "date": r.date, "content": r.content, **common}
        if self.following:
            return {"following": True, **common}
        if self.user_query:
            return {"user": self.user_query.user_id, "user_tag": self.user_query.tag, **common}
        assert self.query is not None
        return {
            "tag": self.tag, "order": self.query.order, "mode": self.query.mode, "type": self.query.type,
            "since": self.query.since, "until": self.query.until, "match": self.query.match, **common,
        }

    # --- entry point ------------------------------------------------------------------------------
    async def start(self) -> AsyncIterator[Any]:
        # spider.state is persisted across pause/resume when JOBDIR is set (SpiderState extension).
        if not hasattr(self, "state"):
            self.state = {}
        self.state.setdefault("artworks_seen", 0)
        self.state.setdefault("pages_done", 0)
        self.state.setdefault("artwork_errors", 0)
        self.state.setdefault("consecutive_known", 0)
        if self.cookie_set:
            yield self.login_check_request(self.base_url + "/")
            return
        for request in self._begin():
            yield request

    # --- the login --------------------------------------------------------------------------------------
    def login_check_request(self, url: str, followed: bool = False) -> scrapy.Request:
        """The top page, not redirected, as PixivUtil2 checks a cookie: who it logs in as, if anyone."""
        return scrapy.Request(
            url, callback=self.parse_login_check, errback=self.login_check_failed, cb_kwargs={"followed": followed},
            # never from HTTPCACHE: yesterday's answer says nothing of the cookie today
            meta={**API_META, LOCAL_META: True, "dont_redirect": True, "dont_cache": True},
            priority=PRIORITY_SEARCH, dont_filter=True,
        )

    def parse_login_check(self, response: Response, followed: bool) -> Any:
        headers = {k.decode("latin-1"): b", ".join(v).decode("latin-1") for k, v in response.headers.items()}
        page = response.text if isinstance(response, TextResponse) else ""
        login = api.read_login(headers, page) if response.status < 400 else None
        if login is None and 300 <= response.status < 400 and not followed and "Location" in headers:
            yield self.login_check_request(response.urljoin(headers["Location"]), followed=True)
            return
        if response.status >= 400:
            why = f"the top page answered HTTP {response.status}: the login cannot be checked"
            logger.error("%s (a Cloudflare page? copy its cf_clearance cookie into PIXIV_COOKIES)", why)
            self.state["search_failed"] = why
            return
        self.login = login
        self.logged_in = login is not None
        if login is None:
            logger.warning(
                "The Pixiv cookie does not log in: the top page shows a visitor (as PixivUtil2 checks it). "
                "Renew PIXIV_PHPSESSID (or PIXIV_COOKIES). This run goes on as a visitor's: R-18 works are "
                "recorded login_required, and its coverage is a visitor's."
            )
            needs = self._needs_login()
            if needs:
                why = f"the Pixiv login is dead, and {needs} needs a working one"
                logger.error("%s; renew PIXIV_PHPSESSID", why)
                self.state["search_failed"] = why
                return
        else:
            logger.info("Logged in to Pixiv as user %s (premium: %s)", login.user_id or "?", "yes" if login.premium else "no")
            hidden = self.bookmarks_query if self.bookmarks_query and self.bookmarks_query.rest == "hide" else None
            if hidden and login.user_id and login.user_id != hidden.user_id:
                why = (f"rest=hide lists your own private bookmarks only: this login is user {login.user_id}, "
                       f"not {hidden.user_id}")
                logger.error("%s", why)
                self.state["search_failed"] = why
                return
            if login.x_restrict == 0 and self._needs_login() in ("mode=r18",) + tuple(
                    f"ranking={m}" for m in api.RANKING_R18_MODES):
                logger.warning("This account's settings hide R-18 works (xRestrict 0): turn them on at pixiv.net "
                               "(Settings, Viewing restrictions) or the R-18 lists come back empty")
        for request in self._begin():
            yield request
        if self.crawl_id is not None:  # the crawls row, opened with the login as claimed
            self.catalog.update_crawl_source(self.crawl_id, self.crawl_arguments(), self.query_key)

    def login_check_failed(self, failure: Failure) -> None:
        why = f"the login check failed: {failure.value.__class__.__name__}: {failure.value}"
        logger.error("%s", why)
        self.state["search_failed"] = why

    def _begin(self) -> Any:
        """The source's first listing request, once the login is known."""
        premium = bool(self.login and self.login.premium)
        if self.query and self.query.order in api.PREMIUM_ORDERS and not premium:
            logger.warning(
                "order=%s sorts by popularity for Pixiv Premium accounts only, and this run has %s: "
                "searching newest first (order=date_d) instead", self.query.order,
                "a login without premium" if self.logged_in else "no login",
            )
            self.query = dataclasses.replace(self.query, order="date_d")
        self._set_source_key()
        if self.coverage:
            cover = self.coverage
            where = (f"below {cover.complete_below_date} (id {cover.complete_below_id})" if cover.complete_below_date
                     else f"up to place {cover.complete_below_id} counted from the end")
            logger.info("%s is known complete %s; stopping after %d known artworks in a row there",
                        self.source_label, where, self.stop_after)
        if self.following:
            yield self.following_request(1)
        elif self.ranking_query is not None:
            yield self.ranking_request(1)
        elif self.bookmarks_query is not None:
            yield self.bookmarks_request(0)
        elif self.user_query is None:
            assert self.query is not None
            yield self.search_request(1, self.query.until)
        elif self.user_query.tag is None:
            yield self.listing_request(api.profile_all_url(self.base_url, self.user_query.user_id), self.parse_profile_all)
        else:
            yield self.user_tag_request(0)

    def listing_request(self, url: str, callback: Any, *, wait: float | None = None, **cb_kwargs: Any) -> scrapy.Request:
        """A page of a listing other than tag search (``wait``: seconds to rest first, for a retry);
        like search pages, it stays on the node that leads a distributed crawl."""
        return scrapy.Request(
            url, callback=callback, errback=self.search_failed, cb_kwargs=cb_kwargs,
            meta={**API_META, LOCAL_META: True, **({WAIT_META: wait} if wait else {})},
            priority=PRIORITY_SEARCH, dont_filter=bool(wait),
        )

    def search_request(self, page: int, until: str | None, **meta: Any) -> scrapy.Request:
        assert self.query is not None
        return scrapy.Request(
            api.search_url(self.base_url, self.query, page, until, since=getattr(self, "state", {}).get("window_since")),
            callback=self.parse_search,
            errback=self.search_failed,
            cb_kwargs={"page": page, "until": until},
            # The paging state lives in spider.state: in a distributed crawl (crawler/cluster.py)
            # search pages stay on the node that leads, and only details are shared.
            meta={**API_META, LOCAL_META: True, **meta},
            priority=PRIORITY_SEARCH,
            dont_filter=bool(meta),
        )

    # --- search pages -----------------------------------------------------------------------------
    def parse_search(self, response: Response, page: int, until: str | None) -> Any:
        if response.status != 200:
            yield from self._search_unusable(response, page, until, f"HTTP {response.status}")
            return
        try:
            result = api.parse_search(api.parse_envelope(response.body))
        except api.ApiError as exc:
            yield from self._search_unusable(response, page, until, str(exc))
            return

        if result.raw_count == 0:
            expected = max(result.total, self.state.get("total", 0))
            if expected > (page - 1) * api.PAGE_SIZE or (page == 1 and self._seen_before()):
                yield from self._throttled_empty_page(response, page, until, expected)
                return
            logger.info("Search %r: page %d is past the end (total %d)", self.tag, page, result.total)
            self.state["reached_end"] = True
            return
        ids = [str(w["id"]) for w in result.works]
        if page > 1 and ids and ids == self.state.get("previous_ids"):
            # what a site does past its deepest page: it answers that page again
            logger.info("Search %r: page %d repeats page %d: past the site's page cap", self.tag, page, page - 1)
            yield from self._move_window(page - 1, until)
            return
        self.state["previous_ids"] = ids
        if result.works:
            self.state["previous_last_date"] = str(result.works[-1].get("createDate", ""))[:10]
        self.state["total"] = result.total
        self.state["pages_done"] += 1
        self.state.pop("empty_retries", None)
        self.state.pop("bad_page_retries", None)

        stopped = yield from self._listed_works(result.works)
        if stopped:
            return
        yield from self._next_page(result, page, until)

    def _listed_works(self, works: list[dict[str, Any]], positions: list[tuple[str, int]] | None = None) -> Any:
        """Detail requests for the listed works not settled in the catalogue (a generator whose
        return value says whether the early stop fired). Works listed by id alone come as
        ``{"id": ...}``. ``positions``: where each work sits in the listing's order, for coverage,
        when it is not (create date, id)."""
        known = self.catalog.known_artworks(str(w["id"]) for w in works)
        seen_known: list[str] = []
        self.catalog.record_sources((str(w["id"]) for w in works), self.source_label, utc_now())
        for index, work in enumerate(works):
            artwork_id = str(work["id"])
            self.state["artworks_seen"] += 1
            artwork = api.artwork_from_search(work) if "createDate" in work else api.artwork_from_id(artwork_id)
            where = positions[index] if positions else api.position(work)
            if "top" not in self.state and (positions or "createDate" in work):
                self.state["top"] = where
            if self.ai == "exclude" and work.get("aiType") == api.AI_TYPE_GENERATED:
                self.crawler.stats.inc_value("artworks/skipped_ai")
                yield ArtworkItem(
                    artwork=artwork, status="skipped",
                    reason="AI-generated (aiType 2), excluded by ai=exclude",
                )
                if self._count_known(where):
                    self.catalog.mark_seen(seen_known, utc_now())
                    return True
                continue
            if self._is_settled(known.get(artwork_id), work):
                seen_known.append(artwork_id)
                self.crawler.stats.inc_value("artworks/known")
                if self._count_known(where):
                    self.catalog.mark_seen(seen_known, utc_now())
                    return True
                continue
            self.state["consecutive_known"] = 0
            yield scrapy.Request(
                api.illust_url(self.base_url, artwork_id),
                callback=self.parse_detail,
                errback=self.api_failed,
                cb_kwargs={"artwork": artwork},
                meta=dict(API_META),
                priority=PRIORITY_DETAIL,
            )
        self.catalog.mark_seen(seen_known, utc_now())
        return False

    def _next_page(self, result: api.SearchPage, page: int, until: str | None) -> Any:
        if self.max_pages and self.state["pages_done"] >= self.max_pages:
            logger.info("Search %r: stopping at the pages limit (%d)", self.tag, self.max_pages)
            self.state["page_limit"] = True
            return
        if page * api.PAGE_SIZE >= result.total or len(result.works) == 0:
            logger.info("Search %r: reached the last page (%d, total %d)", self.tag, page, result.total)
            self.state["reached_end"] = True
            return
        if page < self.page_cap:
            yield self.search_request(page + 1, until)
            return
        yield from self._move_window(page, until)

    def _move_window(self, page: int, until: str | None) -> Any:
        """Past the deepest page Pixiv serves, go on with a date window that starts again at the
        last work seen (PixivUtil2's enableInfiniteLoop): ``ecd`` moves back for newest first,
        ``scd`` forward for oldest first. Works of that day come again and are skipped."""
        last = self.state.get("previous_last_date") or ""
        assert self.query is not None
        since = self.state.get("window_since") or self.query.since
        if self.query.order == "date_d" and last and last != until:
            logger.info("Search %r: page cap %d reached; continuing with ecd=%s", self.tag, page, last)
            yield self.search_request(1, last)
        elif self.query.order == "date" and last and last != since:
            logger.info("Search %r: page cap %d reached; continuing with scd=%s", self.tag, page, last)
            self.state["window_since"] = last
            yield self.search_request(1, until)
        else:
            logger.warning("Search %r: page cap %d reached and the date window cannot move", self.tag, page)
            self.state["window_stuck"] = True

    def _count_known(self, where: tuple[str, int]) -> bool:
        """Count a known work toward the early stop; True when the crawl should stop paging."""
        if not self.coverage or self.stop_after <= 0:
            return False
        if not self.coverage.contains(*where):
            self.state["consecutive_known"] = 0
            return False
        self.state["consecutive_known"] += 1
        if self.state["consecutive_known"] >= self.stop_after:
            logger.info(
                "%s: %d known artworks in a row inside the completed range; stopping",
                self.source_label, self.stop_after,
            )
            self.state["stopped_early"] = True
            return True
        return False

    def _is_settled(self, known: Any, work: dict[str, Any]) -> bool:
        # A work listed by id alone (profile/all named it, the batch left it out) has no date to
        # compare: what the catalogue already says of it stands.
        dated = "updateDate" in work
        if known is None or (dated and known.update_date != work.get("updateDate")):
            return False
        if known.status == "ok":
            return bool(known.complete)
        if known.status == "deleted":
            return True
        if known.status == "skipped" and (known.reason or "").startswith(MIN_BOOKMARKS_REASON):
            # too few bookmarks for a bar at least as high as this run's: not asked again until it
            # changes (a lower bar, or a new updateDate); counts that grew are not re-checked
            bar = known.reason[len(MIN_BOOKMARKS_REASON):].split(":")[0].strip()
            return self.min_bookmarks is not None and bar.isdigit() and self.min_bookmarks >= int(bar)
        return known.status == "login_required" and not self.logged_in

    def _seen_before(self) -> bool:
        return self.coverage is not None

    def _throttled_empty_page(self, response: Response, page: int, until: str | None, expected: int) -> Any:
        tries = self.state.get("empty_retries", 0)
        self.crawler.stats.inc_value("throttle/empty_page")
        if tries >= self.empty_page_retries:
            logger.error(
                "Search %r: page %d still empty after %d waits although total is %d; Pixiv is "
                "throttling this client. Ending the crawl; run it again later.",
                self.tag, page, tries, expected,
            )
            self.state["throttled"] = True
            return
        wait = min(self.empty_page_wait * (2**tries), self.max_wait)
        self.state["empty_retries"] = tries + 1
        logger.warning(
            "Search %r: page %d came back empty although total is %d (soft throttle); resting %.1f s, retry %d/%d",
            self.tag, page, expected, wait, tries + 1, self.empty_page_retries,
        )
        yield self.search_request(page, until, **{WAIT_META: wait})

    def _search_unusable(self, response: Response, page: int, until: str | None, why: str) -> Any:
        tries = self.state.get("bad_page_retries", 0)
        if tries < 2 and response.status not in (400, 401, 403, 404):
            self.state["bad_page_retries"] = tries + 1
            logger.warning("Search %r: page %d unusable (%s); retrying", self.tag, page, why)
            yield self.search_request(page, until, **{WAIT_META: 2.0 * (tries + 1)})
            return
        logger.error("Search %r: page %d unusable (%s); ending the crawl here", self.tag, page, why)
        self.state["search_failed"] = why

    def search_failed(self, failure: Failure) -> None:
        logger.error("%s: a listing request failed: %s", self.source_label, failure.value)
        self.state["search_failed"] = repr(failure.value)

    # --- an artist's works ---------------------------------------------------------------------------
    def parse_profile_all(self, response: Response) -> Any:
        """The artist's ids (one request); their descriptions follow 48 at a time, newest first."""
        ids = yield from self._listing_body(response, "profile/all", api.parse_profile_all, self._profile_all_again)
        if ids is None:
            return
        assert self.user_query is not None
        logger.info("%s: %d illust and manga works", self.source_label, len(ids))
        self.state["user_ids"] = ids  # kept across pause and resume (JOBDIR)
        self.state["total"] = len(ids)
        if not ids:
            self.state["reached_end"] = True
            return
        yield self.user_batch_request(0)

    def _profile_all_again(self, wait: float) -> scrapy.Request:
        assert self.user_query is not None
        return self.listing_request(
            api.profile_all_url(self.base_url, self.user_query.user_id), self.parse_profile_all, wait=wait
        )

    def user_batch_request(self, offset: int, wait: float | None = None) -> scrapy.Request:
        assert self.user_query is not None
        ids = self.state["user_ids"][offset : offset + api.USER_PAGE_SIZE]
        url = api.profile_illusts_url(self.base_url, self.user_query.user_id, ids)
        return self.listing_request(url, self.parse_user_batch, wait=wait, offset=offset)

    def parse_user_batch(self, response: Response, offset: int) -> Any:
        ids = self.state["user_ids"][offset : offset + api.USER_PAGE_SIZE]
        works = yield from self._listing_body(
            response, f"profile/illusts at {offset}", lambda body: api.parse_profile_illusts(body, ids),
            lambda wait: self.user_batch_request(offset, wait),
        )
        if works is None:
            return
        self.state["pages_done"] += 1
        # An id that profile/all named and the batch left out (deleted since, or hidden from this
        # session) still gets its detail request, so the catalogue says what became of it.
        described = {str(w["id"]): w for w in works}
        listed = [described.get(i) or {"id": i} for i in ids]
        stopped = yield from self._listed_works(listed)
        if stopped:
            return
        if offset + api.USER_PAGE_SIZE >= len(self.state["user_ids"]):
            logger.info("%s: reached the last of %d works", self.source_label, len(self.state["user_ids"]))
            self.state["reached_end"] = True
        elif self._page_limit_reached():
            return
        else:
            yield self.user_batch_request(offset + api.USER_PAGE_SIZE)

    def user_tag_request(self, offset: int, wait: float | None = None) -> scrapy.Request:
        assert self.user_query is not None and self.user_query.tag is not None
        url = api.user_tag_url(self.base_url, self.user_query.user_id, self.user_query.tag, offset)
        return self.listing_request(url, self.parse_user_tag_page, wait=wait, offset=offset)

    def parse_user_tag_page(self, response: Response, offset: int) -> Any:
        yield from self._offset_page(response, offset, "illustmanga/tag", self.user_tag_request, ranked=False)

    def _offset_page(self, response: Response, offset: int, what: str, request_for: Any, ranked: bool) -> Any:
        """A page of ``works[]`` and ``total``, 48 a page by offset (an artist's tag, bookmarks).
        ``ranked``: the list runs in an order of its own, not by upload (bookmarks), so a work's
        place for coverage is counted from the end. A masked entry is listed by id alone."""
        result = yield from self._listing_body(
            response, f"{what} at {offset}", api.parse_works_page, lambda wait: request_for(offset, wait),
        )
        if result is None:
            return
        self.state["total"] = result.total
        self.state["pages_done"] += 1
        listed = [{"id": str(w["id"])} if api.is_masked(w) else w for w in result.works]
        positions = [("", result.total - (offset + index)) for index in range(len(listed))] if ranked else None
        stopped = yield from self._listed_works(listed, positions)
        if stopped:
            return
        following = offset + len(result.works)
        if not result.works or following >= result.total:
            logger.info("%s: reached the end (%d works)", self.source_label, result.total)
            self.state["reached_end"] = True
        elif not self._page_limit_reached():
            yield request_for(following)

    # --- bookmarks -------------------------------------------------------------------------------------
    def bookmarks_request(self, offset: int, wait: float | None = None) -> scrapy.Request:
        assert self.bookmarks_query is not None
        url = api.bookmarks_url(self.base_url, self.bookmarks_query, offset)
        return self.listing_request(url, self.parse_bookmarks_page, wait=wait, offset=offset)

    def parse_bookmarks_page(self, response: Response, offset: int) -> Any:
        """Newest bookmark first: a work's place is its rank counted from the oldest bookmark (total
        − index), since new bookmarks come on top and leave the others' ranks alone. A masked entry
        (deleted or made private since it was bookmarked) is listed by id alone."""
        yield from self._offset_page(response, offset, "bookmarks", self.bookmarks_request, ranked=True)

    # --- the followed artists' feed ---------------------------------------------------------------------
    def following_request(self, page: int, wait: float | None = None) -> scrapy.Request:
        return self.listing_request(api.following_url(self.base_url, page), self.parse_following_page,
                                    wait=wait, page=page)

    def parse_following_page(self, response: Response, page: int) -> Any:
        """Newest first, 60 a page, to the site's page limit (PIXIV_FOLLOWING_MAX_PAGES); a page
        that is empty or repeats the one before is the end too."""
        works = yield from self._listing_body(
            response, f"following page {page}", api.parse_following, lambda wait: self.following_request(page, wait),
        )
        if works is None:
            return
        ids = [str(w["id"]) for w in works]
        if not ids or ids == self.state.get("previous_ids"):
            logger.info("%s: page %d is %s; that is the end", self.source_label, page,
                        "empty" if not ids else "the previous page again")
            self.state["reached_end"] = True
            return
        self.state["previous_ids"] = ids
        self.state["pages_done"] += 1
        stopped = yield from self._listed_works(works)
        if stopped:
            return
        if page >= self.following_max_pages:
            logger.info("%s: page %d is the deepest the site serves (PIXIV_FOLLOWING_MAX_PAGES)", self.source_label, page)
            self.state["reached_end"] = True
        elif not self._page_limit_reached():
            yield self.following_request(page + 1)

    # --- rankings --------------------------------------------------------------------------------------
    def ranking_request(self, page: int, wait: float | None = None) -> scrapy.Request:
        assert self.ranking_query is not None
        query = self.ranking_query
        if self.state.get("ranking_date"):  # later pages: the day the first one answered with
            query = api.RankingQuery(query.mode, self.state["ranking_date"], query.content)
        return self.listing_request(api.ranking_url(self.base_url, query, page), self.parse_ranking_page,
                                    wait=wait, page=page)

    def parse_ranking_page(self, response: Response, page: int) -> Any:
        """50 a page in rank order until ``next`` is false. A work's place for coverage is its rank
        counted from the bottom; the coverage row is the day's, so yesterday's never covers today's."""
        assert self.ranking_query is not None
        result = yield from self._listing_body(
            response, f"ranking page {page}", api.parse_ranking,
            lambda wait: self.ranking_request(page, wait), envelope=False,
        )
        if result is None:
            return
        if not self.state.get("ranking_date"):
            self.state["ranking_date"] = result.date
            self.query_key = self.ranking_query.key(self.logged_in, result.date)
            self.tag = self.source_label = self.ranking_query.label(result.date)
            self.coverage = self.catalog.coverage(self.query_key)
            logger.info("%s: %d works ranked", self.source_label, result.rank_total)
        self.state["total"] = result.rank_total
        self.state["pages_done"] += 1
        first_rank = (page - 1) * api.RANKING_PAGE_SIZE + 1
        positions = [("", result.rank_total + 1 - (first_rank + i)) for i in range(len(result.ids))]
        stopped = yield from self._listed_works([{"id": i} for i in result.ids], positions)
        if stopped:
            return
        if result.next_page is None or not result.ids:
            logger.info("%s: reached the last page (%d)", self.source_label, page)
            self.state["reached_end"] = True
        elif not self._page_limit_reached():
            yield self.ranking_request(result.next_page)

    def _page_limit_reached(self) -> bool:
        if self.max_pages and self.state["pages_done"] >= self.max_pages:
            logger.info("%s: stopping at the pages limit (%d)", self.source_label, self.max_pages)
            self.state["page_limit"] = True
            return True
        return False

    def _listing_body(self, response: Response, what: str, parse: Any, again: Any, envelope: bool = True) -> Any:
        """The parsed listing page, or None after retrying it (twice, with a rest) or giving up.
        ``envelope``: the body is an AJAX ``{error, body}`` envelope (all but ranking.php)."""
        try:
            if response.status != 200:
                raise api.ApiError(f"HTTP {response.status}{_site_message(response.body)}")
            parsed = parse(api.parse_envelope(response.body) if envelope else response.body)
        except api.ApiError as exc:
            tries = self.state.get("bad_page_retries", 0)
            if tries < 2 and response.status not in (400, 401, 403, 404):
                self.state["bad_page_retries"] = tries + 1
                logger.warning("%s: %s unusable (%s); retrying", self.source_label, what, exc)
                yield again(2.0 * (tries + 1))
                return None
            logger.error("%s: %s unusable (%s); ending the crawl here", self.source_label, what, exc)
            self.state["search_failed"] = f"{what}: {exc}"
            return None
        self.state.pop("bad_page_retries", None)
        return parsed

    # --- artwork detail and follow-ups ------------------------------------------------------------
    def parse_detail(self, response: Response, artwork: dict[str, Any]) -> Any:
        body = yield from self._api_body(response, artwork, "detail")
        if body is None:
            return
        artwork = api.merge_detail(artwork, body)
        bookmarks = artwork.get("bookmark_count")
        if self.min_bookmarks and (bookmarks or 0) < self.min_bookmarks:
            self.crawler.stats.inc_value("artworks/skipped_bookmarks")
            yield ArtworkItem(artwork=artwork, status="skipped",
                              reason=f"{MIN_BOOKMARKS_REASON} {self.min_bookmarks}: {bookmarks or 0} bookmarks")
            return
        urls = body.get("urls") or {}
        original = urls.get("original")
        artwork_id = artwork["id"]
        if not original:
            why = (
                "R-18 work: Pixiv returns no image URLs without a logged-in PHPSESSID"
                if artwork.get("x_restrict") else "the detail carries no original image URL"
            )
            logger.info("Artwork %s (login_required): %s", artwork_id, why)
            yield ArtworkItem(artwork=artwork, status="login_required", reason=why)
        elif body.get("illustType") == api.ILLUST_TYPE_UGOIRA:
            yield self._follow_up(api.ugoira_meta_url(self.base_url, artwork_id), self.parse_ugoira, artwork)
        elif int(body.get("pageCount") or 1) > 1:
            yield self._follow_up(api.pages_url(self.base_url, artwork_id), self.parse_pages, artwork)
        else:
            yield ArtworkItem(artwork=artwork, file_urls=[original])

    def parse_pages(self, response: Response, artwork: dict[str, Any]) -> Any:
        body = yield from self._api_body(response, artwork, "pages")
        if body is None:
            return
        try:
            urls = api.original_urls_from_pages(body)
        except api.ApiError as exc:
            yield self._artwork_error(artwork, f"pages: {exc}")
            return
        yield ArtworkItem(artwork={**artwork, "page_count": len(urls)}, file_urls=urls)

    def parse_ugoira(self, response: Response, artwork: dict[str, Any]) -> Any:
        body = yield from self._api_body(response, artwork, "ugoira_meta")
        if body is None:
            return
        source = body.get("originalSrc") or body.get("src") if isinstance(body, dict) else None
        frames = body.get("frames") if isinstance(body, dict) else None
        if not source or not isinstance(frames, list) or not frames:
            yield self._artwork_error(artwork, "ugoira_meta without originalSrc or frames")
            return
        yield ArtworkItem(
            artwork={**artwork, "page_count": 1},
            file_urls=[source],
            ugoira_frames=[{"file": f.get("file"), "delay": f.get("delay")} for f in frames],
        )

    def _follow_up(self, url: str, callback: Any, artwork: dict[str, Any]) -> scrapy.Request:
        return scrapy.Request(
            url, callback=callback, errback=self.api_failed, cb_kwargs={"artwork": artwork},
            meta=dict(API_META), priority=PRIORITY_FOLLOW_UP,
        )

    def _api_body(self, response: Response, artwork: dict[str, Any], what: str) -> Any:
        """The body of an API answer, or None after yielding an item that records what went wrong."""
        artwork_id = artwork["id"]
        if response.status == 404:
            try:
                api.parse_envelope(response.body)
                message = "HTTP 404"
            except api.ApiError as exc:
                message = str(exc)
            logger.info("Artwork %s (deleted): %s answered 404: %s", artwork_id, what, message)
            yield ArtworkItem(artwork=artwork, status="deleted", reason=f"{what}: HTTP 404: {message}")
            return None
        try:
            if response.status != 200:
                raise api.ApiError(f"HTTP {response.status}")
            return api.parse_envelope(response.body)
        except api.ApiError as exc:
            yield self._artwork_error(artwork, f"{what}: {exc}")
            return None

    def _artwork_error(self, artwork: dict[str, Any], why: str) -> ArtworkItem:
        logger.warning("Artwork %s (error): %s; it will be fetched again on the next run", artwork["id"], why)
        self.state["artwork_errors"] = self.state.get("artwork_errors", 0) + 1
        return ArtworkItem(artwork=artwork, status="error", reason=why)

    def api_failed(self, failure: Failure) -> Any:
        artwork = failure.request.cb_kwargs["artwork"]  # type: ignore[attr-defined]  # Scrapy sets it on errbacks' failures
        yield self._artwork_error(artwork, f"request failed: {failure.value.__class__.__name__}: {failure.value}")

    # --- end of the crawl (called by the catalogue stage) ------------------------------------------
    def crawl_outcome(self, reason: str, errors: int) -> tuple[str, str | None]:
        if reason != "finished":
            return reason, f"Scrapy closed the spider: {reason}"
        if self.state.get("throttled"):
            return "throttled", "search pages stayed empty (soft throttle)"
        if self.state.get("search_failed"):
            page = "a search page" if self.query is not None else "a listing page"
            return "failed", f"{page} failed: {self.state['search_failed']}"
        if self.state.get("stopped_early"):
            return "stopped_early", f"{self.stop_after} known artworks in a row"
        if self.state.get("page_limit"):
            return "finished", f"stopped at the pages limit ({self.max_pages})"
        return "finished", self.state.get("cluster")  # in a distributed crawl: this node's part

    def completed_coverage(self, reason: str, errors: int) -> tuple[str, int] | None:
        """The new "complete below" mark, when this run proves everything below its top is known.

        Only a clean finish that reached the end of the results, or stopped early inside the range
        already known complete, with no artwork left unrecorded, may move it.
        """
        top: list[Any] | tuple[Any, ...] | None = self.state.get("top")  # (create date, id) of the newest seen
        clean = (
            reason == "finished"
            and self.newest_first
            and top is not None
            and errors == 0
            and self.state.get("artwork_errors", 0) == 0
            and not any(self.state.get(k) for k in (
                "throttled", "search_failed", "page_limit", "window_stuck", "cluster_incomplete",
            ))
        )
        if top is None or not clean or not (self.state.get("reached_end") or self.state.get("stopped_early")):
            return None
        if self.coverage and tuple(top) < (self.coverage.complete_below_date, self.coverage.complete_below_id):
            return None  # the mark never moves backwards
        return top[0], top[1]

    def _close_catalog(self, spider: scrapy.Spider) -> None:
        self.catalog.close()


def _site_message(body: bytes) -> str:
    """``: <the site's message>`` from an error envelope (or ranking.php's ``{"error": ...}``), or
    nothing when the body says nothing."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(doc, dict):
        return ""
    if doc.get("error") is True and doc.get("message"):
        return f": API error: {doc['message']}"
    return f": {doc['error']}" if isinstance(doc.get("error"), str) and doc["error"] else ""


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be a whole number, not {value!r}") from None
    if number < 0 or (number == 0 and not allow_zero):
        raise ArgumentError(f"{name} must be {'0 or more' if allow_zero else 'at least 1'}, not {number}")
    return number
