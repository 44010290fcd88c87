"""``scrapy crawl SPIDER``: Scrapy's own command, under the output folder's lock, with an honest exit code.

Two crawls over one ``OUTPUT_DIR`` would each fetch every artwork and trample each other's files
(core/output_lock.py). This command takes the lock before the spider starts and holds it until
the crawl has ended; a second crawl says who holds it and exits with 75, having touched nothing.
Scrapy lets a project's ``COMMANDS_MODULE`` replace a built-in command of the same name.

What it adds to Scrapy's exit code (0 unless the crawler could not start):

* a setting the crawl cannot use (a rule that is not one, a model path that names no model) is a
  ``core.errors.ProjectError`` raised while the stages are built, before any request and before the
  crawl's catalogue row: one ``scrapy crawl: error: ...`` line, no traceback, and its exit code (2);
* a crawl whose ``crawls.status`` ends ``failed`` (a search page failed, or a stage raised on items,
  ``pipelines/guarded.py``) exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError
from twisted.internet.defer import Deferred

from core.errors import EXIT_FAILED, ProjectError
from core.output_lock import EXIT_LOCKED
from crawler.command_base import ProjectHelpFormatter, fail, take_output_lock
from pipelines.guarded import STATUS_STAT

logger = logging.getLogger(__name__)


class Command(ScrapyCrawlCommand):

    def long_desc(self) -> str:
        return (
            "Run a spider of the project. The crawl holds OUTPUT_DIR's lock (OUTPUT_LOCK_FILE, default "
            f"OUTPUT_DIR/output.lock) while it runs; a second crawl over the same folder exits with {EXIT_LOCKED}. "
            "A setting the crawl cannot use stops it before any request with one line and exit code 2; "
            f"a crawl that ends failed (crawls.status) exits with {EXIT_FAILED}."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.formatter_class = ProjectHelpFormatter

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give one spider: scrapy crawl pixiv -a tag=TAG" if not args else
                             "running 'scrapy crawl' with more than one spider is not supported", print_help=not args)
        lock = take_output_lock(self, f"scrapy crawl {args[0]}")
        if lock is None:
            return
        assert self.crawler_process is not None
        try:
            crawler = self._create_crawler(args[0])  # add-ons check their settings here
            ended = _Ending(self.crawler_process.crawl(crawler, **opts.spargs))
            self.crawler_process.start()
        except ProjectError as error:
            self.exitcode = fail("crawl", error, usage=False)
            return
        finally:
            lock.release()
        problem = ended.error()
        if isinstance(problem, ProjectError):
            self.exitcode = fail("crawl", problem, usage=False)  # a setting or an argument, said in one line
        elif problem is not None:  # a bug: its traceback, which asyncio would otherwise print unasked
            logger.error("The crawl could not start: %s: %s", type(problem).__name__, problem, exc_info=problem)
            self.exitcode = 1
        elif self.crawler_process.bootstrap_failed:
            self.exitcode = 1
        elif crawler.stats is not None and crawler.stats.get_value(STATUS_STAT) == "failed":
            self.exitcode = EXIT_FAILED


class _Ending:
    """What a crawl ended with, whether Scrapy ran it as an asyncio Task or a Twisted Deferred."""

    def __init__(self, started: Any):
        self.started = started
        self.failure: BaseException | None = None
        if isinstance(started, Deferred):
            started.addErrback(self._failed)

    def _failed(self, failure: Any) -> None:
        self.failure = failure.value

    def error(self) -> BaseException | None:
        """The exception the crawl ended with, or None; taking it here keeps asyncio from logging
        it again as "never retrieved" with its traceback."""
        if isinstance(self.started, asyncio.Future) and self.started.done() and not self.started.cancelled():
            return self.started.exception()
        return self.failure
