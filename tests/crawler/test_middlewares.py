"""Retry-After parsing and the session cookie going only to the API host."""

from __future__ import annotations

import asyncio
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


def test_a_retried_request_goes_to_the_jobdir_queue_without_the_cookie(tmp_path):
    """A 429 comes back through the project's whole downloader middleware chain; the retry it makes
    is pushed into a real JOBDIR disk queue: the cookie went out on the wire and is not on disk."""
    from scrapy.core.downloader.middleware import DownloaderMiddlewareManager
    from scrapy.http import Response
    from scrapy.squeues import PickleFifoDiskQueue
    from scrapy.utils.test import get_crawler

    from crawler.spiders.pixiv import PixivSpider
    from tests.conftest import project_settings

    secret = "777_" + "z" * 28
    crawler = get_crawler(PixivSpider, settings_dict=project_settings(
        OUTPUT_DIR=str(tmp_path), PIXIV_PHPSESSID=secret, PIXIV_BASE_URL="https://www.pixiv.net"))
    crawler.spider = PixivSpider.from_crawler(crawler, tag="原神")
    try:
        manager = DownloaderMiddlewareManager.from_crawler(crawler)
        on_the_wire = []

        async def site(request):  # what the server sees, then its answer: slow down
            on_the_wire.append(request.headers.get(b"Cookie", b"").decode())
            return Response(request.url, status=429, headers={"Retry-After": "0"}, request=request)

        request = Request("https://www.pixiv.net/ajax/illust/1", cookies={"first_visit": "1"})
        retry = asyncio.run(manager.download_async(site, request))
        assert isinstance(retry, Request) and retry.url == request.url
        assert secret in on_the_wire[0] and "first_visit=1" in on_the_wire[0]
        queue = PickleFifoDiskQueue.from_crawler(crawler, str(tmp_path / "requests.queue"))
        queue.push(retry)
        queue.close()
        on_disk = b"".join(p.read_bytes() for p in (tmp_path / "requests.queue").rglob("*") if p.is_file())
        assert b"ajax/illust/1" in on_disk and secret.encode() not in on_disk
    finally:
        crawler.spider.catalog.close()
