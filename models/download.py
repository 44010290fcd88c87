"""Getting a catalogue model onto this machine and checking it: ``ModelStore``.

* Hub models go through ``huggingface_hub.hf_hub_download``: its cache (``HF_HOME``/``HF_HUB_CACHE``),
  its resume of ``.incomplete`` files, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, a token from ``HF_TOKEN`` and
  its progress bars. Nothing here speaks HTTP to the Hub.
* A GitHub release zip (DeepDanbooru's project) goes through ``fetch_url``: one small download path
  with resume (an HTTP range request on the ``.part`` file) and a progress bar, then a checked unzip
  (no absolute or ``..`` names, no links, a size cap) into ``MODELS_DIR/NAME/``, renamed into place.
* Either way the files' sha256 are compared with the lock (models/registry.py) or recorded there
  on the first pull. A file that differs is deleted from the cache and the pull is refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from core.progress import progress_bar
from models.inference import file_sha256
from models.registry import (
    SHIPPED_DIR,
    ModelEntry,
    ModelError,
    ModelIntegrityError,
    ModelLock,
    ModelPlaces,
    ModelUnavailable,
    is_commit,
)

log = logging.getLogger(__name__)

MAX_UNPACKED = 8 << 30  # bytes a release zip may unpack to (the DeepDanbooru project is ~0.7 GB)
MAX_MEMBERS = 10_000
CHUNK = 1 << 20
TIMEOUT = 60.0


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _file_record(path: Path) -> dict[str, Any]:
    return {"sha256": file_sha256(path), "size": path.stat().st_size}


# --- one URL to one file, resumable ----------------------------------------------------------------


def fetch_url(url: str, dest: Path, *, progress: bool = True, timeout: float = TIMEOUT) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``: a ``.part`` left by an interrupted run is
    continued with a range request (a server that answers 200 instead starts it over); the finished
    file is renamed into place. Redirects are followed (GitHub sends release assets to a CDN)."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "anime-art-datasets (models)"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part already holds the whole file
            os.replace(part, dest)
            return dest
        raise ModelError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelUnavailable(f"{url} cannot be reached ({reason})") from None
    with response:
        resumed = response.status == 206 and have > 0
        length = int(response.headers.get("Content-Length") or 0)
        total = (have if resumed else 0) + length
        bar = progress_bar(dest.name, total, enabled=progress)
        bar.update(have if resumed else 0)
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except OSError as exc:
            raise ModelUnavailable(f"{url}: the download broke off ({exc}); pull again to resume it") from None
        finally:
            bar.close()
    if length and part.stat().st_size != total:
        raise ModelUnavailable(f"{url}: the download broke off at {part.stat().st_size} of {total} bytes; "
                               "pull again to resume it")
    os.replace(part, dest)
    return dest


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host opens: with the network off, huggingface_hub would
    retry for ~25 s before saying so. Behind a proxy (``HTTPS_PROXY``...) the answer is always yes:
    only the proxy knows."""
    import socket
    import urllib.parse

    if urllib.request.getproxies():
        return True
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


