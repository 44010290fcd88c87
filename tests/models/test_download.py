"""Pulling catalogue models through huggingface_hub and a GitHub release zip, against the local Hub
(mocksites/hub.py): the lock, a second pull, a changed file, an interrupted download, offline."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from models.download import ModelStore, fetch_url, safe_unzip
from models.inference import file_sha256
from models.registry import ModelIntegrityError, ModelPlaces, ModelUnavailable, find
from tests.models.hub_fixtures import hub_repos

TAGGER = "wd-swinv2-tagger-v3"


def places(tmp_path: Path, endpoint: str, offline: bool = False) -> ModelPlaces:
    return ModelPlaces(lock_file=tmp_path / "models.lock.json", releases_dir=tmp_path / "releases",
                       hub_cache=tmp_path / "hub-cache", hub_endpoint=endpoint, github_endpoint=endpoint,
                       offline=offline, auto_pull=True)


def model_requests(hub) -> list[dict]:
    """What was asked of the Hub and its CDN, leaving out huggingface_hub's own /api/ calls."""
    return [r for r in hub.stats()["requests"] if not r["path"].startswith("/api/")]


@pytest.fixture
def repos(tmp_path_factory) -> Path:
    return hub_repos(tmp_path_factory.mktemp("repos"), big_model_bytes=24_000_000)


def test_a_pull_records_the_commit_and_hashes_and_a_second_pull_downloads_nothing(tmp_path, make_hub, repos):
    hub = make_hub(repos)
    store = ModelStore(places(tmp_path, hub.api), progress=False)
    path = store.pull(find(TAGGER))
    assert sorted(p.name for p in path.iterdir()) == ["model.onnx", "selected_tags.csv"]
    commit = hub.stats()["repos"][f"SmilingWolf/{TAGGER}"]
    lock = json.loads((tmp_path / "models.lock.json").read_text())["models"][TAGGER]
    assert lock["revision"] == commit and lock["repo"] == f"SmilingWolf/{TAGGER}"
    source = repos / "hub" / "SmilingWolf" / TAGGER
    assert lock["files"] == {name: {"sha256": file_sha256(source / name), "size": (source / name).stat().st_size}
                             for name in ("model.onnx", "selected_tags.csv")}
    downloads = model_requests(hub)
    assert any(r["path"].startswith("/lfs/") for r in downloads)  # the .onnx went through the CDN, as on the Hub

    hub.control("/_mock/reset-stats", "POST")
    assert store.pull(find(TAGGER)) == path
    assert store.installed(find(TAGGER)) == path
    assert model_requests(hub) == []


def test_a_changed_file_is_refused_and_not_used(tmp_path, make_hub, repos):
    hub = make_hub(repos)
    store = ModelStore(places(tmp_path, hub.api), progress=False)
    path = store.pull(find(TAGGER))
    lock_before = (tmp_path / "models.lock.json").read_text()
    # on disk: a blob changed after the pull; every load hashes it again
    blob = (path / "selected_tags.csv").resolve()
    original = blob.read_bytes()
    blob.write_bytes(original + b"999,evil,0,1\n")
    with pytest.raises(ModelIntegrityError, match=r"selected_tags.csv does not match the lock .*refused, not used"):
        store.installed(find(TAGGER))
    blob.write_bytes(original)
    assert store.installed(find(TAGGER)) == path
    # on the server: the same commit now serves other bytes; a fresh pull is refused and leaves nothing
    store.remove(find(TAGGER))
    hub.control(f"/_mock/tamper?repo=SmilingWolf/{TAGGER}&path=model.onnx", "POST")
    with pytest.raises(ModelIntegrityError, match="model.onnx does not match the lock"):
        store.pull(find(TAGGER))
    assert store.installed(find(TAGGER)) is None  # the bad copy was deleted, nothing to load
    assert (tmp_path / "models.lock.json").read_text() == lock_before


