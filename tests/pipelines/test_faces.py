"""The face stage: crops written beside the JPEGs, failures recorded on the page, the adapter's start-up."""

from __future__ import annotations

import asyncio
import logging

import pytest
from PIL import Image
from scrapy.exceptions import NotConfigured
from scrapy.utils.test import get_crawler

import models.faces as faces_module
from catalog.store import Catalog
from core.items import ArtworkItem
from models.faces import CASCADE_SHA256, CASCADE_URL, find_cascade
from pipelines.faces import FacesPipeline
from stages.faces import find_faces, page_faces
from tests.conftest import REPO, face_settings, project_settings
from tests.models.test_faces import inside_share, scene


def detectors_here() -> tuple[str, ...]:
    return ("cascade", "animeface") if find_cascade(None) else ("animeface",)


def write_jpeg(root, relative: str, image: Image.Image) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=92)


def test_find_faces_writes_a_crop_and_returns_its_box(tmp_path):
    picture, pasted = scene()
    write_jpeg(tmp_path, "images/123_p0.jpg", picture)
    stale = tmp_path / "faces" / "123_p0_f3.jpg"  # from an earlier run that found more faces
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    keep = tmp_path / "faces" / "123_p10_f3.jpg"  # another page's crop
    keep.write_bytes(b"other page")
    record = {"page": 0, "path": "images/123_p0.jpg", "status": "kept"}

    faces = find_faces(str(tmp_path), "123", record, face_settings(detectors=detectors_here()))

    assert len(faces) == 1
    face = faces[0]
    assert face["index"] == 0 and face["path"] == "faces/123_p0_f0.jpg"
    assert face["sources"] == "+".join(detectors_here())
    assert inside_share(faces_module.Face(face["x"], face["y"], face["w"], face["h"], 1.0), pasted) > 0.9
    with Image.open(tmp_path / face["path"]) as crop:
        assert crop.format == "JPEG" and crop.size == (96, 96) and crop.mode == "RGB"
    assert not stale.exists() and keep.exists()
    assert not list((tmp_path / "faces").glob(".*.part"))


def test_an_unreadable_page_gives_faces_error_not_an_exception(tmp_path):
    (tmp_path / "images").mkdir()
    settings = face_settings(detectors=("animeface",))
    (tmp_path / "images" / "9_p0.jpg").write_bytes(b"GIF89 garbage")
    result = page_faces(str(tmp_path), "9", {"page": 0, "path": "images/9_p0.jpg"}, settings)
    assert result["faces"] is None and "not a recognised image" in result["faces_error"]
    (tmp_path / "images" / "9_p2.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    result = page_faces(str(tmp_path), "9", {"page": 2, "path": "images/9_p2.jpg"}, settings)
    assert result["faces"] is None and "images/9_p2.jpg" in result["faces_error"]
    missing = page_faces(str(tmp_path), "9", {"page": 1, "path": "images/9_p1.jpg"}, settings)
    assert missing["faces"] is None and "No such file" in missing["faces_error"]


def crawler_for(tmp_path, **settings):
    defaults = {"IMAGE_WORKERS": 0, "OUTPUT_DIR": str(tmp_path), "FACES_ENABLED": True}
    return get_crawler(settings_dict=project_settings(**{**defaults, **settings}))


def test_the_adapter_records_faces_per_kept_jpeg_and_never_raises(tmp_path):
    picture, _ = scene()
    write_jpeg(tmp_path, "images/5_p0.jpg", picture)
    (tmp_path / "images" / "5_p1.jpg").write_bytes(b"")  # empty: unreadable
    item = ArtworkItem(artwork={"id": 5}, images=[
        {"page": 0, "path": "images/5_p0.jpg", "status": "kept"},
        {"page": 1, "path": "images/5_p1.jpg", "status": "kept"},
        {"page": 2, "path": None, "status": "failed"},
        {"page": 3, "path": "images/5_ugoira.webp", "status": "kept"},
    ])
    crawler = crawler_for(tmp_path, FACES_DETECTORS=",".join(detectors_here()))
    pipeline = FacesPipeline.from_crawler(crawler)
    assert asyncio.run(pipeline.process_item(item)) is item
    first, empty, failed, ugoira = item.images
    assert len(first["faces"]) == 1 and first["faces_error"] is None
    assert (tmp_path / first["faces"][0]["path"]).is_file()
    assert empty["faces"] is None and "empty file" in empty["faces_error"]
    assert "faces" not in failed and "faces" not in ugoira

    # and the catalogue keeps the face with its page
    catalog = Catalog(tmp_path / "catalog.db")
    failed["reason"] = "truncated"
    catalog.record_artwork({"id": "5", "status": "ok", "page_count": 4}, item.images, "now")
    [(page, idx, w, path)] = catalog.conn.execute("SELECT page, idx, w, path FROM faces").fetchall()
    assert (page, idx, path) == (0, 0, first["faces"][0]["path"]) and w == first["faces"][0]["w"]


def test_disabled_stage_is_not_configured(tmp_path):
    with pytest.raises(NotConfigured):
        FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_ENABLED=False))