def safe_unzip(archive: Path, folder: Path) -> list[str]:
    """Unpack ``archive`` into ``folder`` (made fresh), refusing what could write elsewhere or fill the
    disk; the member paths written, relative, with ``/``."""
    written: list[str] = []
    with zipfile.ZipFile(archive) as zipped:
        members = [m for m in zipped.infolist() if not m.is_dir()]
        if len(members) > MAX_MEMBERS or sum(m.file_size for m in members) > MAX_UNPACKED:
            raise ModelError(f"{archive.name}: more than {MAX_MEMBERS} files or {MAX_UNPACKED >> 30} GB unpacked")
        for member in members:
            name = PurePosixPath(member.filename)
            mode = member.external_attr >> 16
            if name.is_absolute() or ".." in name.parts or "\\" in member.filename or stat.S_ISLNK(mode):
                raise ModelError(f"{archive.name}: refused member {member.filename!r} (absolute, .. or a link)")
        for member in members:
            target = folder.joinpath(*PurePosixPath(member.filename).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
            written.append(PurePosixPath(member.filename).as_posix())
    return written


# --- the store ---------------------------------------------------------------------------------------------


class ModelStore:
    """Pull, find, check and remove catalogue models in the places ``ModelPlaces`` names."""

    def __init__(self, places: ModelPlaces, progress: bool = True):
        self.places = places
        self.lock = ModelLock(places.lock_file)
        self.progress = progress

    # --- where a model is ----------------------------------------------------------------------------
    def release_folder(self, entry: ModelEntry) -> Path:
        return self.places.releases_dir / entry.name

    def _hub_cached(self, entry: ModelEntry, revision: str) -> dict[str, Path] | None:
        """The entry's files in huggingface_hub's cache at ``revision`` (a commit), or None."""
        from huggingface_hub import try_to_load_from_cache

        found = {}
        for name in entry.files:
            path = try_to_load_from_cache(entry.repo, name, cache_dir=self.places.hub_cache, revision=revision)
            if not isinstance(path, str):
                return None
            found[name] = Path(path)
        return found

    def _local_files(self, entry: ModelEntry, record: dict[str, Any]) -> dict[str, Path] | None:
        if entry.source == "hub":
            return self._hub_cached(entry, record["revision"])
        folder = self.release_folder(entry) / "project"
        files = {name: folder.joinpath(*PurePosixPath(name).parts) for name in record["files"]}
        return files if all(path.is_file() for path in files.values()) else None

    def _target(self, entry: ModelEntry, files: dict[str, Path]) -> Path:
        """What a setting is given: the target file or folder inside the download."""
        if entry.source == "bundled":
            return SHIPPED_DIR / entry.target
        if entry.source == "github-release":
            root = self.release_folder(entry) / "project"
        else:
            first_name, first_path = next(iter(files.items()))
            root = first_path.parents[len(PurePosixPath(first_name).parts) - 1]  # the snapshot folder
        return root if entry.target == "." else root.joinpath(*PurePosixPath(entry.target).parts)

    def check(self, entry: ModelEntry, record: dict[str, Any], files: dict[str, Path]) -> None:
        """Every file's sha256 against the lock; a mismatch is refused (ModelIntegrityError)."""
        for name, expected in record["files"].items():
            path = files.get(name)
            if path is None or not path.is_file():
                raise ModelUnavailable(f"{entry.name}: {name} is missing; run `scrapy models pull {entry.name}`")
            actual = file_sha256(path)
            if actual != expected["sha256"]:
                raise ModelIntegrityError(
                    f"{entry.name}: {name} does not match the lock {self.lock.path} (sha256 {actual[:16]}…, "
                    f"locked {expected['sha256'][:16]}…): refused, not used. If the change is expected: "
                    f"scrapy models remove {entry.name} --forget; scrapy models pull {entry.name}")

    def installed(self, entry: ModelEntry) -> Path | None:
        """The checked local path of a pulled model, or None when it is not here; never downloads."""
        if entry.source == "bundled":
            path = SHIPPED_DIR / entry.target
            return path if path.exists() else None
        record = self.lock.entry(entry.name)
        if record is None:
            return None
        files = self._local_files(entry, record)
        if files is None:
            return None
        self.check(entry, record, files)
        return self._target(entry, files)

    def ensure(self, entry: ModelEntry) -> Path:
        """The local path, pulling first when it is not here and pulling is allowed."""
        path = self.installed(entry)
        if path is not None:
            return path
        if entry.source == "bundled":
            raise ModelUnavailable(f"{entry.name}: the shipped weights {SHIPPED_DIR / entry.target} are missing "
                                   "from this checkout")
        if self.places.offline or not self.places.auto_pull:
            why = "HF_HUB_OFFLINE is set" if self.places.offline else "MODELS_AUTO_PULL is off"
            raise ModelUnavailable(f"not downloaded and {why}; run `scrapy models pull {entry.name}` where the "
                                   "network allows")
        log.info("Models: %s is not here yet; pulling it (%s %s)", entry.name, entry.source, entry.repo)
        return self.pull(entry)

    # --- pull ----------------------------------------------------------------------------------------
    def pull(self, entry: ModelEntry) -> Path:
        """Download what is missing, check it against the lock (or record it there); the local path."""
        if entry.source == "bundled":
            return self.ensure(entry)
        record = self.lock.entry(entry.name)
        if entry.source == "hub":
            files, revision = self._pull_hub(entry, record)
        else:
            files, revision = self._pull_release(entry, record)
        if record is None:
            record = {"source": entry.source, "repo": entry.repo, "revision": revision,
                      "files": {name: _file_record(path) for name, path in files.items()}, "pulled": _now()}
            self.lock.write(entry.name, record)
            log.info("Models: %s pulled at %s; its sha256 are in %s", entry.name, revision, self.lock.path)
        else:
            try:
                self.check(entry, record, files)
            except ModelIntegrityError:
                self._discard(entry, files)
                raise
        return self._target(entry, files)

    def _pull_hub(self, entry: ModelEntry, record: dict[str, Any] | None) -> tuple[dict[str, Path], str]:
        import httpx2  # huggingface_hub's HTTP client: what a transfer broken off for good raises
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
        )

        revision = record["revision"] if record else entry.revision
        cached = self._hub_cached(entry, revision) if is_commit(revision) else None
        if cached is None and not self.places.offline and not reachable(self.places.hub_endpoint):
            raise ModelUnavailable(f"cannot download {entry.name} ({entry.repo}): the Hub at "
                                   f"{self.places.hub_endpoint} cannot be reached")
        files: dict[str, Path] = {}
        for name in entry.files:
            try:
                path = Path(hf_hub_download(
                    entry.repo, name, revision=revision, cache_dir=self.places.hub_cache,
                    endpoint=self.places.hub_endpoint, local_files_only=self.places.offline))
            except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
                why = "HF_HUB_OFFLINE is set" if self.places.offline else \
                    f"the Hub at {self.places.hub_endpoint} cannot be reached"
                raise ModelUnavailable(f"cannot download {entry.name} ({entry.repo}/{name}): {why}") from exc
            except (HfHubHTTPError, EntryNotFoundError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelError(f"cannot download {entry.name} ({entry.repo}/{name} at {revision}): {first}") from exc
            except (OSError, httpx2.TransportError) as exc:  # a broken-off transfer, a full disk
                raise ModelUnavailable(f"cannot download {entry.name} ({entry.repo}/{name}): {exc}; pull "
                                       "again") from exc
            commit = path.parents[len(PurePosixPath(name).parts) - 1].name
            if not is_commit(revision) and is_commit(commit):
                revision = commit  # the rest of the files from the same commit
            files[name] = path
        return files, revision

    def _pull_release(self, entry: ModelEntry, record: dict[str, Any] | None) -> tuple[dict[str, Path], str]:
        revision = entry.revision
        if record is not None:
            files = self._local_files(entry, record)
            if files is not None:
                return files, revision
        folder = self.release_folder(entry)
        asset = entry.files[0]
        url = f"{self.places.github_endpoint}/{entry.repo}/releases/download/{revision}/{asset}"
        if self.places.offline:
            raise ModelUnavailable(f"cannot download {entry.name} ({url}): HF_HUB_OFFLINE is set")
        archive = fetch_url(url, folder / asset, progress=self.progress)
        unpacking = folder / "project.unpacking"
        shutil.rmtree(unpacking, ignore_errors=True)
        try:
            names = safe_unzip(archive, unpacking)
        except zipfile.BadZipFile as exc:
            archive.unlink(missing_ok=True)
            raise ModelError(f"{entry.name}: {url} is not a zip ({exc})") from None
        shutil.rmtree(folder / "project", ignore_errors=True)
        os.replace(unpacking, folder / "project")
        archive.unlink()
        return {name: folder / "project" / name for name in names}, revision

    def _discard(self, entry: ModelEntry, files: dict[str, Path]) -> None:
        """Delete copies that failed the check, so that a later pull fetches them again."""
        for path in files.values():
            real = path.resolve()
            path.unlink(missing_ok=True)
            if real != path:
                real.unlink(missing_ok=True)

    # --- remove ------------------------------------------------------------------------------------------
    def remove(self, entry: ModelEntry, forget: bool = False) -> list[Path]:
        """Delete the model's downloaded files (a Hub blob another snapshot still links to stays); with
        ``forget``, its lock entry too, so that the next pull trusts what it gets. The paths deleted."""
        if entry.source == "bundled":
            raise ModelError(f"{entry.name} ships with the project; there is nothing to remove")
        removed: list[Path] = []
        record = self.lock.entry(entry.name)
        if entry.source == "github-release":
            folder = self.release_folder(entry)
            if folder.exists():
                shutil.rmtree(folder)
                removed.append(folder)
        elif record is not None:
            cached = self._hub_cached(entry, record["revision"]) or {}
            for path in cached.values():
                blob = path.resolve()
                path.unlink(missing_ok=True)
                removed.append(path)
                if blob != path and not self._still_linked(path, blob):
                    blob.unlink(missing_ok=True)
        if forget:
            self.lock.write(entry.name, None)
        return removed

    @staticmethod
    def _still_linked(snapshot_file: Path, blob: Path) -> bool:
        repo_folder = next((p for p in snapshot_file.parents if p.name == "snapshots"), None)
        if repo_folder is None:
            return False
        return any(link.is_symlink() and link.resolve() == blob for link in repo_folder.rglob("*"))
