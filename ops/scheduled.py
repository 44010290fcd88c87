"""Scheduled incremental crawls (cron, the systemd timer in deploy/): one ``scrapy crawl pixiv`` per tag.

    python -m ops.scheduled --config deploy/tags.toml
    python -m ops.scheduled 原神 'モナ(原神)' [-a ai=exclude] [-s OUTPUT_DIR=/data/pixiv]

Why a wrapper rather than a bare ``scrapy crawl`` in the crontab:

- **No overlap.** It holds the output folder's lock (core/output_lock.py: ``OUTPUT_LOCK_FILE``,
  default ``OUTPUT_DIR/output.lock``) for the whole run, and its crawls work under it. A second run
  while one is going (a crawl that outlasted its night), or a hand-started crawl or curation of the
  same folder, says who holds the lock and exits with ``EXIT_LOCKED`` (75, EX_TEMPFAIL), touching
  nothing. The kernel drops the lock when the holder dies, so a killed run leaves none.
- **No secret on a command line.** Settings are passed to each crawl as ``-s``, which ``ps`` shows
  to every user; secret ones (the session cookie ``PIXIV_PHPSESSID``, a password, a URL with one:
  crawler/secrets.py), in ``[settings]`` or a ``[[crawl]]``'s ``settings``, go through the child's
  environment instead.
- **One log per crawl:** ``OUTPUT_DIR/logs/{date}_{time}-{tag}.log`` (the tag made file-name safe,
  with a short hash when that changed it). Its own output is one line per crawl, for cron's mail
  or the journal.
- **An honest exit code.** ``scrapy crawl`` exits 0 when Pixiv throttled the crawl or it was shut
  down; this reads the crawl's ``crawls`` row. finished and stopped_early are success;
  failed, throttled, interrupted, shutdown, a missing row or a non-zero exit are failure, and the
  run exits ``EXIT_FAILED`` (1) once every tag has had its turn.

Config (TOML): ``[settings]`` are ``-s`` for every crawl; each ``[[crawl]]`` has ``tag``, optional
``settings``, and any other key is a spider argument (``-a``). See deploy/tags.toml.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from scrapy.settings import Settings

from catalog.store import crawl_started_by
from core.output_lock import EXIT_LOCKED, OutputLock
from core.storage import catalog_path, output_dir
from crawler.secrets import child_environment, split_secrets

REPO = Path(__file__).resolve().parents[1]  # where scrapy.cfg is: the crawls run here

EXIT_FAILED = 1
EXIT_USAGE = 2
OK_STATUSES = ("finished", "stopped_early")


@dataclass
class CrawlJob:
    tag: str
    arguments: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class CrawlResult:
    job: CrawlJob
    ok: bool
    status: str
    reason: str | None
    crawl_id: int | None
    log: Path
    seconds: float


def tag_slug(tag: str) -> str:
    """A file-name-safe form of any tag: letters of any script stay (原神), the rest becomes ``_``;
    a short hash keeps two tags that differ only there apart."""
    slug = re.sub(r"[^\w.-]+", "_", tag).strip("._-")[:60] or "tag"
    if slug != tag:
        slug += "-" + hashlib.sha1(tag.encode("utf-8")).hexdigest()[:8]
    return slug


def _pairs(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{what} must be NAME=VALUE, not {item!r}")
        pairs[name] = value
    return pairs


def _strings(table: dict[str, Any]) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v) for k, v in table.items()}


def load_config(path: Path) -> tuple[dict[str, str], list[CrawlJob]]:
    with path.open("rb") as f:
        config = tomllib.load(f)
    unknown = set(config) - {"settings", "crawl"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)} (expected [settings] and [[crawl]])")
    jobs = []
    for entry in config.get("crawl", []):
        entry = dict(entry)
        tag = entry.pop("tag", None)
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"{path}: every [[crawl]] needs a tag")
        settings = entry.pop("settings", {})
        jobs.append(CrawlJob(tag, _strings(entry), _strings(settings)))
    return _strings(config.get("settings", {})), jobs


def project_settings(overrides: dict[str, str]) -> Settings:
    settings = Settings()
    settings.setmodule(os.environ.get("SCRAPY_SETTINGS_MODULE", "crawler.settings"), priority="project")
    settings.setdict(overrides, priority="cmdline")
    return settings


class Runner:
    def __init__(self, settings: Settings, overrides: dict[str, str], jobs: list[CrawlJob], out: TextIO = sys.stdout):
        self.output = output_dir(settings).resolve()
        self.catalog = catalog_path(settings).resolve()
        self.lock = OutputLock.for_settings(settings)
        self.logs = self.output / "logs"
        # secrets go to the child through its environment, never its command line (``ps``)
        plain, self.secrets = split_secrets(overrides)
        self.overrides = plain | {"OUTPUT_DIR": str(self.output)}
        if settings.get("CATALOG_DB"):
            self.overrides["CATALOG_DB"] = str(self.catalog)
        self.jobs = jobs
        self.out = out
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> int:
        holder = self.lock.acquire(", ".join(job.tag for job in self.jobs))
        if holder is not None:
            print(
                f"ops.scheduled: another run holds {self.lock.path} ({holder}); "
                "not starting a second one over it",
                file=sys.stderr, flush=True,
            )
            return EXIT_LOCKED
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            results = []
            for job in self.jobs:
                if self.stopping:
                    self.say(f"{job.tag}: not started (the run was asked to stop)")
                    results.append(CrawlResult(job, False, "not started", None, None, Path(), 0.0))
                    continue
                results.append(self.crawl(job))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.lock.release()
        failed = [r for r in results if not r.ok]
        self.say(f"{len(results) - len(failed)} of {len(results)} crawls ok" + (
            "; failed: " + ", ".join(r.job.tag for r in failed) if failed else ""))
        return EXIT_FAILED if failed else 0

    def _stop(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: pass it to the crawl (a graceful Scrapy shutdown) and start no other."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def command(self, job: CrawlJob, log: Path) -> list[str]:
        """The crawl's command line: its arguments and every setting but the secret ones."""
        command = [sys.executable, "-m", "scrapy", "crawl", "pixiv", "-a", f"tag={job.tag}"]
        for name, value in job.arguments.items():
            command += ["-a", f"{name}={value}"]
        plain, _secrets = split_secrets(job.settings)
        for name, value in {**self.overrides, **plain, "LOG_FILE": str(log)}.items():
            command += ["-s", f"{name}={value}"]
        return command

    def child_env(self, job: CrawlJob) -> dict[str, str]:
        """A crawl's environment: ours, the secret settings (the run's and the job's own), and the
        descriptor of the lock it works under."""
        _plain, secrets = split_secrets(job.settings)
        env = child_environment(dict(os.environ), {**self.secrets, **secrets})
        return {**env, "PYTHONUNBUFFERED": "1", **self.lock.child_env()}

    def crawl(self, job: CrawlJob) -> CrawlResult:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{datetime.now().strftime('%Y-%m-%d_%H%M%S')}-{tag_slug(job.tag)}.log"
        started = time.monotonic()
        since = (datetime.now(timezone.utc) - timedelta(seconds=2)).isoformat(timespec="seconds")
        env = self.child_env(job)
        assert self.lock.file is not None
        with log.open("ab") as stray:  # anything printed before Scrapy's logging is set up
            # Its own session: a signal reaches the crawl once, through _stop (two SIGINTs would
            # force an unclean shutdown). It inherits the lock, so a killed runner cannot let a
            # second run start over a crawl that is still going.
            self.child = subprocess.Popen(
                self.command(job, log), cwd=REPO, env=env, stdout=stray, stderr=stray,
                start_new_session=True, pass_fds=(self.lock.file.fileno(),),
            )
            code = self.child.wait()
        pid, self.child = self.child.pid, None
        row = self._crawl_row(pid, since)
        crawl_id, status, reason = row if row else (None, "no crawl recorded", "the spider did not start; see the log")
        ok = code == 0 and status in OK_STATUSES
        if code != 0 and (row is None or status in OK_STATUSES):  # else the row already says what went wrong
            reason = f"scrapy exited with {code}" + (f"; {reason}" if reason else "")
        result = CrawlResult(job, ok, status, reason, crawl_id, log, time.monotonic() - started)
        self.say(
            f"{job.tag}: {'ok' if ok else 'FAILED'}, {status}" + (f" ({reason})" if reason else "")
            + (f", crawl {crawl_id}" if crawl_id else "") + f", {result.seconds:.0f} s; log {log}"
        )
        return result

    def _crawl_row(self, pid: int, since: str) -> tuple[int, str, str | None] | None:
        return crawl_started_by(self.catalog, pid, socket.gethostname(), since)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.scheduled", description=__doc__.splitlines()[0],
        epilog=f"Exit codes: 0 every crawl ok, {EXIT_FAILED} a crawl failed, {EXIT_USAGE} bad usage or config, "
               f"{EXIT_LOCKED} another run holds the lock.",
    )
    parser.add_argument("tags", nargs="*", metavar="TAG", help="tags to crawl, after those of --config")
    parser.add_argument("--config", type=Path, help="TOML file: [settings] and one [[crawl]] per tag (deploy/tags.toml)")
    parser.add_argument("-a", dest="arguments", action="append", default=[], metavar="NAME=VALUE",
                        help="spider argument for the tags given on the command line")
    parser.add_argument("-s", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                        help="setting for every crawl (wins over the config's [settings])")
    args = parser.parse_args(argv)
    try:
        config_settings, jobs = load_config(args.config) if args.config else ({}, [])
        arguments = _pairs(args.arguments, "-a")
        jobs += [CrawlJob(tag, dict(arguments)) for tag in args.tags]
        overrides = {**config_settings, **_pairs(args.settings, "-s")}
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"ops.scheduled: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not jobs:
        parser.print_usage(sys.stderr)
        print("ops.scheduled: no tags: give TAG arguments or a --config with [[crawl]] entries", file=sys.stderr)
        return EXIT_USAGE
    return Runner(project_settings(overrides), overrides, jobs).run()


if __name__ == "__main__":
    sys.exit(main())
