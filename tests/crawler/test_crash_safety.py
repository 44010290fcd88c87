"""kill -9 at any moment, then a plain re-run, gives exactly what an uninterrupted crawl gives.

Also: pause/resume with JOBDIR. Catalogues are compared table by table (timestamps aside) and
files byte by byte.
"""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from mocksites.runner import REPO
from tests.conftest import crawl_command, crawl_env

pytestmark = pytest.mark.slow

COMPARED = {
    "artworks": "SELECT id, title, user_id, user_name, illust_type, x_restrict, ai_type, page_count, "
                "bookmark_count, create_date, update_date, tags, status, reason FROM artworks ORDER BY id",
    "images": "SELECT artwork_id, page, url, path, original_path, sha256, width, height, format, "
              "source_format, frame_delays, status, reason FROM images ORDER BY artwork_id, page",
    "tags": "SELECT name, translation_en FROM tags ORDER BY name",
    "artwork_tags": "SELECT artwork_id, tag, position FROM artwork_tags ORDER BY artwork_id, tag",
}


def snapshot(output: Path) -> dict:
    with sqlite3.connect(output / "catalog.db") as conn:
        tables = {name: conn.execute(sql).fetchall() for name, sql in COMPARED.items()}
    files = {
        str(p.relative_to(output)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(output.rglob("*"))
        if p.is_file() and p.parent.name in ("images", "originals")
    }
    return {"tables": tables, "files": files}


def count_rows(output: Path) -> int:
    try:
        with sqlite3.connect(output / "catalog.db", timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.Error:
        return 0


def start_crawl(site, output: Path, *args: str, tag: str | None = "原神", env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(crawl_command(site, output, *args, tag=tag), cwd=REPO, env=crawl_env(env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def interrupt_when(process: subprocess.Popen, output: Path, rows: int, sig=signal.SIGKILL, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while count_rows(output) < rows:
        assert process.poll() is None, "the crawl ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    workers = children_of(process.pid)  # the image-conversion pool
    process.send_signal(sig)
    process.wait(timeout=60)
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if alive(w)], "worker processes outlived the crawl"


def test_kill_9_at_several_moments_then_rerun_equals_an_uninterrupted_crawl(make_site, run_crawl, tmp_path):
    site = make_site("--size", "320", "--image-size", "40", "--broken-every", "10", "--latency-ms", "3")
    reference = run_crawl(site, tmp_path / "ref")
    assert reference.returncode == 0

    out = tmp_path / "killed"
    for rows in (5, 90, 200):  # early, mid-crawl, late; each kill lands in a later run
        interrupt_when(start_crawl(site, out), out, rows)
    with sqlite3.connect(out / "catalog.db") as conn:
        assert {r[0] for r in conn.execute("SELECT status FROM crawls")} == {"running", "interrupted"}
    rerun = run_crawl(site, out)
    assert rerun.returncode == 0
    assert not list(out.rglob("*.part"))
    assert snapshot(out) == snapshot(reference.output)
    statuses = [r[0] for r in rerun.query("SELECT status FROM crawls ORDER BY id")]
    assert statuses == ["interrupted", "interrupted", "interrupted", "finished"]


def test_a_killed_incremental_crawl_leaves_no_gap(make_site, run_crawl, tmp_path):
    """The early stop must not fire inside the range a killed run never finished."""
    site = make_site("--size", "120", "--image-size", "40", "--latency-ms", "3")
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert run_crawl(site, ref).returncode == 0
    assert run_crawl(site, out).returncode == 0
    site.control("/_mock/add?count=330", "POST")  # five and more new pages on top
    assert run_crawl(site, ref).returncode == 0

    before = count_rows(out)
    # killed once whole pages of new works are done: a naive "N known in a row" rule would
    # then stop the re-run inside them and never reach the rest
    interrupt_when(start_crawl(site, out), out, before + 230)
    rerun = run_crawl(site, out)
    assert rerun.returncode == 0
    assert snapshot(out) == snapshot(ref)
    assert rerun.query("SELECT status FROM crawls ORDER BY id DESC LIMIT 1") == [("stopped_early",)]


def test_jobdir_pause_and_resume(make_site, run_crawl, tmp_path):
    site = make_site("--size", "260", "--image-size", "40", "--latency-ms", "10")
    reference = run_crawl(site, tmp_path / "ref")
    out, jobdir = tmp_path / "paused", tmp_path / "job"
    process = start_crawl(site, out, "-s", f"JOBDIR={jobdir}")
    interrupt_when(process, out, 60, sig=signal.SIGINT)  # one Ctrl-C: a graceful pause
    assert process.returncode == 0
    with sqlite3.connect(out / "catalog.db") as conn:
        assert conn.execute("SELECT status FROM crawls").fetchall() == [("shutdown",)]
    assert (jobdir / "requests.seen").exists()
    resumed = run_crawl(site, out, "-s", f"JOBDIR={jobdir}")
    assert resumed.returncode == 0
    assert snapshot(out) == snapshot(reference.output)
