"""Downloader middlewares and the download handler: the login cookie, and waiting when Pixiv says to.

Scrapy's RetryMiddleware retries a 429 at once and ignores ``Retry-After``; AutoThrottle only looks
at latency. ``ThrottleMiddleware`` makes the whole host wait: after a 429 (for ``Retry-After``
seconds, or an exponential back-off) and when the spider asks for it (a search page that came back
empty while ``total`` says there is more, which is Pixiv's soft throttle).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from scrapy.core.downloader.handlers._aiohttp import AiohttpDownloadHandler
from scrapy.utils.httpobj import urlparse_cached

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

class LazyAiohttpDownloadHandler(AiohttpDownloadHandler):
    """Scrapy's aiohttp handler (DOWNLOAD_HANDLERS), made when the first request needs it rather than
    when the engine is built: a crawl that a bad setting stops before any request (a stage that cannot
    load its model) then leaves no open HTTP session behind, and no "Unclosed client session" lines."""

    lazy = True


WAIT_META = "throttle_wait"  # seconds the host must rest before this request goes out
RETRIES_META = "throttle_retries"


def session_cookie(settings: BaseSettings) -> str:
    """The PHPSESSID value: the environment variable first, then the setting."""
    return (os.environ.get("PIXIV_PHPSESSID") or settings.get("PIXIV_PHPSESSID") or "").strip()


def session_cookies(settings: BaseSettings) -> str:
    """What goes in the ``Cookie`` header to the API host: ``PIXIV_COOKIES`` (a whole cookie string
    copied from a browser, e.g. with Cloudflare's ``cf_clearance``; the environment variable first,
    then the setting) with ``PIXIV_PHPSESSID``, when set, in place of its PHPSESSID."""
    whole = (os.environ.get("PIXIV_COOKIES") or settings.get("PIXIV_COOKIES") or "").strip()
    pairs: dict[str, str] = {}
    for part in whole.split(";"):
        name, equals, value = part.strip().partition("=")
        if name.strip() and equals:
            pairs[name.strip()] = value.strip()
    phpsessid = session_cookie(settings)
    if phpsessid:
        pairs["PHPSESSID"] = phpsessid
    return "; ".join(f"{name}={value}" for name, value in pairs.items())


def has_login_cookie(settings: BaseSettings) -> bool:
    """Whether a PHPSESSID is set at all (whether it still logs in, the spider checks at start)."""
    return any(part.strip().startswith("PHPSESSID=") and len(part.strip()) > len("PHPSESSID=")
               for part in session_cookies(settings).split(";"))


class PixivSessionMiddleware:
    """Adds the session cookies to requests for the API host only, and only while they are on the wire.

    The pairs are added as the request goes out and taken off again as its response (or error)
    comes back. So they never enter the cookie jar, never go to the image host, are not printed by
    ``COOKIES_DEBUG``, and are not in any request that is stored: a 429 or redirect retry that
    JOBDIR's disk queue pickles, or HTTPCACHE's stored request headers. That is why this sits at
    950, nearest the downloader: after CookiesMiddleware (700) and HttpCacheMiddleware (900).
    ``cookie`` is a PHPSESSID value, or a whole ``name=value; ...`` string (``session_cookies``).
    """

    def __init__(self, cookie: str, api_netloc: str):
        self.cookie = cookie
        self.api_netloc = api_netloc
        self.pair = cookie if "=" in cookie else f"PHPSESSID={cookie}"
        self.own = {p.strip() for p in self.pair.split(";") if p.strip()}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PixivSessionMiddleware:
        s = crawler.settings
        return cls(session_cookies(s), urlparse(s.get("PIXIV_BASE_URL")).netloc)

    def process_request(self, request: Request) -> None:
        if not self.cookie or urlparse_cached(request).netloc != self.api_netloc:
            return
        pairs = self._other_pairs(request)
        request.headers[b"Cookie"] = "; ".join([*pairs, self.pair])

    def process_response(self, request: Request, response: Response) -> Response:
        self._take_off(request)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self._take_off(request)

    def _other_pairs(self, request: Request) -> list[str]:
        existing = (request.headers.get(b"Cookie") or b"").decode("latin-1")
        return [p.strip() for p in existing.split(";") if p.strip() and p.strip() not in self.own]

    def _take_off(self, request: Request) -> None:
        if not self.cookie or b"Cookie" not in request.headers:
            return
        pairs = self._other_pairs(request)
        if pairs:
            request.headers[b"Cookie"] = "; ".join(pairs)
        else:
            del request.headers[b"Cookie"]


def parse_retry_after(value: bytes | str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now_dt = datetime.fromtimestamp(now if now is not None else time.time(), timezone.utc)
    return max((when - now_dt).total_seconds(), 0.0)


class ThrottleMiddleware:
    def __init__(self, crawler: Crawler):
        s = crawler.settings
        self.stats = crawler.stats
        self.base_wait = s.getfloat("PIXIV_THROTTLE_WAIT")
        self.max_wait = s.getfloat("PIXIV_THROTTLE_MAX_WAIT")
        self.max_retries = s.getint("PIXIV_THROTTLE_RETRIES")
        self.resting_until: dict[str, float] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ThrottleMiddleware:
        return cls(crawler)

    def rest(self, host: str, seconds: float) -> None:
        until = time.monotonic() + min(seconds, self.max_wait)
        self.resting_until[host] = max(self.resting_until.get(host, 0.0), until)

    async def process_request(self, request: Request) -> None:
        host = urlparse_cached(request).netloc
        asked = request.meta.pop(WAIT_META, None)
        if asked:
            self.rest(host, float(asked))
        remaining = self.resting_until.get(host, 0.0) - time.monotonic()
        if remaining > 0:
            self.stats.inc_value("throttle/wait_seconds", round(remaining, 3))  # type: ignore[arg-type]  # seconds: a float
            await asyncio.sleep(remaining)

    def process_response(self, request: Request, response: Response) -> Request | Response:
        if response.status != 429:
            return response
        host = urlparse_cached(request).netloc
        tries = request.meta.get(RETRIES_META, 0)
        self.stats.inc_value("throttle/429")
        if tries >= self.max_retries:
            logger.error("HTTP 429 from %s: gave up on %s after %d retries", host, request.url, tries)
            return response
        header = response.headers.get(b"Retry-After")
        wait = parse_retry_after(header)
        if wait is None:
            wait = self.base_wait * (2**tries)
        wait = min(wait, self.max_wait)
        self.rest(host, wait)
        logger.warning(
            "HTTP 429 from %s: resting %.1f s (Retry-After: %s), then retry %d/%d of %s",
            host, wait, header.decode("latin-1") if header else "none", tries + 1,
            self.max_retries, request.url,
        )
        retry = request.replace(dont_filter=True)
        retry.meta[RETRIES_META] = tries + 1
        return retry
