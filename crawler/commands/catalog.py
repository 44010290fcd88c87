"""``scrapy catalog merge DEST SRC [SRC ...]``: fold crawler nodes' catalogues into one.

In a distributed crawl (``SCHEDULER_BACKEND=redis``) each node writes its own SQLite catalogue:
SQLite takes one writer at a time and is unsafe on network file systems, and a node that loses
its link to the others still records everything it fetched. This command brings them together
afterwards; the rules are ``Catalog.merge_from``'s. DEST is created when missing. No reactor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scrapy.exceptions import UsageError

from catalog.store import Catalog
from crawler.command_base import OfflineCommand, split_action

ACTIONS = {"merge": (["DEST", "SRC", "[SRC ...]"], "fold SRC catalogues into DEST")}


def _catalog_file(path: str) -> Path:
    """A catalog.db, or an OUTPUT_DIR holding one."""
    given = Path(path)
    return given / "catalog.db" if given.is_dir() else given


class Command(OfflineCommand):

    def syntax(self) -> str:
        return "merge [--node NAME] DEST SRC [SRC ...]"

    def short_desc(self) -> str:
        return "Merge crawler nodes' catalogues into one"

    def long_desc(self) -> str:
        return (
            "merge DEST SRC...: fold each SRC catalogue (a catalog.db, or an OUTPUT_DIR holding one) into DEST, "
            "one transaction per SRC. Artworks by id, the newer updateDate winning with all its pages; tags; "
            "crawls appended once each with the node they ran on; search coverage, the deeper mark. Merging "
            "the same SRC again changes nothing. Files are not copied: the catalogue's paths are relative to "
            "OUTPUT_DIR, so copy the nodes' images/ and originals/ folders into DEST's folder."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--node", metavar="NAME", action="append", default=[],
            help="name recorded in crawls.node for the crawls of the SRC at the same position (default: its path)",
        )

    def perform(self, args: list[str], opts: argparse.Namespace) -> None:
        _, paths = split_action(args, ACTIONS)
        if len(paths) < 2:
            raise UsageError("merge needs DEST and at least one SRC")
        dest, sources = _catalog_file(paths[0]), [_catalog_file(p) for p in paths[1:]]
        if len(opts.node) > len(sources):
            raise UsageError("more --node names than SRC catalogues")
        for source in sources:
            if not source.is_file():
                raise UsageError(f"no catalogue at {source}", print_help=False)
        catalog = Catalog(dest)
        try:
            for index, source in enumerate(sources):
                node = opts.node[index] if index < len(opts.node) else None
                counts = catalog.merge_from(source, node=node)
                skipped = counts.pop("tables_not_merged")
                print(
                    f"{source} -> {dest}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
                    + (f"; not merged (not crawl results): {', '.join(skipped)}" if skipped else ""),
                    flush=True,
                )
            summary = catalog.summary()
        finally:
            catalog.close()
        print(
            f"{dest}: {summary['artworks']} artworks, images kept {summary['images_kept']}, "
            f"dropped {summary['images_dropped']}, failed {summary['images_failed']}",
            flush=True,
        )
