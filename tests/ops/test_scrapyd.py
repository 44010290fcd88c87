"""Scrapyd: the project's egg holds what the spider needs, deploys to a real Scrapyd, and a crawl
scheduled through Scrapyd's JSON API runs against the local site."""

from __future__ import annotations

import configparser
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from mocksites.runner import REPO
from ops.deploy import build_egg, scrapyd_call
from tests.conftest import crawl_env

pytest.importorskip("scrapyd", reason="the ops extras are not installed: pip install -e '.[ops]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def egg(tmp_path_factory) -> Path:
    return build_egg(tmp_path_factory.mktemp("egg") / "crawler.egg")


def test_the_egg_holds_the_packages_and_the_settings_entry_point(egg):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "scrapy.cfg", encoding="utf-8")
    with zipfile.ZipFile(egg) as z:
        names = set(z.namelist())
        entry_points = z.read("EGG-INFO/entry_points.txt").decode()
    for package in pyproject["tool"]["setuptools"]["packages"]:
        assert package.replace(".", "/") + "/__init__.py" in names, package
    assert f"[scrapy]\nsettings = {cfg.get('settings', 'default')}" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "output/", ".venv/"))]


def test_the_spider_and_its_components_import_from_the_egg_alone(egg, tmp_path):
    """As Scrapyd's runner would, with neither the checkout nor the editable install on the path."""
    code = f"""
import importlib, sys
editable = lambda f: "editable" in (getattr(f, "__module__", "") or "") + (getattr(f, "__name__", "") or "")
sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if not editable(h)]
sys.path[:] = [p for p in sys.path if p not in ("", {str(REPO)!r})]
sys.path_importer_cache.clear()
sys.path.insert(0, {str(egg)!r})
from crawler import settings
paths = [*settings.ITEM_PIPELINES, *settings.DOWNLOADER_MIDDLEWARES, *settings.ADDONS,
         "crawler.spiders.pixiv.PixivSpider", "crawler.cluster_scheduler.ClusterScheduler",
         "crawler.commands.catalog.Command"]
for path in paths:
    module, _, name = path.rpartition(".")
    getattr(importlib.import_module(module), name)
import crawler, pipelines
assert crawler.__file__.startswith({str(egg)!r}) and pipelines.__file__.startswith({str(egg)!r}), crawler.__file__
print("from the egg:", len(paths))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "from the egg:" in done.stdout


@pytest.fixture
def scrapyd(tmp_path):
    port = free_port()
    home = tmp_path / "scrapyd"
    home.mkdir()
    (home / "scrapyd.conf").write_text(
        "[scrapyd]\nbind_address = 127.0.0.1\n"
        f"http_port = {port}\neggs_dir = eggs\nlogs_dir = logs\ndbs_dir = dbs\nitems_dir =\njobs_dir =\n"
        "poll_interval = 0.5\nmax_proc = 1\n",
        encoding="utf-8",
    )
    process = subprocess.Popen([sys.executable, "-m", "scrapyd"], cwd=home, env=crawl_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            if scrapyd_call(url, "daemonstatus.json", timeout=2).get("status") == "ok":
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"scrapyd did not start: {process.stderr.read()[-2000:]!r}")
        time.sleep(0.2)
    yield url, home
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.slow
def test_deploy_to_scrapyd_and_schedule_a_crawl_through_its_api(scrapyd, make_site, tmp_path):
    url, home = scrapyd
    site = make_site("--size", "40", "--image-size", "32")
    deployed = subprocess.run(
        [sys.executable, "-m", "ops.deploy", "--url", url, "--version", "1"], cwd=tmp_path,
        env=crawl_env(), capture_output=True, text=True, timeout=120,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert '"status": "ok"' in deployed.stdout
    assert "pixiv" in scrapyd_call(url, "listspiders.json?project=crawler")["spiders"]

    output = tmp_path / "out"
    scheduled = scrapyd_call(url, "schedule.json", [
        ("project", "crawler"), ("spider", "pixiv"), ("tag", "原神"),
        ("setting", f"PIXIV_BASE_URL={site.api}"), ("setting", f"OUTPUT_DIR={output}"), ("setting", "IMAGE_WORKERS=0"),
    ])
    assert scheduled["status"] == "ok", scheduled
    job = scheduled["jobid"]
    deadline = time.monotonic() + 120
    while True:
        jobs = scrapyd_call(url, "listjobs.json?project=crawler")
        if any(j["id"] == job for j in jobs["finished"]):
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.5)
    log = home / "logs" / "crawler" / "pixiv" / f"{job}.log"
    assert "Spider closed (finished)" in log.read_text(encoding="utf-8")
    with sqlite3.connect(output / "catalog.db") as conn:
        assert conn.execute("SELECT spider, tag, status FROM crawls").fetchall() == [("pixiv", "原神", "finished")]
        artworks = conn.execute("SELECT count(*) FROM artworks").fetchone()[0]
        kept = conn.execute("SELECT count(*) FROM images WHERE status = 'kept'").fetchone()[0]
    assert artworks == site.stats()["counts"]["illust"] > 0 and kept > 0
