"""The models a user can name instead of a path: the catalogue (models/known_models.toml), the lock file
that pins what a first pull got, and turning a model setting's value into a local path.

Why a catalogue: the good models (WD14 taggers, imgutils' face and head detectors, CCIP) live on the
Hugging Face Hub or in GitHub releases under names nobody remembers, each with its own preprocessing.
One entry a model says where it is, what it does and how upstream runs it, so ``-s
TAGGER_PROJECT=wd-swinv2-tagger-v3`` is enough.

Why a lock file: a Hub branch moves and a mirror can serve other bytes. The first pull records the
resolved commit and every file's sha256 (pip's ``--require-hashes`` idea, trust on first use); later
pulls fetch that commit, and every load hashes the files again. A mismatch is refused and the file
is not used. The lock lives with the deployment (``MODELS_LOCK_FILE``, default ``models.lock.json``
beside ``scrapy.cfg``), not in the download cache: wiping or sharing the cache never resets what is
trusted, and the file can be copied to the next machine so that it gets the same bytes.

Downloads are models/download.py's; this module only reads and decides.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import EXIT_FAILED, ProjectError, SettingError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

log = logging.getLogger(__name__)

CATALOG_FILE = Path(__file__).with_name("known_models.toml")
SHIPPED_DIR = Path(__file__).with_name("shipped")
SOURCES = ("hub", "github-release", "bundled")
TASKS = ("tagger", "face-detector", "head-detector", "identity", "isaac", "face-heatmap", "classifier")

# Which catalogue tasks each model setting takes (a name of another task is refused with a reason).
SETTING_TASKS: dict[str, tuple[str, ...]] = {
    "TAGGER_PROJECT": ("tagger",),
    "FACES_YOLO_MODEL": ("face-detector", "head-detector"),
    "FACES_HEATMAP_MODEL": ("face-heatmap",),
    "IDENTITY_EMBEDDER": ("identity",),
    "CLASSIFIER_MODEL": ("classifier",),
    "ISAAC_MODEL_DIR": ("isaac",),
}
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class ModelError(ProjectError, RuntimeError):
    """A catalogue model that cannot be had or used; the message says which and why."""

    exit_code = EXIT_FAILED


class ModelUnavailable(ModelError):
    """Not downloaded, and it cannot be downloaded now (offline, or the host cannot be reached)."""


class ModelIntegrityError(ModelError):
    """A file differs from what the lock recorded at the first pull: refused, not used."""


class CatalogError(ProjectError, ValueError):
    """known_models.toml (or the lock file) is not what this code reads."""


@dataclass(frozen=True)
class ModelEntry:
    """One model of the catalogue (a table of known_models.toml)."""

    name: str
    task: str  # one of TASKS: which settings take it
    format: str  # how it is loaded: wd14, deepdanbooru, yolo, ccip, isaac
    source: str  # hub (Hugging Face), github-release (a zip of a release), bundled (in this repository)
    repo: str  # "owner/name" on the Hub or GitHub
    revision: str  # a Hub branch or commit; a GitHub release tag
    files: tuple[str, ...]  # Hub paths in the repo; the release asset; the folder under models/shipped/
    target: str  # what a setting is given: a file or folder inside the download ("." the whole)
    licence: str
    input_size: int
    preprocessing: str
    upstream: str  # the source file its facts were read from
    thresholds: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


def _entry(name: str, table: Any) -> ModelEntry:
    if not isinstance(table, dict):
        raise CatalogError(f"{CATALOG_FILE.name}: [{name}] is not a table")
    text = {key: table.get(key) for key in ("task", "format", "source", "repo", "revision", "target",
                                            "licence", "preprocessing", "upstream")}
    wrong = [key for key, value in text.items() if not isinstance(value, str)]
    if wrong or not isinstance(table.get("files"), list) or not table["files"]:
        raise CatalogError(f"{CATALOG_FILE.name}: [{name}] needs text {', '.join(wrong) or 'fields'} and a list of files")
    if table["source"] not in SOURCES or table["task"] not in TASKS or not _NAME.fullmatch(name):
        raise CatalogError(f"{CATALOG_FILE.name}: [{name}]: bad name, source or task")
    return ModelEntry(name=name, files=tuple(str(f) for f in table["files"]), input_size=int(table.get("input_size", 0)),
                      thresholds=dict(table.get("thresholds", {})), labels=tuple(table.get("labels", ())),
                      aliases=tuple(table.get("aliases", ())), **{k: str(v) for k, v in text.items()})


@lru_cache(maxsize=4)
def load_catalog(path: Path = CATALOG_FILE) -> dict[str, ModelEntry]:
    """Every entry by name (aliases are looked up by ``find``)."""
    with open(path, "rb") as handle:
        tables = tomllib.load(handle)
    return {name: _entry(name, table) for name, table in tables.items()}


def find(value: str, catalog: dict[str, ModelEntry] | None = None) -> ModelEntry | None:
    """The entry a name or alias stands for; None for anything else (a path)."""
    entries = load_catalog() if catalog is None else catalog
    if value in entries:
        return entries[value]
    return next((entry for entry in entries.values() if value in entry.aliases), None)


def entry_named(value: str) -> ModelEntry:
    entry = find(value)
    if entry is None:
        raise SettingError(f"{value!r} is not in the model catalogue; `scrapy models list` shows the names")
    return entry


# --- the lock file ----------------------------------------------------------------------------------


class ModelLock:
    """``{"version": 1, "models": {NAME: {"source", "repo", "revision", "files": {PATH: {"sha256",
    "size"}}, "pulled"}}}``, rewritten whole through a temporary file and a rename."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"{self.path}: not a readable lock file ({exc}); fix or delete it") from None
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, dict):
            raise CatalogError(f"{self.path}: not a lock file of this project (no \"models\" table)")
        return models

    def entry(self, name: str) -> dict[str, Any] | None:
        found = self.read().get(name)
        if found is None:
            return None
        files = found.get("files") if isinstance(found, dict) else None
        revision = found.get("revision") if isinstance(found, dict) else None
        if not isinstance(files, dict) or not isinstance(revision, str) or not all(
                isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()):
            raise CatalogError(f"{self.path}: the entry of {name} is damaged; fix or delete it")
        return dict(found)

    def write(self, name: str, record: dict[str, Any] | None) -> None:
        models = self.read()
        if record is None:
            models.pop(name, None)
        else:
            models[name] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"version": 1, "models": dict(sorted(models.items()))}, indent=2,
                                        ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)


