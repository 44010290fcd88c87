"""Distributed crawls (crawler/cluster.py, crawler/cluster_scheduler.py) on a real redis-server.

The end-to-end test starts redis-server on loopback and two `scrapy crawl` processes against the
local site: together they must fetch every artwork exactly once, and their merged catalogues
must equal a single-process crawl of the same site.
"""

from __future__ import annotations

import collections
import pickle
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scrapy.settings import Settings
from scrapy.utils.request import request_from_dict
from scrapy.utils.test import get_crawler

from crawler.cluster import LOCAL_META, Membership, SchedulerBackend
from crawler.spiders.pixiv import PixivSpider
from mocksites.runner import REPO
from tests.conftest import crawl_command, crawl_env, project_settings

redis = pytest.importorskip("redis", reason="the ops extras are not installed: pip install -e '.[ops]'")
pytest.importorskip("scrapy_redis", reason="the ops extras are not installed: pip install -e '.[ops]'")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A throwaway redis-server on a free loopback port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs the Debian package redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


# --- the switch ---------------------------------------------------------------------------------
def backend_settings(**values) -> Settings:
    settings = Settings(project_settings(**values))
    SchedulerBackend().update_settings(settings)
    return settings


def test_memory_backend_leaves_scrapys_scheduler():
    assert backend_settings()["SCHEDULER"] == "scrapy.core.scheduler.Scheduler"


def test_redis_backend_swaps_in_the_cluster_scheduler():
    settings = backend_settings(SCHEDULER_BACKEND="redis")
    assert settings["SCHEDULER"] == "crawler.cluster_scheduler.ClusterScheduler"
    assert settings["DUPEFILTER_CLASS"] == "scrapy_redis.dupefilter.RFPDupeFilter"
    assert settings.getbool("SCHEDULER_PERSIST")


@pytest.mark.parametrize("values, message", [
    ({"SCHEDULER_BACKEND": "kafka"}, "SCHEDULER_BACKEND must be one of"),
    ({"SCHEDULER_BACKEND": "redis", "JOBDIR": "job"}, "JOBDIR"),
    ({"SCHEDULER_BACKEND": "redis", "CLUSTER_ROLE": "boss"}, "CLUSTER_ROLE must be one of"),
])
def test_bad_combinations_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        backend_settings(**values)


def test_requests_survive_the_trip_through_redis(tmp_path):
    """scrapy-redis pickles request dicts: callbacks, cb_kwargs and meta must come back whole."""
    crawler = get_crawler(PixivSpider, settings_dict=project_settings(OUTPUT_DIR=str(tmp_path)))
    spider = PixivSpider.from_crawler(crawler, tag="原神")
    try:
        search = spider.search_request(3, "2024-01-02", throttle_wait=2.0)
        detail = spider._follow_up("http://127.0.0.1/ajax/illust/1/pages", spider.parse_pages,
                                   {"id": "1", "tags": [{"name": "原神", "translation_en": None}]})
        retry = detail.replace(dont_filter=True)
        retry.meta.update(retry_times=1, download_slot="127.0.0.1", download_latency=0.01, depth=2)
        for request in (search, detail, retry):
            back = request_from_dict(pickle.loads(pickle.dumps(request.to_dict(spider=spider), -1)), spider=spider)
            assert (back.url, back.callback, back.errback, back.cb_kwargs, back.meta, back.priority, back.dont_filter) == (
                request.url, request.callback, request.errback, request.cb_kwargs, request.meta, request.priority,
                request.dont_filter)
        assert search.meta[LOCAL_META] and LOCAL_META not in detail.meta  # search pages stay with the leader
    finally:
        spider.catalog.close()


# --- membership on a real Redis -----------------------------------------------------------------
def test_membership_join_leave_lost_and_takeover(redis_url):
    server = redis.Redis.from_url(redis_url)
    a, b, c = (Membership(server, "t:1", name, timeout=1.0) for name in "abc")
    server.sadd("t:1:dupefilter", "stale")
    assert a.join() == "fresh" and not server.exists("t:1:dupefilter")  # stale keys of a dead crawl go
    a.set_leader()
    assert b.join() == "joined"
    b.heartbeat(busy=False)
    assert a.others() == (False, ["b"])
    for _ in range(3):  # a stops beating (a crashed leader); b goes on
        time.sleep(0.45)
        b.heartbeat(busy=True)
    server.sadd("t:1:dupefilter", "page-1")
    assert c.join() == "takeover" and not server.exists("t:1:dupefilter") and c.leader() is None
    assert c.others() == (True, ["b"])
    assert c.outcomes() == {"a": "lost: no heartbeat for 1 s"}
    assert b.leave("clean") is False  # c is still there
    assert c.leave("clean") is True and not server.keys("t:1:*")  # the last one removes the crawl's keys


# --- two crawler processes, one crawl -----------------------------------------------------------
COMPARED = {
    "artworks": "SELECT id, title, user_id, illust_type, x_restrict, ai_type, page_count, create_date, update_date, "
                "tags, status, reason FROM artworks ORDER BY id",
    "images": "SELECT artwork_id, page, url, path, original_path, sha256, width, height, format, source_format, "
              "frame_delays, status, reason FROM images ORDER BY artwork_id, page",
    "tags": "SELECT name, translation_en FROM tags ORDER BY name",
    "artwork_tags": "SELECT artwork_id, tag, position FROM artwork_tags ORDER BY artwork_id, tag",
    "search_coverage": "SELECT query_key, complete_below_date, complete_below_id FROM search_coverage",
}


