"""File names from ids only, and the sniffing that refuses non-images before they are stored."""

from __future__ import annotations

import pytest

from core.storage import atomic_write, remove_partial_files
from pipelines.originals import refuse_non_image
from sites.pixiv_api import original_file_name


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://i.pximg.net/img-original/img/2024/12/24/20/05/43/130000006_p0.png", "130000006_p3.png"),
        ("https://i.pximg.net/img-original/img/2024/12/24/20/05/43/130000006_p0.JPG", "130000006_p3.jpg"),
        ("https://evil.example/../../etc/passwd", "130000006_p3.bin"),
        ("https://evil.example/x/%2e%2e%2fshell.php", "130000006_p3.bin"),
        ("https://evil.example/name%00.png/../../x.sh", "130000006_p3.bin"),
        ("https://evil.example/雪の日の甘雨 title.png?x=../../", "130000006_p3.png"),
    ],
)
def test_names_come_from_ids_and_a_whitelisted_extension(url, expected):
    assert original_file_name("130000006", 3, url) == expected


def test_ugoira_zip_name():
    assert original_file_name("5", 0, "https://h/a/5_ugoira1920x1080.zip", ugoira=True) == "5_ugoira.zip"


@pytest.mark.parametrize("bad_id", ["../1", "1/2", "", "12a", "1" * 30])
def test_non_numeric_ids_are_refused(bad_id):
    with pytest.raises(ValueError):
        original_file_name(bad_id, 0, "https://h/x.png")


def test_refuse_non_image():
    assert "empty body" in refuse_non_image(b"", "image/png")
    assert "HTML page" in refuse_non_image(b"  <!DOCTYPE html><html>", "image/png")
    assert "HTML page" in refuse_non_image(b"\x89PNG\r\n\x1a\n", "text/html; charset=utf-8")
    assert "unknown file signature" in refuse_non_image(b"MZ\x90\x00", "application/octet-stream")
    assert refuse_non_image(b"\x89PNG\r\n\x1a\n....", "image/png") is None
    assert refuse_non_image(b"\xff\xd8\xff\xe0....", "image/jpeg") is None
    assert refuse_non_image(b"PK\x03\x04....", "application/zip") is None


def test_atomic_write_replaces_whole_and_leaves_no_part(tmp_path):
    target = tmp_path / "images" / "1_p0.jpg"
    atomic_write(target, b"first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["1_p0.jpg"]


def test_partial_files_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / ".1_p0.jpg.abc123.part").write_bytes(b"half")
    (tmp_path / "images" / "2_p0.jpg").write_bytes(b"whole")
    assert remove_partial_files(tmp_path) == 1
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["2_p0.jpg"]


def _pipeline(tmp_path, **settings):
    from scrapy.utils.test import get_crawler

    from pipelines.originals import OriginalsPipeline
    from tests.conftest import project_settings

    crawler = get_crawler(settings_dict=project_settings(OUTPUT_DIR=str(tmp_path), **settings))
    crawler.stats.open_spider()
    return OriginalsPipeline.from_crawler(crawler)


def test_an_original_that_is_not_kept_goes_to_the_jpeg_stage_in_memory(tmp_path):
    """KEEP_ORIGINALS off: no write, read back and delete of a file the user never sees."""
    import asyncio

    from scrapy import Request
    from scrapy.http import Response

    pipe = _pipeline(tmp_path)
    url = "https://i.pximg.net/img-original/img/2024/12/24/20/05/43/130000006_p0.png"
    request = Request(url, meta={"artwork_id": "130000006", "page": 0, "ugoira": False})
    body = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100
    response = Response(url, body=body, headers={"Content-Type": "image/png"}, request=request)
    stored = asyncio.run(pipe.media_downloaded(response, request, None))
    assert stored["body"] == body and stored["path"] == "originals/130000006_p0.png"
    assert not (tmp_path / "originals").exists()

    from core.items import ArtworkItem

    item = ArtworkItem(artwork={"id": "130000006"}, file_urls=[url])
    pipe.item_completed([(True, stored)], item, None)
    assert item.images[0]["original_bytes"] == body
    assert "body" not in item.files[0]  # item.files goes to feeds as it is
    # MediaPipeline keeps `stored` in its per-crawl cache: the bytes must leave it, or memory
    # grows with every picture of the crawl.
    assert "body" not in stored


@pytest.mark.slow
def test_keep_originals_stores_them_beside_the_jpegs(pixiv_site, run_crawl, tmp_path):
    from PIL import Image

    run = run_crawl(pixiv_site, tmp_path / "out", "-a", "pages=1", "-s", "KEEP_ORIGINALS=True")
    assert run.returncode == 0, run.log[-3000:]
    rows = run.query("SELECT path, original_path FROM images WHERE status = 'kept' AND format = 'jpeg'")
    assert rows
    for path, original in rows:
        assert original, path
        with Image.open(run.output / original) as source, Image.open(run.output / path) as jpeg:
            assert sorted(source.size) == sorted(jpeg.size)  # EXIF-rotated ones swap sides