def test_missing_cascade_warns_once_and_runs_animeface_alone(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(faces_module, "CASCADE_SEARCH_PATHS", ())
    with caplog.at_level(logging.WARNING, logger="pipelines.faces"):
        pipeline = FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_CASCADE_PATH=str(tmp_path / "none.xml"),
                                                          FACES_DETECTORS="cascade,animeface"))
    assert pipeline.settings["detectors"] == ("animeface",)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert CASCADE_URL in warnings[0] and CASCADE_SHA256 in warnings[0] and "models/weights/" in warnings[0]


def test_no_usable_detector_skips_the_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(faces_module, "CASCADE_SEARCH_PATHS", ())
    with pytest.raises(NotConfigured, match="no face detector can run.*lbpcascade_animeface"):
        FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS="cascade"))


def test_an_unknown_detector_name_is_a_configuration_error(tmp_path):
    with pytest.raises(ValueError, match="unknown face detector 'retinaface'.*known: cascade, animeface, heatmap, yolo"):
        FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS="animeface,retinaface"))


def test_the_method_setting_reaches_detection_and_the_version(tmp_path):
    detectors = ",".join(detectors_here())
    pipeline = FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS=detectors))
    assert pipeline.settings["method"] == "verified" and ";verified;" in pipeline.version  # the default
    views = FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS=detectors, FACES_METHOD="Views"))
    assert views.settings["method"] == "views" and ";views;" in views.version  # `scrapy curate` redoes pages
    with pytest.raises(ValueError, match="FACES_METHOD: unknown face detection method 'fast'"):
        FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_METHOD="fast"))


def test_find_faces_uses_the_method_it_is_given(tmp_path, monkeypatch):
    picture, pasted = scene()
    write_jpeg(tmp_path, "images/7_p0.jpg", picture)
    record = {"page": 0, "path": "images/7_p0.jpg", "status": "kept"}
    methods = []
    real = faces_module.detect_faces

    def recording(image, detectors, **options):
        methods.append(options.get("method"))
        return real(image, detectors, **options)

    monkeypatch.setattr("stages.faces.detect_faces", recording)
    for method in ("views", "verified"):
        [face] = find_faces(str(tmp_path), "7", record, face_settings(detectors=detectors_here(), method=method))
        assert inside_share(faces_module.Face(face["x"], face["y"], face["w"], face["h"], 1.0), pasted) > 0.9
    assert methods == ["views", "verified"]


def test_the_learned_detector_joins_through_its_settings_and_is_refused_without_weights(tmp_path, caplog, monkeypatch):
    from models import face_heatmap

    monkeypatch.setattr(face_heatmap, "SHIPPED_WEIGHTS", tmp_path / "not-shipped.pt")  # a checkout without them
    with caplog.at_level(logging.WARNING, logger="pipelines.faces"):
        pipeline = FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS="animeface,heatmap"))
    assert pipeline.settings["detectors"] == ("animeface",)
    assert any("FACES_HEATMAP_MODEL is empty" in r.getMessage() for r in caplog.records)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(NotConfigured, match="FACES_HEATMAP_MODEL: .*junk.pt: not a torch checkpoint"):
        FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS="heatmap", FACES_HEATMAP_MODEL=str(tmp_path / "junk.pt")))

    face_heatmap.save(face_heatmap.FaceHeatmapNet(), tmp_path / "faces.pt")  # untrained: it finds nothing
    detectors = ",".join((*detectors_here(), "heatmap"))
    pipeline = FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS=detectors,
                                                      FACES_HEATMAP_MODEL=str(tmp_path / "faces.pt"),
                                                      FACES_HEATMAP_THRESHOLD=0.7))
    assert pipeline.settings["detectors"][-1] == "heatmap" and "+heatmap-" in pipeline.version and "@0.7" in pipeline.version
    picture, pasted = scene()
    write_jpeg(tmp_path, "images/8_p0.jpg", picture)
    record = {"page": 0, "path": "images/8_p0.jpg", "status": "kept"}
    [face] = find_faces(str(tmp_path), "8", record, pipeline.settings)  # the classic pair's face, through the union
    assert inside_share(faces_module.Face(face["x"], face["y"], face["w"], face["h"], 1.0), pasted) > 0.9
    alone = find_faces(str(tmp_path), "8", record, {**pipeline.settings, "detectors": ("heatmap",)})
    assert alone == []


