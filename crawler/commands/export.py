"""``scrapy export DEST``: write the catalogue's pictures out as a training data set.

A thin command over ``crawler.export``: it reads the options, turns an export that cannot be made
into a usage error (exit code 2, one clear message), and prints the summary. No reactor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scrapy.exceptions import UsageError
from scrapy.utils.log import configure_logging

from crawler.command_base import OfflineCommand, refuse_unknown_options, take_output_lock
from crawler.export import FORMATS, ExportError, ExportOptions, export, parse_split, parse_statuses, parse_where
from crawler.storage import output_dir


class Command(OfflineCommand):

    def syntax(self) -> str:
        return "[options] DEST"

    def short_desc(self) -> str:
        return "Export the catalogue's pictures as a training data set (imagefolder, kohya, hf, webdataset)"

    def long_desc(self) -> str:
        return (
            "Writes the catalogue's kept pictures (or those --where selects) to DEST as a data set: "
            "imagefolder (DEST/{split}/{class}/, for torchvision ImageFolder and Keras), kohya (pictures with "
            ".txt tag captions and sd-scripts' meta_cap_{split}.json), hf (Hugging Face imagefolder with a "
            "metadata.jsonl per split) or webdataset (DEST/{split}-NNNNNN.tar shards, EXPORT_SHARD_SIZE samples "
            "each). Exact (sha256) and near (perceptual hash, EXPORT_PHASH_DISTANCE bits) duplicates are left "
            "out and listed in DEST/manifest.json, with the counts per split and class, the query and the model "
            "versions. The split is by artwork, from a hash of the seed and the artwork id. The same catalogue "
            "and options give byte-identical output. DEST is written whole or not at all: an export that "
            "could use none of its pictures fails and leaves DEST as it was. DEST may be neither OUTPUT_DIR, "
            "a folder holding it or the catalogue, nor inside the crawl's own folders (images, originals, "
            "dropped, faces, sprites, logs)."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--format", choices=FORMATS, default="imagefolder", help="the layout (default imagefolder)")
        parser.add_argument(
            "--where", metavar="EXPR",
            help="a SQL boolean expression over images i and artworks a (e.g. \"a.x_restrict = 0 AND "
                 "i.classifier_score >= 0.8\"), or curation rules as JSON/YAML or a .json/.yaml file "
                 "(e.g. '{\"if\": \"tag\", \"any\": [\"mona\"]}'; see pipelines/decide.py). The SQL may read "
                 "only the picture and tag tables and is stopped after EXPORT_WHERE_TIMEOUT seconds (default 30)",
        )
        parser.add_argument("--split", metavar="TRAIN,VAL[,TEST]", default="0.9,0.1",
                            help="shares of the artworks per split (default 0.9,0.1)")
        parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the split (default 0)")
        parser.add_argument("--faces", action="store_true", help="export the face crops instead of whole pictures")
        parser.add_argument(
            "--class-from", metavar="SOURCE", default="auto",
            help="the class of a picture: classifier (its stored label; 'unlabelled' without one), decision "
                 "(kept/dropped), none (one class 'all'), or tags:TAG,TAG (the first of these model or Pixiv "
                 "tags it has, else 'other'). Default auto: classifier when any selected picture has a label, "
                 "else none",
        )
        parser.add_argument("--status", metavar="LIST",
                            help="pictures of these statuses: kept, dropped or kept,dropped (default kept; "
                                 "kept,dropped with --class-from decision)")
        parser.add_argument("--force", action="store_true", help="replace a DEST that is not empty")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        refuse_unknown_options(args)
        if len(args) != 1:
            raise UsageError("give one DEST folder", print_help=False)
        configure_logging(self.settings)
        lock = None
        if Path(args[0]).resolve().is_relative_to(output_dir(self.settings).resolve()):
            lock = take_output_lock(self, "scrapy export")  # DEST is in OUTPUT_DIR: one writer there
            if lock is None:
                return
        try:
            options = ExportOptions.from_settings(
                self.settings, args[0], format=opts.format, selection=parse_where(opts.where),
                split=parse_split(opts.split), seed=opts.seed, faces=opts.faces, class_from=opts.class_from,
                statuses=parse_statuses(opts.status) if opts.status else None, force=opts.force,
                progress=not opts.no_progress,
            )
            result = export(self.settings, options)
        except ExportError as exc:
            raise UsageError(str(exc), print_help=False) from None
        finally:
            if lock is not None:
                lock.release()
        print("\n".join(result.lines()), flush=True)
