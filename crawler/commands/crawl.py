"""``scrapy crawl SPIDER``: Scrapy's own command, under the output folder's lock.

Two crawls over one ``OUTPUT_DIR`` would each fetch every artwork and trample each other's files
(core/output_lock.py). This command takes the lock before the spider starts and holds it until
the crawl has ended; a second crawl says who holds it and exits with 75, having touched nothing.
Scrapy lets a project's ``COMMANDS_MODULE`` replace a built-in command of the same name.
"""

from __future__ import annotations

import argparse

from scrapy.commands.crawl import Command as ScrapyCrawlCommand

from core.output_lock import EXIT_LOCKED
from crawler.command_base import take_output_lock


class Command(ScrapyCrawlCommand):

    def long_desc(self) -> str:
        return (
            "Run a spider of the project. The crawl holds OUTPUT_DIR's lock (OUTPUT_LOCK_FILE, default "
            f"OUTPUT_DIR/output.lock) while it runs; a second crawl over the same folder exits with {EXIT_LOCKED}."
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        lock = take_output_lock(self, f"scrapy crawl {' '.join(args[:1])}".strip())
        if lock is None:
            return
        try:
            super().run(args, opts)
        finally:
            lock.release()
