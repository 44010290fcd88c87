"""One writer per output folder (core/output_lock.py): a second crawl, curation or export into
OUTPUT_DIR exits 75 naming the holder, touching nothing; the lock is gone when its holder dies."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.output_lock import EXIT_LOCKED, INHERITED_FD_ENV, OutputLock
from mocksites.runner import REPO
from tests.conftest import crawl_command, crawl_env
from tests.crawler.small_crawl import crawled_copy


def wait_for_lock_holder(path: Path, process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text(encoding="utf-8").strip()):
        assert process.poll() is None and time.monotonic() < deadline, "the first process never took the lock"
        time.sleep(0.05)
    return path.read_text(encoding="utf-8")


def test_a_second_crawl_over_the_same_output_exits_75_and_fetches_nothing(make_site, tmp_path):
    site = make_site("--size", "240", "--image-size", "32", "--latency-ms", "100")
    output = tmp_path / "out"
    first = subprocess.Popen(crawl_command(site, output, "-s", "IMAGE_WORKERS=0"), cwd=REPO, env=crawl_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    holder = wait_for_lock_holder(output / "output.lock", first)
    assert f"pid {first.pid} " in holder and "scrapy crawl pixiv" in holder

    second = subprocess.run(crawl_command(site, output), cwd=REPO, env=crawl_env(), capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == EXIT_LOCKED
    assert f"pid {first.pid}" in second.stderr and "not starting a second writer" in second.stderr
    assert "Spider opened" not in second.stderr  # it stopped before the spider started
    assert first.poll() is None  # (the first crawl was still going)

    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    repeated = [r for r, n in collections.Counter(site.stats()["requests"]).items() if n > 1]
    assert repeated == []  # every request went out once: only the first crawl ran

    # the lock went with its holder: the next crawl runs (incremental: it stops early)
    again = subprocess.run(crawl_command(site, output), cwd=REPO, env=crawl_env(), capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]


def test_a_killed_holder_leaves_no_lock(tmp_path):
    path = tmp_path / "output.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from core.output_lock import OutputLock; "
         "lock = OutputLock(Path(sys.argv[1])).hold('sleeper'); print('held', flush=True); time.sleep(60)", str(path)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    lock = OutputLock(path)
    assert f"pid {holder.pid} " in (lock.acquire("me") or "")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert lock.acquire("me") is None
    lock.release()


def test_only_a_descriptor_of_the_lock_file_itself_counts_as_inherited(tmp_path, monkeypatch):
    parent = OutputLock(tmp_path / "output.lock").hold("parent")
    try:
        elsewhere = (tmp_path / "other").open("w")
        monkeypatch.setenv(INHERITED_FD_ENV, str(elsewhere.fileno()))  # some other open file: no
        assert OutputLock(tmp_path / "output.lock").acquire("child") is not None
        monkeypatch.setenv(INHERITED_FD_ENV, "999999")  # no such descriptor: no
        assert OutputLock(tmp_path / "output.lock").acquire("child") is not None
        monkeypatch.setenv(INHERITED_FD_ENV, parent.child_env()[INHERITED_FD_ENV])  # the lock file: yes
        child = OutputLock(tmp_path / "output.lock")
        assert child.acquire("child") is None and child.inherited
        elsewhere.close()
    finally:
        parent.release()


def test_curate_under_a_held_lock_exits_75_and_touches_nothing(tmp_path):
    output = tmp_path / "out"
    with OutputLock(output / "output.lock").hold("a long crawl"):
        done = subprocess.run(
            [sys.executable, "-m", "scrapy", "curate", "-s", f"OUTPUT_DIR={output}", "--stages", "classify"],
            cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == EXIT_LOCKED, done.stderr[-2000:]
    assert f"pid {os.getpid()} " in done.stderr and "a long crawl" in done.stderr
    assert sorted(p.name for p in output.iterdir()) == ["output.lock"]  # no catalogue was made


def test_an_export_into_a_locked_output_exits_75_and_one_elsewhere_only_reads(pixiv_site, tmp_path_factory, tmp_path):
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "out")
    export = [sys.executable, "-m", "scrapy", "export", "-s", f"OUTPUT_DIR={output}", "--no-progress"]
    with OutputLock(output / "output.lock").hold("a long crawl"):
        inside = subprocess.run([*export, str(output / "export")], cwd=REPO, env=crawl_env(),
                                capture_output=True, text=True, timeout=120)
        elsewhere = subprocess.run([*export, str(tmp_path / "dataset")], cwd=REPO, env=crawl_env(),
                                   capture_output=True, text=True, timeout=120)
    assert inside.returncode == EXIT_LOCKED and "a long crawl" in inside.stderr, inside.stderr[-2000:]
    assert not (output / "export").exists()
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]  # reading the catalogue needs no lock
    assert (tmp_path / "dataset" / "manifest.json").is_file()
