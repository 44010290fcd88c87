"""``scrapy masks LABELME_DIR DEST``: labelme annotations to index masks, a whole folder at once.

A thin command over ``models.labelme.convert_folder``: it reads the options, turns a conversion
that cannot start into a usage error (exit code 2, one clear message), and prints the summary.
Files that cannot be converted (see ``models.labelme`` for the rules on labels and on pictures
outside LABELME_DIR) are logged with their reason and listed; the rest are written.
The exit code is 1 when any file failed, so a script notices.
"""

from __future__ import annotations

import argparse

from scrapy.exceptions import UsageError
from scrapy.utils.log import configure_logging

from crawler.command_base import OfflineCommand, refuse_unknown_options
from models.labelme import convert_folder


class Command(OfflineCommand):

    def syntax(self) -> str:
        return "[options] LABELME_DIR DEST"

    def short_desc(self) -> str:
        return "Convert labelme JSON annotations to index masks (DEST/images/, DEST/annotations/)"

    def long_desc(self) -> str:
        return (
            "Reads every labelme .json under LABELME_DIR (recursively) and writes DEST/images/{name}.{ext} (the "
            "picture, from imageData or imagePath), DEST/annotations/{name}.png (an 8-bit palette PNG whose pixel "
            "values are class indexes: 0 background, 1..K classes, 255 the __ignore__ label) and DEST/labels.txt "
            "(line i names value i). Polygon, rectangle, circle and mask shapes are drawn, later over earlier; "
            "line, linestrip and point shapes are left out with a warning. Classes come from --labels, or else "
            "from every label in the files, sorted. Labels are stripped of surrounding whitespace (' cat ' is "
            "'cat', with a warning); an empty label, or one with a control character or line break, fails its "
            "file. An imagePath leading out of LABELME_DIR (../, absolute, through a symlink) fails its file "
            "unless --allow-outside. A file that cannot be converted (bad JSON, unreadable picture, malformed "
            "shape, mask bitmap larger than its picture) is logged and listed with its reason, and the others go "
            "on; each picture and its mask are written atomically, together or not at all. Exit code 1 when any "
            "file failed. `scrapy segment train DEST OUT` trains on the result."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--labels", metavar="FILE",
                            help="class names, one a line, in mask-value order (labelme's labels.txt with "
                                 "__ignore__ and _background_ lines works as it is); default: every label "
                                 "found, sorted")
        parser.add_argument("--allow-outside", action="store_true",
                            help="follow an imagePath that leads out of LABELME_DIR (refused by default: a JSON "
                                 "file from elsewhere should not pull arbitrary files into the dataset)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def perform(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        refuse_unknown_options(args)
        if len(args) != 2:
            raise UsageError("give LABELME_DIR and DEST", print_help=False)
        configure_logging(self.settings)
        try:
            summary = convert_folder(args[0], args[1], labels=opts.labels, progress=not opts.no_progress,
                                     allow_outside=opts.allow_outside)
        except OSError as exc:
            raise UsageError(str(exc), print_help=False) from None
        print("\n".join(summary.lines()), flush=True)
        if summary.failed:
            self.exitcode = 1