def tables(catalog: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(catalog) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in COMPARED.items()}


@pytest.mark.slow
def test_two_nodes_share_one_crawl_and_merge_into_a_single_process_crawl(redis_url, make_site, run_crawl, tmp_path):
    site = make_site("--size", "200", "--image-size", "32", "--broken-every", "10", "--latency-ms", "25")
    cluster = ("-s", "SCHEDULER_BACKEND=redis", "-s", f"REDIS_URL={redis_url}", "-s", "CLUSTER_IDLE_CLOSE=2",
               "-s", "IMAGE_WORKERS=0")
    nodes = [tmp_path / "node1", tmp_path / "node2"]
    logs = [open(tmp_path / f"{node.name}.log", "w") for node in nodes]
    processes = [
        subprocess.Popen(crawl_command(site, node, *cluster), cwd=REPO, env=crawl_env(), stdout=log, stderr=log)
        for node, log in zip(nodes, logs)
    ]
    codes = [p.wait(timeout=180) for p in processes]
    for log in logs:
        log.close()
    assert codes == [0, 0], [(tmp_path / f"{n.name}.log").read_text()[-3000:] for n in nodes]
    distributed = site.stats()
    site.reset_stats()

    # every request went out exactly once across both nodes, and both did a share of the work
    repeated = [line for line, n in collections.Counter(distributed["requests"]).items() if n > 1]
    assert repeated == []
    fetched = {}
    for node in nodes:
        with sqlite3.connect(node / "catalog.db") as conn:
            [(status, reason, count)] = conn.execute("SELECT status, reason, artworks_fetched FROM crawls").fetchall()
        assert status == "finished", reason
        fetched[reason.split(" ")[0]] = count
    assert set(fetched) == {"leader", "worker"} and min(fetched.values()) > 0, fetched
    assert redis.Redis.from_url(redis_url).keys("pixiv:*") == []  # the last node removed the crawl's keys

    merged = tmp_path / "merged.db"
    merge = subprocess.run(
        [sys.executable, "-m", "scrapy", "catalog", "merge", str(merged), *map(str, nodes)],
        cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=60,
    )
    assert merge.returncode == 0, merge.stderr

    single = run_crawl(site, tmp_path / "single", "-s", "IMAGE_WORKERS=0")
    assert single.returncode == 0, single.log[-3000:]
    assert distributed["counts"] == site.stats()["counts"]  # the same work as one process
    assert tables(merged) == tables(single.catalog)
    assert tables(merged)["search_coverage"]  # the leader moved the coverage: every node ended cleanly


def wait_for(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def catalogued(output: Path) -> int:
    try:
        with sqlite3.connect(output / "catalog.db", timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM artworks").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_node_killed_mid_crawl_keeps_the_coverage_where_it_was(redis_url, make_site, run_crawl, tmp_path):
    """Requests a dead node had taken are lost to the crawl: the leader must not claim the results
    complete, so that the next run fetches what is missing."""
    site = make_site("--size", "240", "--image-size", "32", "--latency-ms", "40")
    cluster = ("-s", "SCHEDULER_BACKEND=redis", "-s", f"REDIS_URL={redis_url}", "-s", "CLUSTER_NODE_TIMEOUT=2",
               "-s", "IMAGE_WORKERS=0")
    leader_out, worker_out = tmp_path / "leader", tmp_path / "worker"
    leader_log = tmp_path / "leader.log"
    with open(leader_log, "w") as log:
        leader = subprocess.Popen(crawl_command(site, leader_out, *cluster), cwd=REPO, env=crawl_env(), stdout=log, stderr=log)
    # started together (a process takes seconds to start here); a worker never leads, and waits
    # up to CLUSTER_IDLE_CLOSE for the leader to queue work
    worker = subprocess.Popen(
        crawl_command(site, worker_out, *cluster, "-s", "CLUSTER_ROLE=worker", "-s", "CLUSTER_IDLE_CLOSE=20"),
        cwd=REPO, env=crawl_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: catalogued(worker_out) >= 3, "the worker to take a share")
    worker.kill()
    worker.wait(timeout=30)
    assert leader.wait(timeout=120) == 0, leader_log.read_text()[-3000:]

    with sqlite3.connect(leader_out / "catalog.db") as conn:
        [(status, reason)] = conn.execute("SELECT status, reason FROM crawls").fetchall()
        assert conn.execute("SELECT count(*) FROM search_coverage").fetchone()[0] == 0
    assert status == "finished" and "not every node finished cleanly" in reason and "lost" in reason

    rerun = run_crawl(site, leader_out, "-s", "IMAGE_WORKERS=0")  # one process, the usual scheduler
    assert rerun.returncode == 0, rerun.log[-3000:]
    [(status, seen)] = rerun.query("SELECT status, artworks_seen FROM crawls ORDER BY id DESC LIMIT 1")
    assert status == "finished" and catalogued(leader_out) == seen  # nothing was left out
    assert rerun.query("SELECT count(*) FROM search_coverage") == [(1,)]