def test_an_interrupted_download_resumes(tmp_path, make_hub, repos):
    hub = make_hub(repos)
    store = ModelStore(places(tmp_path, hub.api), progress=False)
    name, size = "wd-vit-tagger-v3", 24_000_000
    hub.control("/_mock/interrupt?count=1", "POST")  # the first body breaks off halfway
    path = store.pull(find(name))
    assert file_sha256(path / "model.onnx") == file_sha256(repos / "hub" / "SmilingWolf" / name / "model.onnx")
    ranges = [r["range"] for r in model_requests(hub) if r["path"].startswith("/lfs/")]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert 0 < int(ranges[1].split("=")[1].rstrip("-")) < size

    # a transfer that keeps breaking off is given up with one line; nothing half-written is used, and
    # the next pull gets the whole file (huggingface_hub 2.x keeps no .incomplete between runs)
    store.remove(find(name), forget=True)
    hub.control("/_mock/interrupt?count=20", "POST")
    with pytest.raises(ModelUnavailable, match=r"cannot download wd-vit-tagger-v3 .*; pull again$"):
        store.pull(find(name))
    assert store.installed(find(name)) is None and not (tmp_path / "models.lock.json").read_text().count(name)
    hub.control("/_mock/reset-stats", "POST")
    path = store.pull(find(name))
    assert file_sha256(path / "model.onnx") == file_sha256(repos / "hub" / "SmilingWolf" / name / "model.onnx")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_offline_or_unreachable_gives_one_line_naming_the_pull(tmp_path, make_hub, repos):
    entry = find(TAGGER)
    offline = ModelStore(places(tmp_path, "http://127.0.0.1:9", offline=True), progress=False)
    with pytest.raises(ModelUnavailable) as caught:
        offline.ensure(entry)
    assert caught.value.one_line() == (f"not downloaded and HF_HUB_OFFLINE is set; run `scrapy models pull {TAGGER}` "
                                       "where the network allows")
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE is set"):
        offline.pull(entry)
    unreachable = ModelStore(places(tmp_path, f"http://127.0.0.1:{free_port()}"), progress=False)
    with pytest.raises(ModelUnavailable, match=r"the Hub at http://127.0.0.1:\d+ cannot be reached"):
        unreachable.pull(entry)
    # once pulled, offline is enough: the lock names the commit and the cache holds it
    hub = make_hub(repos)
    path = ModelStore(places(tmp_path, hub.api), progress=False).pull(entry)
    assert offline.ensure(entry) == path


def test_a_github_release_zip_is_pulled_unpacked_locked_and_resumed(tmp_path, make_hub, repos):
    hub = make_hub(repos)
    store = ModelStore(places(tmp_path, hub.api), progress=False)
    entry = find("deepdanbooru-v3-20211112-sgd-e28")
    hub.control("/_mock/interrupt?count=1", "POST")
    with pytest.raises(ModelUnavailable, match="pull again to resume"):
        store.pull(entry)
    hub.control("/_mock/reset-stats", "POST")
    path = store.pull(entry)
    assert sorted(p.name for p in path.iterdir()) == ["model-resnet_custom_v3.h5", "project.json", "tags.txt"]
    cdn = [r for r in model_requests(hub) if r["path"].startswith("/release/")]
    assert cdn[0]["range"] and cdn[0]["range"] != "bytes=0-"  # went on from the .part
    lock = json.loads((tmp_path / "models.lock.json").read_text())["models"][entry.name]
    assert set(lock["files"]) == {"model-resnet_custom_v3.h5", "project.json", "tags.txt"}
    hub.control("/_mock/reset-stats", "POST")
    assert store.pull(entry) == path and model_requests(hub) == []
    (path / "tags.txt").write_text("changed\n")
    with pytest.raises(ModelIntegrityError, match="tags.txt does not match the lock"):
        store.installed(entry)


def test_unzip_refuses_members_that_would_write_elsewhere(tmp_path):
    import zipfile

    for member in ("../escape.txt", "/abs.txt", "a/../../b.txt"):
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr(member, "x")
        with pytest.raises(Exception, match="refused member"):
            safe_unzip(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()


def test_fetch_url_names_an_http_error(tmp_path, make_hub, repos):
    hub = make_hub(repos)
    with pytest.raises(Exception, match="HTTP 404"):
        fetch_url(f"{hub.api}/KichangKim/DeepDanbooru/releases/download/v0/none.zip", tmp_path / "x.zip",
                  progress=False)
    assert not os.listdir(tmp_path) or not any(p.suffix == ".zip" for p in tmp_path.iterdir())
