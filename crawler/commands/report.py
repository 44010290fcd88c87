"""``scrapy report [DEST]``: write a static HTML contact sheet of the catalogue (``jobs.report``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scrapy.exceptions import UsageError

from core.storage import catalog_path, files_root, output_dir
from crawler.command_base import OfflineCommand, refuse_unknown_options
from jobs.report import write_report


class Command(OfflineCommand):

    def syntax(self) -> str:
        return "[options] [DEST]"

    def short_desc(self) -> str:
        return "Write an HTML contact sheet of kept, dropped and failed pictures, and why"

    def long_desc(self) -> str:
        return (
            "Writes DEST/index.html (by default OUTPUT_DIR/report/): thumbnails of the kept and dropped "
            "pictures grouped by decision, each with its reason, classifier score, top model tags, Pixiv "
            "tags and face crops; the failed ones with their reasons; counts per reason; and the "
            "classifier's training plots (history.png, confusion.png beside CLASSIFIER_MODEL). Plain HTML "
            "with inline CSS and no script: open it from disk. Thumbnails (REPORT_THUMBNAIL_SIZE px) are also "
            "stored in the catalogue's thumbnails table, where Datasette shows them; unchanged pictures "
            "are not thumbnailed again."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--limit", type=int, metavar="N", help="show at most N pictures per group, newest first")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def perform(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        refuse_unknown_options(args)
        if len(args) > 1:
            raise UsageError("at most one DEST folder", print_help=False)
        catalog = Path(catalog_path(self.settings))
        if not catalog.is_file():
            raise UsageError(f"no catalogue at {catalog}: crawl first, or set OUTPUT_DIR or CATALOG_DB",
                             print_help=False)
        root = files_root(self.settings)
        dest = Path(args[0]) if args else output_dir(self.settings) / "report"
        try:
            summary = write_report(
                catalog, root, dest, classifier_model=self.settings.get("CLASSIFIER_MODEL") or "",
                thumbnail_size=self.settings.getint("REPORT_THUMBNAIL_SIZE"),
                model_tag_count=self.settings.getint("REPORT_MODEL_TAGS"),
                limit=opts.limit, progress=not opts.no_progress,
            )
        except ValueError as exc:
            raise UsageError(str(exc), print_help=False) from None
        print("\n".join(summary.lines()), flush=True)
