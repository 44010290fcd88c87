"""Scheduled crawls (ops/scheduled.py, deploy/): the lock, a log per crawl, honest exit codes,
and the cron line and systemd units as shipped."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import SettingError
from core.output_lock import OutputLock
from crawler.secrets import SECRETS_ENV, SecretSettings
from mocksites.runner import REPO
from ops.scheduled import EXIT_FAILED, EXIT_LOCKED, EXIT_USAGE, CrawlJob, Runner, load_config, project_settings, tag_slug
from tests.conftest import crawl_command, crawl_env

DEPLOY = REPO / "deploy"


def scheduled(*args: str) -> list[str]:
    return [sys.executable, "-m", "ops.scheduled", *args]


def write_config(path: Path, site, output: Path, crawls: str) -> Path:
    path.write_text(
        f'[settings]\nPIXIV_BASE_URL = "{site.api}"\nOUTPUT_DIR = "{output}"\nIMAGE_WORKERS = 0\n\n{crawls}',
        encoding="utf-8",
    )
    return path


def test_tag_slugs_are_safe_file_names_for_any_tag():
    assert tag_slug("原神") == "原神"
    assert re.fullmatch(r"モナ_原神-[0-9a-f]{8}", tag_slug("モナ(原神)"))
    assert tag_slug("a/b") != tag_slug("a?b")  # the hash keeps them apart
    for tag in ("../../etc/passwd", "..", " ", "Fate/Grand Order", "x" * 300, "-rf"):
        slug = tag_slug(tag)
        assert "/" not in slug and not slug.startswith((".", "-")) and len(slug.encode()) < 200


def test_secret_settings_reach_the_crawl_by_its_environment_never_its_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXIV_PHPSESSID", "exported-by-the-user")
    overrides = {"OUTPUT_DIR": str(tmp_path), "PIXIV_PHPSESSID": "run-wide-cookie", "USER_AGENT": "Mozilla/5.0"}
    plain = CrawlJob("原神", {"ai": "exclude"})
    own = CrawlJob("モナ", {}, {"PIXIV_PHPSESSID": "second-account", "REDIS_URL": "redis://:hunter2@db:6379/0",
                                "API_TOKEN": "t0ken", "CONCURRENT_REQUESTS": "4"})
    runner = Runner(project_settings(overrides), overrides, [plain, own])
    assert runner.lock.acquire("a test") is None  # the run holds it while it starts crawls
    for job, cookie in ((plain, "run-wide-cookie"), (own, "second-account")):
        command = " ".join(runner.command(job, tmp_path / "x.log"))
        env = runner.child_env(job)
        for secret in ("cookie", "account", "exported", "hunter2", "t0ken"):
            assert secret not in command
        assert "USER_AGENT=Mozilla/5.0" in command and "PIXIV_PHPSESSID" not in env  # the exported one is not used
        secrets = json.loads(env[SECRETS_ENV])
        assert secrets["PIXIV_PHPSESSID"] == cookie
    runner.lock.release()
    assert "CONCURRENT_REQUESTS=4" in " ".join(runner.command(own, tmp_path / "x.log"))
    assert secrets == {"PIXIV_PHPSESSID": "second-account", "REDIS_URL": "redis://:hunter2@db:6379/0", "API_TOKEN": "t0ken"}


def test_the_crawl_takes_its_secret_settings_from_the_environment_once(monkeypatch):
    from scrapy.settings import Settings

    monkeypatch.setenv(SECRETS_ENV, json.dumps({"PIXIV_PHPSESSID": "abc", "REDIS_URL": "redis://:pw@h/0"}))
    settings = Settings({"PIXIV_PHPSESSID": "", "REDIS_URL": "redis://127.0.0.1:6379/0"})
    SecretSettings().update_settings(settings)
    assert settings["PIXIV_PHPSESSID"] == "abc" and settings["REDIS_URL"] == "redis://:pw@h/0"
    assert SECRETS_ENV not in os.environ  # the crawl's worker processes do not inherit it
    monkeypatch.setenv(SECRETS_ENV, "[1, 2]")
    with pytest.raises(SettingError, match=f"{SECRETS_ENV} must hold a JSON object"):
        SecretSettings().update_settings(Settings())


def test_a_held_lock_makes_a_second_run_exit_75_with_a_message(tmp_path):
    lock = OutputLock(tmp_path / "out" / "output.lock")
    assert lock.acquire("a long crawl") is None
    try:
        done = subprocess.run(
            scheduled("-s", f"OUTPUT_DIR={tmp_path / 'out'}", "原神"), cwd=tmp_path, env=crawl_env(),
            capture_output=True, text=True, timeout=60,
        )
    finally:
        lock.release()
    assert done.returncode == EXIT_LOCKED
    assert "another run holds" in done.stderr and "a long crawl" in done.stderr
    assert not (tmp_path / "out" / "logs").exists()  # it touched nothing


def test_usage_errors_exit_2(tmp_path):
    done = subprocess.run(scheduled(), cwd=tmp_path, env=crawl_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_USAGE and "no tags" in done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[[crawl]]\nmode = 'safe'\n", encoding="utf-8")
    done = subprocess.run(scheduled("--config", str(bad)), cwd=tmp_path, env=crawl_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_USAGE and "needs a tag" in done.stderr


@pytest.mark.slow
def test_runs_each_tag_with_its_own_log_and_a_concurrent_run_is_refused(make_site, tmp_path):
    site = make_site("--size", "90", "--image-size", "32", "--latency-ms", "30")
    output = tmp_path / "out"
    session = "demo-session-0001"  # the local site's logged-in session: R-18 works are seen with it
    # the cookie in the crawl's own settings table (as a second account would be), not [settings]
    config = write_config(tmp_path / "tags.toml", site, output,
                          f'[[crawl]]\ntag = "原神"\nai = "exclude"\nsettings = {{ PIXIV_PHPSESSID = "{session}" }}\n')
    first = subprocess.Popen(scheduled("--config", str(config)), cwd=tmp_path, env=crawl_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((output / "logs").glob("*.log")):  # the first crawl is under way
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    # what `ps` shows of the crawl: its command line holds no cookie (it went by the environment)
    # (the log is opened before the fork: until the child's exec, its command line is its parent's)
    command_line = ""
    while "scrapy" not in command_line and time.monotonic() < deadline:
        [child] = Path(f"/proc/{first.pid}/task/{first.pid}/children").read_text().split() or ["self"]
        command_line = Path(f"/proc/{child}/cmdline").read_bytes().decode()
        time.sleep(0.05)
    assert "scrapy\0crawl\0pixiv" in command_line and session not in command_line
    os.kill(int(child), signal.SIGSTOP)  # the crawl cannot finish while the two below try their luck
    try:
        # a crawl started by hand over the same folder is refused too, naming the scheduled run
        by_hand = subprocess.run(crawl_command(site, output), cwd=REPO, env=crawl_env(), capture_output=True,
                                 text=True, timeout=60)
        assert by_hand.returncode == EXIT_LOCKED and f"pid {first.pid}" in by_hand.stderr, by_hand.stderr
        second = subprocess.run(scheduled("--config", str(config)), cwd=tmp_path, env=crawl_env(),
                                capture_output=True, text=True, timeout=60)
    finally:
        os.kill(int(child), signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert second.returncode == EXIT_LOCKED, second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert first.returncode == 0, out + err
    assert re.search(r"^原神: ok, finished, crawl 1, \d+ s; log .*原神\.log$", out, re.M), out
    [log] = (output / "logs").glob("*.log")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d{6}-原神\.log", log.name)
    assert "Spider closed (finished)" in log.read_text(encoding="utf-8")
    assert session not in log.read_text(encoding="utf-8")
    with sqlite3.connect(output / "catalog.db") as conn:  # the cookie reached the crawl: it saw R-18 works
        assert conn.execute("SELECT count(*) FROM artworks WHERE x_restrict > 0").fetchone()[0] > 0

    # a second run is incremental: it stops early and fetches nothing
    again = subprocess.run(scheduled("--config", str(config)), cwd=tmp_path, env=crawl_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "原神: ok, stopped_early" in again.stdout
    assert len(list((output / "logs").glob("*.log"))) == 2


@pytest.mark.slow
def test_a_failed_crawl_makes_the_run_exit_1_after_the_other_tags(make_site, tmp_path):
    site = make_site("--size", "30", "--image-size", "32")
    output = tmp_path / "out"
    # The site answers 403 to a client that is not a browser: the search fails.
    config = write_config(tmp_path / "tags.toml", site, output, (
        '[[crawl]]\ntag = "原神"\nsettings = { USER_AGENT = "curl/8.0" }\n\n'
        '[[crawl]]\ntag = "モナ(原神)"\n'
    ))
    done = subprocess.run(scheduled("--config", str(config)), cwd=tmp_path, env=crawl_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == EXIT_FAILED, done.stdout + done.stderr
    assert "原神: FAILED, failed (a search page failed: HTTP 403)" in done.stdout
    assert "モナ(原神): ok, finished" in done.stdout
    assert "1 of 2 crawls ok; failed: 原神" in done.stdout
    assert len(list((output / "logs").glob("*.log"))) == 2
    with sqlite3.connect(output / "catalog.db") as conn:
        assert [r[0] for r in conn.execute("SELECT status FROM crawls ORDER BY id")] == ["failed", "finished"]


def test_the_shipped_config_and_cron_line_are_usable():
    settings, jobs = load_config(DEPLOY / "tags.toml")
    assert settings["OUTPUT_DIR"] == "output" and jobs and all(job.tag for job in jobs)
    lines = [line for line in (DEPLOY / "crontab.example").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    for value, (low, high) in zip(fields[:5], [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]):
        assert value == "*" or low <= int(value) <= high
    assert "python -m ops.scheduled --config deploy/tags.toml" in fields[5]


def test_systemd_units_verify(tmp_path):
    """The units as installed (the checkout's path in place of the placeholder) pass systemd's checks."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (systemd package)")
    units = tmp_path / "units"
    units.mkdir()
    for name in ("anime-crawl.service", "anime-crawl.timer"):
        text = (DEPLOY / name).read_text(encoding="utf-8")
        (units / name).write_text(text.replace("/srv/anime-art-datasets", str(REPO)), encoding="utf-8")
    assert "Persistent=true" in (units / "anime-crawl.timer").read_text()
    done = subprocess.run(
        ["systemd-analyze", "verify", str(units / "anime-crawl.timer"), str(units / "anime-crawl.service")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if "anime-crawl" in line], done.stderr
