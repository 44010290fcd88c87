"""``scrapy review``: serve the keep/drop review page (``jobs.review``) on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
from pathlib import Path

from aiohttp import web
from scrapy.exceptions import UsageError
from scrapy.utils.log import configure_logging

from core.errors import ProjectError
from core.output_lock import OutputLock
from core.storage import catalog_path, files_root, output_dir
from crawler.command_base import OfflineCommand, refuse_unknown_options
from jobs.review import ReviewSite
from jobs.review_learning import Learner
from models.registry import resolve_setting


class Command(OfflineCommand):

    def syntax(self) -> str:
        return "[options]"

    def short_desc(self) -> str:
        return "Serve a local page to keep or drop pictures by hand (decisions that outrank the models)"

    def long_desc(self) -> str:
        return (
            "Serves http://127.0.0.1:PORT/: the catalogue's pictures by status, with Keep, Drop and Clear "
            "buttons. A click is stored in the catalogue's manual_decisions table, moves a crawled picture "
            "between images/ and dropped/, and outranks every rule and model in later crawls, curate runs "
            "and exports. Clear gives the picture back to the rules. Only 127.0.0.1 is listened on; every "
            "change carries the page's token and takes OUTPUT_DIR's lock for a moment. A JSON API beside the page "
            "(GET /api/queue, POST /api/decide, GET /api/model; docs/curation.md) serves labelling: "
            "/api/queue?order=uncertain puts first the pictures the classifier is least sure of. After every "
            "REVIEW_RETRAIN_EVERY (20) labels, a fast classifier is retrained on them in the background, every "
            "picture is scored again and the rules re-applied (manual decisions still win)."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--port", type=int, default=8765, metavar="N", help="port (default 8765; 0: any free one)")

    def perform(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        refuse_unknown_options(args)
        if args:
            raise UsageError("scrapy review takes no operands", print_help=False)
        if not 0 <= opts.port <= 65535:
            raise UsageError(f"--port must be from 0 (any free port) to 65535, not {opts.port}", print_help=False)
        catalog = Path(catalog_path(self.settings))
        if not catalog.is_file():
            raise UsageError(f"no catalogue at {catalog}: crawl first, or set OUTPUT_DIR or CATALOG_DB",
                             print_help=False)
        configure_logging(self.settings)
        root = files_root(self.settings)
        try:
            classifier = resolve_setting(self.settings, "CLASSIFIER_MODEL")
        except ProjectError as exc:  # a catalogue name that cannot be pulled here: the page works without it
            print(f"CLASSIFIER_MODEL: {exc}; the queue orders without its threshold", file=sys.stderr)
            classifier = ""
        lock, write_lock = OutputLock.for_settings(self.settings), threading.Lock()
        model_dir = Path(self.settings.get("REVIEW_MODEL_DIR") or output_dir(self.settings) / "review-model")
        learner = Learner(self.settings, catalog, root, model_dir, self.settings.getint("REVIEW_RETRAIN_EVERY"),
                          write_lock, lock, self.settings.get("REVIEW_CLASS_NAME") or "wanted")
        site = ReviewSite(catalog, root, lock, classifier_model=Path(classifier) if classifier else None,
                          phash_distance=self.settings.getint("CURATE_PHASH_DISTANCE"), learner=learner,
                          explore_every=max(0, self.settings.getint("REVIEW_EXPLORE_EVERY")),
                          write_lock=write_lock)
        listening = socket.socket()
        try:
            listening.bind(("127.0.0.1", opts.port))
        except OSError as exc:
            raise UsageError(f"cannot listen on 127.0.0.1:{opts.port}: {exc.strerror}", print_help=False) from None
        listening.listen()  # before the line below: a client that reads it can connect at once
        port = listening.getsockname()[1]
        print(f"Review page: http://127.0.0.1:{port}/ (Ctrl-C stops it)", flush=True)
        web.run_app(site.app(), sock=listening, print=None, handle_signals=True, loop=asyncio.new_event_loop())
