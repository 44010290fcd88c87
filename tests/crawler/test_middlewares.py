"""Retry-After parsing and the session cookie going only to the API host."""

from __future__ import annotations

from email.utils import formatdate

from scrapy import Request
from scrapy.settings import Settings

from crawler.middlewares import PixivSessionMiddleware, parse_retry_after, session_cookie


def test_retry_after_seconds_and_dates():
    assert parse_retry_after(b"120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after(b"soon") is None
    now = 1_700_000_000.0
    assert abs(parse_retry_after(formatdate(now + 30, usegmt=True), now=now) - 30) < 1.01
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_cookie_from_environment_wins(monkeypatch):
    monkeypatch.setenv("PIXIV_PHPSESSID", "from-env")
    assert session_cookie(Settings({"PIXIV_PHPSESSID": "from-setting"})) == "from-env"
    monkeypatch.delenv("PIXIV_PHPSESSID")
    assert session_cookie(Settings({"PIXIV_PHPSESSID": "from-setting"})) == "from-setting"


def test_cookie_goes_to_the_api_host_only():
    mw = PixivSessionMiddleware("s3cret", "www.pixiv.net")
    api = Request("https://www.pixiv.net/ajax/illust/1", headers={"Cookie": "a=b"})
    image = Request("https://i.pximg.net/img-original/img/1_p0.png")
    mw.process_request(api)
    mw.process_request(image)
    assert api.headers[b"Cookie"] == b"a=b; PHPSESSID=s3cret"
    assert b"Cookie" not in image.headers