def test_a_yolo_face_detector_joins_through_its_settings_and_is_refused_without_a_model(tmp_path, caplog):
    from tests.models.test_face_yolo import picture_with_red_square, red_square_finder

    with caplog.at_level(logging.WARNING, logger="pipelines.faces"):
        pipeline = FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS="animeface,yolo"))
    assert pipeline.settings["detectors"] == ("animeface",)
    assert any("FACES_YOLO_MODEL is empty" in r.getMessage() for r in caplog.records)
    (tmp_path / "junk.onnx").write_bytes(b"<html>login</html>")
    with pytest.raises(NotConfigured, match="FACES_YOLO_MODEL: .*junk.onnx: not a loadable ONNX model"):
        FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS="yolo", FACES_YOLO_MODEL=str(tmp_path / "junk.onnx")))

    red_square_finder(tmp_path / "faces.onnx")
    pipeline = FacesPipeline.from_crawler(crawler_for(tmp_path, FACES_DETECTORS="yolo", FACES_YOLO_MODEL=str(tmp_path / "faces.onnx"),
                                                      FACES_YOLO_THRESHOLD=0.5))
    assert pipeline.settings["detectors"] == ("yolo",) and "yolo-" in pipeline.version and "@0.5" in pipeline.version
    write_jpeg(tmp_path, "images/5_p0.jpg", picture_with_red_square((500, 300), (300, 100, 40, 40)))
    [face] = find_faces(str(tmp_path), "5", {"page": 0, "path": "images/5_p0.jpg", "status": "kept"}, pipeline.settings)
    assert face["sources"] == "yolo" and abs(face["x"] - 300) <= 3 and abs(face["y"] - 100) <= 3
    with Image.open(tmp_path / face["path"]) as crop:
        assert crop.size == (96, 96) and crop.getpixel((48, 48))[0] > 200  # the red square, centred


def test_by_default_the_stage_runs_the_shipped_learned_detector_on_a_card_the_classic_pair_misses(tmp_path):
    """Acceptance of issue 30: a fresh clone's face stage uses the shipped weights (models/shipped/faces/).
    Cyno's card (hood over the eyes): the cascade + animeface pair finds no face on it; the default finds
    the labelled head (datasets/anime-faces). The shipped net was trained on this picture: this checks
    the wiring and the weights file, not a held-out rate (models/shipped/faces/README.md has those)."""
    import json

    from models.face_heatmap import SHIPPED_WEIGHTS

    cards = sorted((REPO.parent / "shared" / "fixtures" / "anime" / "cards").glob("cyno.*"))
    if not cards:
        pytest.skip("needs ../shared/fixtures/anime")
    card = cards[0]
    pipeline = FacesPipeline.from_crawler(crawler_for(tmp_path))
    assert "heatmap" in pipeline.settings["detectors"]
    assert pipeline.settings["heatmap_model"] == str(SHIPPED_WEIGHTS) and SHIPPED_WEIGHTS.stat().st_size < 10 * 2**20
    with Image.open(card) as image:
        write_jpeg(tmp_path, "images/1_p0.jpg", image.convert("RGB"))
    record = {"page": 0, "path": "images/1_p0.jpg", "status": "kept"}
    label = json.loads((REPO / "datasets" / "anime-faces" / "cards" / "cyno.json").read_text())
    (x0, y0), (x1, y1) = label["shapes"][0]["points"]
    head = faces_module.Face(round(x0), round(y0), round(x1 - x0), round(y1 - y0), 1.0)
    classic = find_faces(str(tmp_path), "1", record, {**pipeline.settings, "detectors": detectors_here()})
    assert not any(faces_module.iou(faces_module.Face(f["x"], f["y"], f["w"], f["h"], 1.0), head) >= 0.3 for f in classic)
    found = find_faces(str(tmp_path), "1", record, pipeline.settings)
    assert any(faces_module.iou(faces_module.Face(f["x"], f["y"], f["w"], f["h"], 1.0), head) >= 0.3 for f in found)
