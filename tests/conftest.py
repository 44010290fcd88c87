"""Shared fixtures: the bundled Pixiv-style site in a subprocess, and real `scrapy crawl` runs.

Crawls run as subprocesses (as users run them): a Twisted reactor cannot be restarted inside the
test process, and the kill -9 tests need a real process to kill anyway.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from mocksites.runner import REPO, LocalSite

# Small, fast images; every broken kind appears (broken-every 10: indices 5, 15, 25, 35, ...).
DEFAULT_SITE = ("--size", "150", "--broken-every", "10", "--image-size", "64", "--ads")
FAST_THROTTLE = ("-s", "PIXIV_THROTTLE_WAIT=0.2", "-s", "PIXIV_EMPTY_PAGE_WAIT=0.2")


def project_settings(**overrides: object) -> dict:
    """crawler/settings.py as a dict, for get_crawler (which otherwise knows only Scrapy's defaults)."""
    from crawler import settings

    return {name: getattr(settings, name) for name in dir(settings) if name.isupper()} | overrides


def face_settings(**overrides: object) -> dict:
    """The face stage's settings as the crawl makes them from crawler/settings.py (stages/faces.py's
    functions take the whole dict), with ``overrides`` on top (``detectors=("animeface",)``)."""
    from scrapy.settings import Settings

    from stages.faces import FaceSearch

    return {**FaceSearch(Settings(project_settings())).settings, **overrides}


@pytest.fixture(scope="session")
def pixiv_site() -> Iterator[LocalSite]:
    """One read-only site shared by the tests that do not change it."""
    with LocalSite("mocksites.pixiv", *DEFAULT_SITE) as site:
        yield site


def _site_starter(module: str) -> Iterator:
    """A function that starts a local site of ``module`` with given options; all stop afterwards."""
    with ExitStack() as started:
        yield lambda *options: started.enter_context(LocalSite(module, *options))


@pytest.fixture
def make_site() -> Iterator:
    """Start a site with its own options (throttling, mutations); stopped after the test."""
    yield from _site_starter("mocksites.pixiv")


@pytest.fixture
def make_hub() -> Iterator:
    """Start the local Hugging Face Hub and GitHub release host (mocksites/hub.py) over a folder of
    repositories (``make_hub(repos_dir)``); stopped after the test. Point ``HF_ENDPOINT`` at ``.api``."""
    with ExitStack() as started:
        yield lambda repos: started.enter_context(LocalSite("mocksites.hub", "--repos", str(repos)))


ISAAC_FIXTURES = REPO.parent / "shared" / "fixtures" / "isaac"  # read in place by mocksites/mediawiki.py


@pytest.fixture
def make_wiki() -> Iterator:
    """Start the local Isaac wiki (mocksites/mediawiki.py) with its own options; stopped after the test."""
    if not (ISAAC_FIXTURES / "id_mapping_dict.json").is_file():
        pytest.skip(f"{ISAAC_FIXTURES} is missing: the local Isaac wiki is built from those captured files")
    yield from _site_starter("mocksites.mediawiki")


@dataclass
class CrawlRun:
    returncode: int
    log: str
    output: Path

    @property
    def catalog(self) -> Path:
        return self.output / "catalog.db"

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.catalog) as conn:
            return conn.execute(sql, params).fetchall()


def crawl_command(site: LocalSite, output: Path, *args: str, tag: str | None = "原神") -> list[str]:
    """A tag search crawl of ``site``; ``tag=None`` for another source given in ``args`` (-a user=ID)."""
    command = [
        sys.executable, "-m", "scrapy", "crawl", "pixiv", *(["-a", f"tag={tag}"] if tag else []),
        "-s", f"PIXIV_BASE_URL={site.api}", "-s", f"OUTPUT_DIR={output}", "-s", "LOG_LEVEL=INFO",
        # the classic pair: these crawls test fetching, the catalogue and crash safety, and the learned
        # detector's torch start-up in every worker of every crawl costs the suite minutes (its own tests:
        # tests/pipelines/test_faces.py; the default settings run it, as the demo's crawl shows)
        "-s", "FACES_DETECTORS=cascade,animeface",
    ]
    return command + list(args)


def crawl_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PIXIV_PHPSESSID"}
    return {**env, "PYTHONUNBUFFERED": "1", **(extra or {})}


@pytest.fixture
def run_crawl():
    def run(site: LocalSite, output: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 120, tag: str | None = "原神") -> CrawlRun:
        done = subprocess.run(
            crawl_command(site, output, *args, tag=tag), cwd=REPO, env=crawl_env(env),
            capture_output=True, text=True, timeout=timeout,
        )
        return CrawlRun(done.returncode, done.stdout + done.stderr, output)

    return run
