"""``scrapy curate [PATH ...]``: run the curation stages again without crawling.

A thin command over ``jobs.curate``: it reads the options and prints the summary; a run that cannot
start is a usage error (exit code 2, one clear message) and a model that cannot load stops it with
exit code 1 (``crawler/command_base.py`` says both). No reactor: the work
is synchronous and batched, in this process.
"""

from __future__ import annotations

import argparse
import logging

from scrapy.utils.log import configure_logging

from crawler.command_base import OfflineCommand, refuse_unknown_options, take_output_lock
from jobs.curate import STAGES, Curator, choose_stages

logger = logging.getLogger(__name__)


class Command(OfflineCommand):

    def syntax(self) -> str:
        return "[options] [PATH ...]"

    def short_desc(self) -> str:
        return "Re-run the curation stages over the catalogue or folders of pictures"

    def long_desc(self) -> str:
        return (
            "Runs the curation stages (faces, classify, tag, identity) again over the project's catalogue (no PATH, "
            "a catalog.db or the OUTPUT_DIR holding it) or over folders and picture files, in batches, "
            "skipping pictures the same model version has already seen, and writes the results (and, "
            "with CURATE_RULES, new keep/drop decisions) to the project's catalogue. A killed run "
            "resumes where it stopped. Pictures from folders are never moved or deleted."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--stages", metavar="LIST",
            help=f"comma-separated, of {', '.join(STAGES)}; by default every stage whose model is configured "
                 "(FACES_ENABLED, CLASSIFIER_MODEL, TAGGER_PROJECT, IDENTITY_ENABLED)",
        )
        parser.add_argument(
            "--reference", metavar="DIR",
            help="a folder of 3+ pictures of the wanted character: the identity stage (run with it) keeps the "
                 "pictures near them; without it, the identity stage keeps the dominant cluster",
        )
        parser.add_argument("--report", metavar="FILE", help="write one JSON line per input picture to FILE")
        parser.add_argument("--batch-size", type=int, metavar="N", help="pictures per batch (by default CURATE_BATCH_SIZE)")
        parser.add_argument("--force", action="store_true", help="run the stages even where the same model version already ran")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def perform(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        refuse_unknown_options(args)
        configure_logging(self.settings)
        lock = take_output_lock(self, "scrapy curate")  # it writes OUTPUT_DIR's catalogue and dropped/
        if lock is None:
            return
        with lock:
            self._curate(args, opts)

    def _curate(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        stages = choose_stages(self.settings, opts.stages)
        if opts.reference is not None and "identity" not in stages:
            stages.append("identity")  # --reference asks for it
        curator = Curator(
            self.settings, stages, batch_size=opts.batch_size,
            force=opts.force, progress=not opts.no_progress, reference=opts.reference,
        )
        try:
            summary = curator.run(curator.collect(args), report=opts.report)
        finally:
            curator.close()
        print("\n".join(summary.lines(curator.catalog_path, opts.report)), flush=True)
