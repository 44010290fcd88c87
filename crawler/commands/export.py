"""``scrapy export DEST``: write the catalogue's pictures out as a training data set.

A thin command over ``jobs.export``: it reads the options and prints the summary; an export that
cannot be made is a usage error (exit code 2, one clear message: ``crawler/command_base.py``). No reactor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scrapy.exceptions import UsageError
from scrapy.utils.log import configure_logging

from core.storage import output_dir
from crawler.command_base import OfflineCommand, refuse_unknown_options, take_output_lock
from jobs.export import (
    FORMATS,
    UNDERSCORE_STYLES,
    ExportOptions,
    export,
    parse_split,
    parse_statuses,
    parse_tags,
    parse_where,
)
from models.crops import CROP_KINDS, FITS


class Command(OfflineCommand):

    def syntax(self) -> str:
        return "[options] DEST"

    def short_desc(self) -> str:
        return "Export the catalogue's pictures as a training data set (imagefolder, kohya, hf, webdataset)"

    def long_desc(self) -> str:
        return (
            "Writes the catalogue's kept pictures (or those --where selects) to DEST as a data set: "
            "imagefolder (DEST/{split}/{class}/, for torchvision ImageFolder and Keras), kohya (sd-scripts' "
            "DreamBooth folders DEST/{split}/{repeats}_{trigger} {class}/ of pictures with .txt tag captions, "
            "DEST/dataset.toml for --dataset_config, and the fine-tune DEST/meta_cap_{split}.json), "
            "hf (Hugging Face imagefolder with a metadata.jsonl per split) or webdataset "
            "(DEST/{split}-NNNNNN.tar shards, EXPORT_SHARD_SIZE samples "
            "each). Exact (sha256) and near (perceptual hash, EXPORT_PHASH_DISTANCE bits) duplicates are left "
            "out and listed in DEST/manifest.json, with the counts per split and class, the query and the model "
            "versions. --crop head|upper_body|face exports one picture per stored face box instead, and --size N "
            "brings every picture to one training size (--fit pad|crop|resize). "
            "The split is by artwork, from a hash of the seed and the artwork id. The same catalogue "
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
                 "(e.g. '{\"if\": \"tag\", \"any\": [\"mona\"]}'; see stages/decide.py). The SQL may read "
                 "only the picture and tag tables and is stopped after EXPORT_WHERE_TIMEOUT seconds (default 30)",
        )
        parser.add_argument("--split", metavar="TRAIN,VAL[,TEST]",
                            help="shares of the artworks per split. Default 0.9,0.1; kohya 1,0 (sd-scripts trains on "
                                 "all it is given: its dataset.toml names the train folders only)")
        parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the split (default 0)")
        parser.add_argument("--faces", action="store_true", help="export the stored face crops (same as --crop face)")
        parser.add_argument(
            "--crop", choices=CROP_KINDS,
            help="one picture per face instead of whole pictures (key suffix _f0, _f1...): face (the stored face "
                 "crops), head or upper_body (cut from the stored picture around each stored face box, at export "
                 "time; ratios in models/crops.py). Pictures without a face are skipped, with the reason. "
                 "Default none",
        )
        parser.add_argument("--size", type=int, metavar="N",
                            help="bring every exported picture to N px (see --fit); default: as stored")
        parser.add_argument("--fit", choices=FITS,
                            help="with --size: pad (letterbox to NxN with --pad-colour), crop (a square on the "
                                 "face, or the centre, to NxN) or resize (short side N, aspect kept, both sides cut "
                                 "down to a multiple of --multiple). Default resize")
        parser.add_argument("--pad-colour", metavar="COLOUR",
                            help="--fit pad: the letterbox colour (a name or #rrggbb), or edge to repeat the "
                                 "picture's border pixels. Default white")
        parser.add_argument("--multiple", type=int, metavar="M",
                            help="--fit resize: both sides a multiple of M px (default 64, as kohya's buckets)")
        parser.add_argument("--max-upscale", type=float, metavar="X",
                            help="enlarge no picture more than X times. Default: 1 (never) for whole pictures, 8 "
                                 "for --crop (a head is a small part of a picture); the summary and the manifest "
                                 "list what was enlarged. pad and crop skip a picture that would need more (listed "
                                 "in the manifest); resize keeps it smaller")
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
        parser.add_argument("--caption-underscores", choices=UNDERSCORE_STYLES,
                            help="tags in captions as written (keep: long_hair) or with spaces (space: long hair; "
                                 "tags of 3 characters or less, like ^_^, keep theirs). Default: space for kohya, "
                                 "keep for the other formats")
        parser.add_argument("--undesired-tags", metavar="TAG,TAG",
                            help="tags left out of captions, matched like catalog/tags.py (case, width, '_' or "
                                 "space, aliases); default EXPORT_UNDESIRED_TAGS")
        parser.add_argument("--no-rating-tags", action="store_true",
                            help="leave rating tags (rating:safe, a tagger's Rating category) out of captions")
        parser.add_argument("--repeats", type=int, metavar="N",
                            help="kohya: num_repeats of every class folder. Default: EXPORT_KOHYA_REPEATS (10) for "
                                 "one class; with several, balanced (the largest class gets it, smaller ones more)")
        parser.add_argument("--exclude-ai", action="store_true",
                            help="leave out AI-generated works (Pixiv's aiType 2). Without it they are exported, "
                                 "with ai-generated in their captions and the summary saying how many")
        parser.add_argument("--force", action="store_true", help="replace a DEST that is not empty")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def perform(self, args: list[str], opts: argparse.Namespace) -> None:
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
                split=parse_split(opts.split) if opts.split else None, seed=opts.seed, faces=opts.faces, class_from=opts.class_from,
                statuses=parse_statuses(opts.status) if opts.status else None, force=opts.force, exclude_ai=opts.exclude_ai,
                progress=not opts.no_progress, caption_underscores=opts.caption_underscores,
                undesired_tags=parse_tags(opts.undesired_tags), rating_tags=False if opts.no_rating_tags else None,
                repeats=opts.repeats, crop=opts.crop, size=opts.size, fit=opts.fit, pad_colour=opts.pad_colour,
                multiple=opts.multiple, max_upscale=opts.max_upscale,
            )
            result = export(self.settings, options)
        finally:
            if lock is not None:
                lock.release()
        print("\n".join(result.lines()), flush=True)
