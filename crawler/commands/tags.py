"""``scrapy tags ACTION ...``: search the catalogue's tags, and make aliases and implications.

One command with sub-actions, so that everything about tags is found under one ``--help``. The
work is in ``catalog.tags``; this reads the arguments, turns a refused change into a usage error
(exit code 2, one clear message) and prints the result.
"""

from __future__ import annotations

import argparse
import json
from contextlib import closing
from pathlib import Path

from scrapy.exceptions import UsageError

from catalog import tags
from catalog.store import Catalog
from core.storage import catalog_path
from crawler.command_base import ActionCommand

# action: (operands, what it does). The order is the order --help lists them in.
ACTIONS = {
    "search": (["QUERY"], "tags whose name, alias, translation or model tag contains or resembles QUERY "
                          "(fuzzy), one line per canonical tag with its artwork and picture counts"),
    "pictures": (["TAG"], "the path of every picture carrying TAG: by any alias, as a Pixiv or a model tag, "
                          "or through an implication (kept ones unless --status says otherwise)"),
    "show": (["TAG"], "TAG's canonical tag, its aliases and what it implies"),
    "alias": (["ALIAS", "TAG"], "make ALIAS another name of TAG (TAG's own canonical tag, if it has one)"),
    "imply": (["TAG", "IMPLIED"], "a picture with TAG also counts as having IMPLIED"),
    "load": (["FILE"], "add the aliases and implications of a YAML, TOML or JSON file, all or none"),
    "seed": ([], "make each Pixiv tag's English translation an alias of the tag, where nothing conflicts"),
}


class Command(ActionCommand):
    name = "tags"
    actions = ACTIONS
    sets_up_logging = False
    about = (
        "Tags in the project's catalogue (OUTPUT_DIR/catalog.db or CATALOG_DB), compared through aliases\n"
        "and implications: names are matched whatever their case, full-width or half-width, spaces or\n"
        "underscores. Keep/drop rules (CURATE_RULES) and the export use the same canonical tags."
    )
    examples = (
        "scrapy tags search 莫娜",
        "scrapy tags alias 莫娜 'mona_(genshin_impact)'",
        "scrapy tags imply 'mona_(genshin_impact)' genshin_impact",
        "scrapy tags load tags.yaml   # aliases: {canonical: [alias, ...]}, implications: {tag: [tag, ...]}",
    )

    def short_desc(self) -> str:
        return "Search tags; make tag aliases (any language) and implications"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--limit", type=int, default=20, metavar="N", help="search: at most N tags (default 20)")
        parser.add_argument("--status", default="kept", metavar="LIST",
                            help="pictures: comma-separated statuses, of kept, dropped, failed (default kept)")
        parser.add_argument("--json", action="store_true", help="search, pictures, show: one JSON object per line")

    def act(self, action: str, operands: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        path = Path(catalog_path(self.settings))
        if action in ("search", "pictures", "show", "seed") and not path.is_file():
            raise UsageError(f"no catalogue at {path}: crawl first, or set OUTPUT_DIR or CATALOG_DB", print_help=False)
        with closing(Catalog(path)) as catalog:
            getattr(self, f"_{action}")(catalog, operands, opts)

    def _search(self, catalog: Catalog, operands: list[str], opts: argparse.Namespace) -> None:
        matches = tags.search(catalog.conn, operands[0], limit=opts.limit)
        if opts.json:
            for match in matches:
                print(json.dumps(match.as_dict(), ensure_ascii=False))
            return
        if not matches:
            print(f"no tag matches {operands[0]!r}")
            return
        width = max(len(m.tag) for m in matches)
        print(f"{'tag':<{width}}  artworks  pictures  kept  score  matched (other names)")
        for m in matches:
            others = [n for n in m.names if n not in (m.matched, m.tag)]
            also = f" ({', '.join(others)})" if others else ""
            print(f"{m.tag:<{width}}  {m.artworks:>8}  {m.pictures:>8}  {m.kept:>4}  {m.score:.2f}   {m.matched}{also}")

    def _pictures(self, catalog: Catalog, operands: list[str], opts: argparse.Namespace) -> None:
        statuses = [s.strip() for s in opts.status.split(",") if s.strip()]
        bad = [s for s in statuses if s not in ("kept", "dropped", "failed")]
        if bad or not statuses:
            raise UsageError(f"--status takes kept, dropped, failed; not {opts.status!r}", print_help=False)
        for picture in tags.pictures_with(catalog.conn, operands[0], statuses):
            if opts.json:
                print(json.dumps(picture.__dict__, ensure_ascii=False))
            elif picture.path:
                print(picture.path)

    def _show(self, catalog: Catalog, operands: list[str], opts: argparse.Namespace) -> None:
        index = tags.TagIndex.load(catalog.conn)
        canonical = index.canonical(operands[0])
        key = index.key(canonical)
        aliases = sorted(index.written[k] for k in index.aliases if k != key and index.key(index.written[k]) == key)
        known = tags.is_known(catalog.conn, operands[0], index)
        similar = [] if known else [m.tag for m in tags.search(catalog.conn, operands[0], limit=3, index=index)]
        implied = index.implied(canonical)
        shown = {"tag": operands[0], "canonical": canonical, "aliases": aliases, "implies": implied,
                 "known": known, "similar": similar}
        if opts.json:
            print(json.dumps(shown, ensure_ascii=False))
            return
        print(f"{operands[0]} → {canonical}" if canonical != operands[0] else canonical)
        print(f"  aliases: {', '.join(aliases) or '-'}")
        print(f"  implies: {', '.join(implied) or '-'}")
        if not known:
            print(f"  not in the catalogue: no artwork or picture carries {operands[0]!r} and no alias or implication "
                  "names it" + (f"; similar: {', '.join(similar)}" if similar else ""))
            print(f"  `scrapy tags search {operands[0]}` looks by similarity; `scrapy tags alias {operands[0]} TAG` "
                  "makes it another name of TAG")

    def _alias(self, catalog: Catalog, operands: list[str], opts: argparse.Namespace) -> None:
        alias, tag = operands
        for note in tags.add_alias(catalog.conn, alias, tag):
            print(note)
        print(f"{alias} → {tags.TagIndex.load(catalog.conn).canonical(alias)}")

    def _imply(self, catalog: Catalog, operands: list[str], opts: argparse.Namespace) -> None:
        tag, implied = operands
        tags.add_implication(catalog.conn, tag, implied)
        index = tags.TagIndex.load(catalog.conn)
        print(f"{index.canonical(tag)} implies {', '.join(index.implied(tag))}")

    def _load(self, catalog: Catalog, operands: list[str], opts: argparse.Namespace) -> None:
        summary = tags.load_file(catalog.conn, operands[0])
        for note in summary.notes:
            print(note)
        print(f"{operands[0]}: {summary.aliases} aliases, {summary.implications} implications")

    def _seed(self, catalog: Catalog, operands: list[str], opts: argparse.Namespace) -> None:
        summary = tags.seed_from_translations(catalog.conn)
        for why in summary.skipped:
            print(f"skipped {why}")
        print(f"{summary.added} translations added as aliases, {len(summary.skipped)} skipped")
