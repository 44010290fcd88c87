"""``scrapy models ACTION ...``: the model catalogue (models/known_models.toml) on this machine.

The work is in ``models.registry`` (the catalogue, the lock file) and ``models.download`` (pulling
through huggingface_hub, a GitHub release zip, checking sha256); this reads the arguments and prints.
A model that cannot be had (offline, a changed file) is one ``scrapy models: error: ...`` line, exit 1.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from crawler.command_base import ActionCommand

if TYPE_CHECKING:
    from models.download import ModelStore
    from models.registry import ModelEntry

ACTIONS = {
    "list": ([], "every model the catalogue knows: its task, source, licence and whether it is here"),
    "pull": (["NAME"], "download NAME (Hub models through huggingface_hub: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE); "
                       "the first pull records the commit and each file's sha256 in MODELS_LOCK_FILE, later ones "
                       "must match it"),
    "verify": ([], "hash the files of the named models (default: every pulled one) against the lock"),
    "path": (["NAME"], "print the local path a setting gets for NAME (nothing is downloaded)"),
    "remove": (["NAME"], "delete NAME's downloaded files; --forget also drops its lock entry"),
}


class Command(ActionCommand):
    name = "models"
    actions = ACTIONS
    variadic = frozenset({"verify"})
    about = (
        "Pretrained models one command away: WD14 taggers, imgutils' face and head detectors, CCIP, the\n"
        "DeepDanbooru release, and the weights that ship in this repository. Any model setting takes a\n"
        "name from `scrapy models list` as well as a path (docs/models.md)."
    )
    examples = (
        "scrapy models list",
        "scrapy models pull wd-swinv2-tagger-v3",
        "scrapy curate -s TAGGER_PROJECT=wd-swinv2-tagger-v3",
        "scrapy models verify",
        "HF_HUB_OFFLINE=1 scrapy models path face-detect-v1.4-s",
    )

    def short_desc(self) -> str:
        return "List, pull, verify and remove the pretrained models the catalogue knows (huggingface_hub)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        group = parser.add_argument_group("remove")
        group.add_argument("--forget", action="store_true",
                           help="also drop the model's lock entry: the next pull trusts what it gets")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")

    def act(self, action: str, operands: list[str], opts: argparse.Namespace) -> None:
        from models.download import ModelStore
        from models.registry import ModelPlaces, entry_named, load_catalog

        assert self.settings is not None
        store = ModelStore(ModelPlaces.from_settings(self.settings), progress=not opts.no_progress)
        if action == "list":
            self.list(store, load_catalog())
        elif action == "pull":
            entry = entry_named(operands[0])
            path = store.pull(entry)
            print(f"{entry.name}: {path}")
        elif action == "path":
            entry = entry_named(operands[0])
            found = store.installed(entry)
            if found is None:
                from models.registry import ModelUnavailable

                raise ModelUnavailable(f"{entry.name} is not downloaded; run `scrapy models pull {entry.name}`")
            print(found)
        elif action == "verify":
            names = operands or [name for name in load_catalog() if store.lock.entry(name) is not None]
            if not names:
                print(f"No pulled model to verify (lock file {store.lock.path}).")
            for name in names:
                entry = entry_named(name)
                found = store.installed(entry)
                if found is None:
                    from models.registry import ModelUnavailable

                    raise ModelUnavailable(f"{name} is not downloaded; run `scrapy models pull {name}`")
                print(f"{name}: ok ({found})")
        else:
            entry = entry_named(operands[0])
            removed = store.remove(entry, forget=opts.forget)
            print(f"{entry.name}: removed {len(removed)} file(s)" + ("; its lock entry is gone" if opts.forget else ""))

    @staticmethod
    def list(store: ModelStore, catalog: dict[str, ModelEntry]) -> None:
        rows = [("NAME", "TASK", "SOURCE", "LICENCE", "HERE")]
        for entry in catalog.values():
            if entry.source == "bundled":
                here = "shipped" if store.installed(entry) is not None else "missing from this checkout"
            else:
                record = store.lock.entry(entry.name)
                here = f"pulled at {record['revision'][:10]}" if record else "not pulled"
            rows.append((entry.name + (f" ({', '.join(entry.aliases)})" if entry.aliases else ""), entry.task,
                         f"{entry.source} {entry.repo}".strip(), entry.licence, here))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