# --- where the models go, from the settings ------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ModelPlaces:
    """Where downloads go and come from: the settings and huggingface_hub's own environment."""

    lock_file: Path
    releases_dir: Path  # GitHub release zips, unpacked (the Hub's files stay in huggingface_hub's cache)
    hub_cache: Path | None  # None: huggingface_hub's default (HF_HUB_CACHE, HF_HOME)
    hub_endpoint: str
    github_endpoint: str
    offline: bool  # HF_HUB_OFFLINE: nothing is downloaded, only what is already here is used
    auto_pull: bool  # a catalogue name in a setting is pulled on first use

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> ModelPlaces:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        hub_cache = settings.get("MODELS_HUB_CACHE") or None
        return cls(
            lock_file=Path(settings.get("MODELS_LOCK_FILE") or "models.lock.json"),
            releases_dir=Path(settings.get("MODELS_DIR") or cache_home / "anime-art-datasets" / "models"),
            hub_cache=Path(hub_cache) if hub_cache else None,
            hub_endpoint=(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/"),
            github_endpoint=(settings.get("MODELS_GITHUB_ENDPOINT") or "https://github.com").rstrip("/"),
            offline=_truthy(os.environ.get("HF_HUB_OFFLINE")),
            auto_pull=settings.getbool("MODELS_AUTO_PULL", True),
        )


def is_commit(revision: str) -> bool:
    return bool(_COMMIT.fullmatch(revision))


def resolve_setting(settings: BaseSettings, setting: str) -> str:
    """The setting's value as a local path: a catalogue name becomes its files' place (pulled on
    first use where the network allows, checked against the lock every time); a path is returned
    as given; empty stays empty."""
    value = (settings.get(setting) or "").strip()
    if not value:
        return ""
    entry = find(value)
    if entry is None:
        return value
    tasks = SETTING_TASKS[setting]
    if entry.task not in tasks:
        raise SettingError(f"{setting}={value}: that catalogue model is a {entry.task}; {setting} takes a "
                           f"{' or '.join(tasks)}")
    from models.download import ModelStore

    try:
        return str(ModelStore(ModelPlaces.from_settings(settings)).ensure(entry))
    except ModelError as error:
        raise type(error)(f"{setting}={value}: {error}") from None
