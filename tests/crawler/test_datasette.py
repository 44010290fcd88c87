"""Datasette over the catalogue with the repo's metadata.json: facets, descriptions, thumbnails shown."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from catalog.store import Catalog
from jobs.report import write_report
from tests.crawler.small_crawl import crawled_copy, mark_some_dropped

REPO = Path(__file__).resolve().parents[2]
METADATA = REPO / "metadata.json"


def test_the_metadata_describes_every_catalogue_table_and_view(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    names = {name for (name,) in cat.conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    cat.close()
    described = json.loads(METADATA.read_text(encoding="utf-8"))["databases"]["catalog"]["tables"]
    assert sorted(names - set(described)) == []  # a new table needs a line in metadata.json
    assert sorted(set(described) - names) == []
    assert all(table.get("description") for table in described.values())
    assert "status" in described["images"]["facets"] and "tag" in described["artwork_tags"]["facets"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served_catalog(pixiv_site, tmp_path_factory, tmp_path):
    """A crawled catalogue with decisions and thumbnails, served by `datasette serve` on loopback."""
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    mark_some_dropped(output)
    write_report(output / "catalog.db", output, output / "report", progress=False)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(output / "catalog.db"), "--metadata", str(METADATA),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/-/versions.json", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"datasette did not start: {server.stdout.read() if server.poll() is not None else 'timeout'}")
            time.sleep(0.2)
        yield base, output / "catalog.db"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_datasette_serves_facets_descriptions_and_thumbnails(served_catalog):
    base, db = served_catalog
    with sqlite3.connect(db) as conn:
        by_status = dict(conn.execute("SELECT status, count(*) FROM images GROUP BY status"))
        top_tag = conn.execute("SELECT tag, count(*) FROM artwork_tags GROUP BY tag ORDER BY 2 DESC LIMIT 1").fetchone()
    assert by_status["dropped"] == 3

    images = requests.get(f"{base}/catalog/images.json?_facet=status&_size=0", timeout=30).json()
    facet = {r["value"]: r["count"] for r in images["facet_results"]["status"]["results"]}
    assert facet == by_status
    tags = requests.get(f"{base}/catalog/artwork_tags.json?_size=0", timeout=30).json()  # facet from metadata.json
    first = tags["facet_results"]["tag"]["results"][0]
    assert (first["value"], first["count"]) == top_tag

    page = requests.get(f"{base}/catalog/images", timeout=30).text
    assert "One row per page: the stored file" in page  # the table's description

    review = requests.get(f"{base}/catalog/picture_review?status=dropped", timeout=30).text
    pictures = re.findall(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', review)
    assert len(pictures) == 3  # each dropped picture's thumbnail, rendered by datasette-render-images
    with Image.open(io.BytesIO(base64.b64decode(pictures[0]))) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= 160
    plugins = requests.get(f"{base}/-/plugins.json", timeout=30).json()
    assert "datasette-render-images" in {plugin["name"] for plugin in plugins}
