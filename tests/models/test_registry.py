"""The model catalogue (models/known_models.toml), the lock file and model settings that name a
catalogue model: what the catalogue must hold, what a setting accepts and refuses."""

from __future__ import annotations

import json

import pytest
from scrapy.settings import Settings

from core.errors import SettingError
from models.face_yolo import YoloFaceDetector
from models.faces import detect_faces
from models.registry import SETTING_TASKS, CatalogError, ModelLock, find, load_catalog, resolve_setting
from stages.faces import read_settings
from tests.conftest import project_settings
from tests.models.test_face_yolo import picture_with_red_square, red_square_finder

REQUIRED = {
    "wd-v1-4-convnext-tagger-v2": ("tagger", "hub", "SmilingWolf/wd-v1-4-convnext-tagger-v2"),
    "wd-swinv2-tagger-v3": ("tagger", "hub", "SmilingWolf/wd-swinv2-tagger-v3"),
    "wd-vit-tagger-v3": ("tagger", "hub", "SmilingWolf/wd-vit-tagger-v3"),
    "wd-eva02-large-tagger-v3": ("tagger", "hub", "SmilingWolf/wd-eva02-large-tagger-v3"),
    "face-detect-v1.4-s": ("face-detector", "hub", "deepghs/anime_face_detection"),
    "head-detect-v2.0-s": ("head-detector", "hub", "deepghs/anime_head_detection"),
    "ccip-caformer-24-randaug-pruned": ("identity", "hub", "deepghs/ccip_onnx"),
    "deepdanbooru-v3-20211112-sgd-e28": ("tagger", "github-release", "KichangKim/DeepDanbooru"),
}


def test_the_catalogue_holds_the_models_users_ask_for_with_their_facts():
    catalog = load_catalog()
    for name, (task, source, repo) in REQUIRED.items():
        entry = catalog[name]
        assert (entry.task, entry.source, entry.repo) == (task, source, repo)
        assert entry.licence and entry.upstream and entry.preprocessing and entry.input_size > 0
    assert catalog["wd-swinv2-tagger-v3"].files == ("model.onnx", "selected_tags.csv")
    assert catalog["wd-swinv2-tagger-v3"].thresholds == {"general": 0.35, "character": 0.85}
    ccip = catalog["ccip-caformer-24-randaug-pruned"]
    assert ccip.files == tuple(f"ccip-caformer-24-randaug-pruned/{f}" for f in
                               ("model_feat.onnx", "model_metrics.onnx", "metrics.json"))
    assert find("ccip") is ccip and find("models/some/path.onnx") is None
    assert catalog["face-detect-v1.4-s"].files == ("face_detect_v1.4_s/model.onnx",)
    assert catalog["head-detect-v2.0-s"].labels == ("head",)


def settings(**overrides: object) -> Settings:
    return Settings(project_settings(**overrides))


def test_a_path_stays_a_path_and_a_name_of_another_task_is_refused():
    assert resolve_setting(settings(TAGGER_PROJECT="models/my-project"), "TAGGER_PROJECT") == "models/my-project"
    assert resolve_setting(settings(TAGGER_PROJECT=""), "TAGGER_PROJECT") == ""
    with pytest.raises(SettingError, match="TAGGER_PROJECT=face-detect-v1.4-s: that catalogue model is a "
                                           "face-detector; TAGGER_PROJECT takes a tagger"):
        resolve_setting(settings(TAGGER_PROJECT="face-detect-v1.4-s"), "TAGGER_PROJECT")
    with pytest.raises(SettingError, match="IDENTITY_EMBEDDER=wd-vit-tagger-v3: .* takes a identity"):
        resolve_setting(settings(IDENTITY_EMBEDDER="wd-vit-tagger-v3"), "IDENTITY_EMBEDDER")
    assert set(SETTING_TASKS) == {"TAGGER_PROJECT", "FACES_YOLO_MODEL", "FACES_HEATMAP_MODEL", "IDENTITY_EMBEDDER",
                                  "CLASSIFIER_MODEL", "ISAAC_MODEL_DIR"}


def test_a_damaged_lock_file_is_refused_with_its_path(tmp_path):
    lock = tmp_path / "models.lock.json"
    lock.write_text("{not json")
    with pytest.raises(CatalogError, match="not a readable lock file"):
        ModelLock(lock).entry("x")
    lock.write_text(json.dumps({"models": {"x": {"revision": "abc", "files": {"a": {"size": 1}}}}}))
    with pytest.raises(CatalogError, match="the entry of x is damaged"):
        ModelLock(lock).entry("x")
    ModelLock(lock).write("y", {"revision": "r", "files": {}})
    assert set(json.loads(lock.read_text())["models"]) == {"x", "y"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_face_stage_takes_imgutils_face_detector_by_name_from_the_hub(tmp_path, make_hub, monkeypatch):
    repo = tmp_path / "repos" / "hub" / "deepghs" / "anime_face_detection" / "face_detect_v1.4_s"
    repo.mkdir(parents=True)
    red_square_finder(repo / "model.onnx")
    hub = make_hub(tmp_path / "repos")
    monkeypatch.setenv("HF_ENDPOINT", hub.api)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    face_settings = settings(FACES_DETECTORS="yolo", FACES_YOLO_MODEL="face-detect-v1.4-s",
                             MODELS_LOCK_FILE=str(tmp_path / "lock.json"), MODELS_HUB_CACHE=str(tmp_path / "cache"))
    names, values = read_settings(face_settings)
    assert values["yolo_model"].endswith("snapshots/" + hub.stats()["repos"]["deepghs/anime_face_detection"] +
                                         "/face_detect_v1.4_s/model.onnx")
    [face] = detect_faces(picture_with_red_square((500, 300), (300, 100, 40, 40)),
                          [YoloFaceDetector(values["yolo_model"])])
    assert abs(face.x - 300) <= 2 and abs(face.y - 100) <= 2
    _, unused = read_settings(settings(FACES_DETECTORS="cascade", FACES_YOLO_MODEL="face-detect-v1.4-s"))
    assert unused["yolo_model"] == ""  # not resolved, so not pulled, when the detector is off
