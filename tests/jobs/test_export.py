"""``scrapy export``: a real crawl of the local site, curated by hand, exported in every format and
read back with each format's own loader (Keras, a plain ImageFolder reader, json, tarfile)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
import unicodedata
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scrapy.settings import Settings

from catalog.store import Catalog, utc_now
from jobs import export as export_module
from jobs.export import ExportError, ExportOptions, export, parse_split, parse_where, split_of
from tests.conftest import project_settings

REPO = Path(__file__).resolve().parents[2]
TRIGGER = "monaxyz"
EXACT_COPY, NEAR_COPY = "900000001", "900000002"
FORMATS = ("imagefolder", "kohya", "hf", "webdataset")


def dump(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.iterdump())


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def settings_for(output: Path, **extra) -> Settings:
    return Settings(project_settings(OUTPUT_DIR=str(output), EXPORT_TRIGGER_WORD=TRIGGER, EXPORT_SHARD_SIZE=10, **extra))


def run_export(output: Path, dest: Path, where: str | None = None, **given) -> dict:
    settings = settings_for(output)
    options = ExportOptions.from_settings(
        settings, dest, selection=parse_where(where), split=parse_split(split) if (split := given.pop("split", "0.8,0.2")) else (),
        seed=given.pop("seed", 3), progress=False, **given,
    )
    return export(settings, options).manifest


def stem_artwork(name: str) -> str:
    return name.split("_p", 1)[0]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, pixiv_site):
    """One page of the local site, crawled for real; then classifier labels, model tags and face
    crops written through Catalog, and two more artworks: an exact and a near copy of a picture."""
    from tests.conftest import crawl_command, crawl_env

    output = tmp_path_factory.mktemp("export") / "out"
    done = subprocess.run(crawl_command(pixiv_site, output, "-a", "pages=1", "-s", "IMAGE_WORKERS=0"),
                          cwd=REPO, env=crawl_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    catalog = Catalog(output / "catalog.db")
    kept = catalog.conn.execute(
        "SELECT artwork_id, page, path FROM images WHERE status = 'kept' ORDER BY artwork_id, page"
    ).fetchall()
    assert len(kept) > 40
    with catalog.batch():
        for n, (artwork_id, page, path) in enumerate(kept):
            if path.endswith(".webp"):
                continue  # the ugoira stays unlabelled
            mona = n % 3 == 0
            catalog.set_classifier(artwork_id, page, {"label": "mona" if mona else "other", "score": 0.9 if mona else 0.1,
                                                       "target": "mona", "model": "classifier-test"})
            if n % 2 == 0:
                catalog.replace_model_tags(artwork_id, page, "tagger-test", [
                    {"tag": "long_hair", "category": "General", "score": 0.7},
                    {"tag": "mona_(genshin_impact)", "category": "Character", "score": 0.95 if mona else 0.6},
                ])
            if n < 8:
                crop = Image.open(output / path).convert("RGB").crop((0, 0, 32, 32)).resize((96, 96))
                face_path = f"faces/{artwork_id}_p{page}_f0.jpg"
                (output / "faces").mkdir(exist_ok=True)
                crop.save(output / face_path, quality=90)
                catalog.replace_faces(artwork_id, page, [{"index": 0, "x": 0, "y": 0, "w": 32, "h": 32,
                                                          "score": 0.9, "sources": "test", "path": face_path}])
    # The copies: the first JPEG byte for byte, and the second one smaller and re-compressed.
    first, second = [row for row in kept if row[2].endswith(".jpg")][:2]
    exact = (output / first[2]).read_bytes()
    source = Image.open(output / second[2])
    near_image = source.resize((source.width * 3 // 4, source.height * 3 // 4), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    near_image.save(buffer, "JPEG", quality=75)
    for artwork_id, data, size in ((EXACT_COPY, exact, Image.open(io.BytesIO(exact)).size),
                                   (NEAR_COPY, buffer.getvalue(), near_image.size)):
        path = f"images/{artwork_id}_p0.jpg"
        (output / path).write_bytes(data)
        catalog.record_artwork(
            {"id": artwork_id, "title": "repost", "page_count": 1, "status": "ok", "x_restrict": 0, "ai_type": 1,
             "tags": [{"name": "原神", "translation_en": "Genshin Impact"}]},
            [{"page": 0, "path": path, "sha256": hashlib.sha256(data).hexdigest(), "width": size[0],
              "height": size[1], "format": "jpeg", "source_format": "jpeg", "status": "kept",
              "classifier": {"label": "mona", "score": 0.9, "target": "mona", "model": "classifier-test"}}],
            utc_now(),
        )
    catalog.close()
    return {"output": output, "db": output / "catalog.db", "exact_of": f"{first[0]}_p{first[1]}",
            "near_of": f"{second[0]}_p{second[1]}"}


@pytest.fixture(scope="module")
def exports(catalogue, tmp_path_factory):
    """Each format exported once (the tests below read them back), with its manifest."""
    root = tmp_path_factory.mktemp("exports")
    return {fmt: (root / fmt, run_export(catalogue["output"], root / fmt, format=fmt, split="" if fmt == "kohya" else "0.8,0.2"))
            for fmt in FORMATS}  # kohya: its own default split


def expected_caption(db: Path, artwork_id: str, page: int) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        model = [t for (t,) in conn.execute(
            "SELECT tag FROM image_tags WHERE artwork_id = ? AND page = ? ORDER BY score DESC, tag", [artwork_id, page])]
        pixiv = [en or name for name, en in conn.execute(
            "SELECT t.name, t.translation_en FROM artwork_tags x JOIN tags t ON t.name = x.tag "
            "WHERE x.artwork_id = ? ORDER BY x.position", [artwork_id])]
    return [TRIGGER, *model, *pixiv]


def assert_split_by_artwork(names_by_split: dict[str, list[str]]) -> None:
    seen: dict[str, str] = {}
    for split, names in names_by_split.items():
        for name in names:
            assert seen.setdefault(stem_artwork(name), split) == split, f"{name} is in {seen[stem_artwork(name)]} and {split}"


def read_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """What torchvision's ImageFolder does, in plain Python: sorted class folders, every picture decoded."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    samples = []
    for index, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            assert path.suffix in (".jpg", ".png"), path
            with Image.open(path) as image:
                image.convert("RGB").load()
            samples.append((path, index))
    return classes, samples


def test_imagefolder_reads_back_with_keras_and_a_plain_reader(exports, catalogue):
    dest, manifest = exports["imagefolder"]
    assert manifest["class_from"] == "classifier"
    assert set(manifest["class_totals"]) == {"mona", "other", "unlabelled"}
    names_by_split = {}
    for split in ("train", "val"):
        classes, samples = read_image_folder(dest / split)
        assert classes == sorted(manifest["counts"][split])
        for index, name in enumerate(classes):
            assert sum(1 for _, i in samples if i == index) == manifest["counts"][split][name]
        names_by_split[split] = [path.stem for path, _ in samples]
    assert manifest["totals"]["val"] > 0 and manifest["artworks"]["val"] > 0
    assert_split_by_artwork(names_by_split)
    # The ugoira's WebP is exported as its first frame in JPEG, and says so.
    assert manifest["converted"] and all(list(dest.rglob(f"{key}.jpg")) for key in manifest["converted"])

    import tensorflow as tf

    dataset = tf.keras.utils.image_dataset_from_directory(
        dest / "train", image_size=(32, 32), batch_size=128, shuffle=False)
    assert dataset.class_names == sorted(manifest["counts"]["train"])
    assert sum(int(images.shape[0]) for images, _labels in dataset) == manifest["totals"]["train"]


def test_duplicates_are_listed_not_exported(exports, catalogue):
    dest, manifest = exports["imagefolder"]
    found = {d["key"]: d for d in manifest["duplicates"]}
    assert found[f"{EXACT_COPY}_p0"] == {"key": f"{EXACT_COPY}_p0", "duplicate_of": catalogue["exact_of"],
                                         "kind": "exact", "distance": 0}
    near = found[f"{NEAR_COPY}_p0"]
    assert near["kind"] == "near" and near["duplicate_of"] == catalogue["near_of"] and near["distance"] <= 6
    exported = {p.stem for p in dest.rglob("*.jpg")}
    assert not exported & set(found) and {catalogue["exact_of"], catalogue["near_of"]} <= exported
    with closing(sqlite3.connect(catalogue["db"])) as conn:
        selected = conn.execute("SELECT count(*) FROM images WHERE status = 'kept' AND path IS NOT NULL").fetchone()[0]
    assert manifest["total"] + len(manifest["duplicates"]) + len(manifest["skipped"]) == selected
    assert manifest["models"]["classifier_versions"] == ["classifier-test"]
    assert manifest["models"]["tagger_versions"] == ["tagger-test"]
    assert manifest["catalog"]["updated"]


# What sd-scripts' dataset config accepts (library/config_util.py, ConfigSanitizer: a DreamBooth
# dataset, whose schema refuses any other key), for the keys the export writes.
KOHYA_GENERAL_KEYS = {"shuffle_caption", "caption_extension", "keep_tokens", "enable_bucket", "resolution",
                      "batch_size", "num_repeats", "class_tokens", "flip_aug", "color_aug"}
KOHYA_DATASET_KEYS = KOHYA_GENERAL_KEYS | {"subsets"}
KOHYA_SUBSET_KEYS = {"image_dir", "is_reg", "num_repeats", "class_tokens", "caption_extension", "keep_tokens",
                     "shuffle_caption"}
PICTURE_SUFFIXES = (".jpg", ".png")


def kohya_caption(db: Path, artwork_id: str, page: int, trigger: str = TRIGGER) -> list[str]:
    """What a kohya caption should be, worked out from the catalogue: the trigger, the character tags
    (the model's by score, then the Pixiv tags that are one: a tag the tagger calls Character, or written
    name (series) with the series among the artwork's tags), ai-generated for an AI work, the model's
    other tags by score, the other Pixiv tags (English when known); long_hair as long hair; two names
    that differ only in case, spaces or underscores (GenshinImpact, Genshin Impact) written once."""
    with closing(sqlite3.connect(db)) as conn:
        model = conn.execute("SELECT tag, category FROM image_tags WHERE artwork_id = ? AND page = ? "
                             "ORDER BY score DESC, tag", [artwork_id, page]).fetchall()
        pixiv = conn.execute("SELECT t.name, t.translation_en FROM artwork_tags x JOIN tags t ON t.name = x.tag "
                             "WHERE x.artwork_id = ? ORDER BY x.position", [artwork_id]).fetchall()
        characters = {key(t) for (t,) in conn.execute("SELECT tag FROM image_tags WHERE category = 'Character'")}
        ai = conn.execute("SELECT ai_type FROM artworks WHERE id = ?", [artwork_id]).fetchone()[0] == 2
    series = {key(n) for names in pixiv for n in names if n}

    def character(names: tuple[str, str | None]) -> bool:
        qualified = [re.match(r"^(.+?)_?\((.+)\)$", key(n)) for n in names if n]
        return any(key(n) in characters for n in names if n) or any(q and q[2] in series for q in qualified)

    written = [(en or name, character((name, en))) for name, en in pixiv]
    ordered = ([t for t, c in model if c == "Character"] + [t for t, c in written if c] + (["ai-generated"] if ai else [])
               + [t for t, c in model if c != "Character"] + [t for t, c in written if not c])
    out: dict[str, str] = {}
    for tag in ordered:
        out.setdefault(re.sub(r"[\s_\-・·]", "", key(tag)), tag.replace("_", " ") if len(tag) > 3 else tag)
    return [trigger, *out.values()]


def key(tag: str) -> str:
    return re.sub(r"\s+", "_", unicodedata.normalize("NFKC", tag).casefold().strip())


def kohya_pictures(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in PICTURE_SUFFIXES)


def test_kohya_is_what_sd_scripts_reads(exports, catalogue):
    """DreamBooth folders ``{repeats}_{trigger} {class}``, a dataset.toml that tomllib reads with only
    keys sd-scripts knows, whose image_dirs hold every train picture with its .txt caption; captions
    trigger first, character tags next, underscores as spaces; the fine-tune metadata finds each picture."""
    import tomllib

    dest, manifest = exports["kohya"]
    config = tomllib.loads((dest / "dataset.toml").read_text(encoding="utf-8"))
    assert set(config) == {"general", "datasets"} and set(config["general"]) <= KOHYA_GENERAL_KEYS
    assert config["general"]["caption_extension"] == ".txt" and config["general"]["keep_tokens"] == 1
    assert config["general"]["shuffle_caption"] is True
    [dataset] = config["datasets"]
    assert set(dataset) <= KOHYA_DATASET_KEYS and (dataset["resolution"], dataset["batch_size"]) == (512, 1)
    # Three classes (mona, other, unlabelled): balanced, the largest repeated 10 times, the others more,
    # up to 40: the one unlabelled picture (the ugoira) is not repeated 400 times.
    totals = manifest["class_totals"]
    assert set(totals) == {"mona", "other", "unlabelled"}
    largest = max(totals.values())
    subsets = manifest["kohya"]["subsets"]
    for label, count in totals.items():
        assert subsets[label]["num_repeats"] == min(max(1, round(10 * largest / count)), 40)
        assert subsets[label]["folder"] == f"{subsets[label]['num_repeats']}_{TRIGGER} {label}"
    assert subsets[max(totals, key=totals.get)]["num_repeats"] == 10 and subsets["unlabelled"]["num_repeats"] == 40
    assert totals["unlabelled"] * 40 < largest * 10 and 10 < subsets["mona"]["num_repeats"] < 40

    in_config = []
    for subset in dataset["subsets"]:
        assert set(subset) <= KOHYA_SUBSET_KEYS
        image_dir = Path(subset["image_dir"])
        assert image_dir.is_absolute() and image_dir.parent == (dest / "train").absolute()
        repeats, tokens = image_dir.name.split("_", 1)
        assert int(repeats) == subset["num_repeats"] and subset["class_tokens"] == tokens
        assert tokens.startswith(f"{TRIGGER} ")
        pictures = kohya_pictures(image_dir)
        assert pictures and all(p.with_suffix(".txt").is_file() for p in pictures)
        in_config += pictures
    assert sorted(in_config) == sorted(p for p in (dest / "train").rglob("*") if p.suffix in PICTURE_SUFFIXES)
    assert len(in_config) == manifest["totals"]["train"]

    # sd-scripts trains on every picture it is given: by default none is held back in a val folder.
    assert manifest["split"] == {"train": 1.0, "val": 0.0} and manifest["totals"]["val"] == 0
    assert not (dest / "val").exists() and not (dest / "meta_cap_val.json").exists()
    character_first = 0
    for split in ("train",):
        metadata = json.loads((dest / f"meta_cap_{split}.json").read_text(encoding="utf-8"))
        pictures = sorted(p for p in (dest / split).rglob("*") if p.suffix in PICTURE_SUFFIXES)
        assert len(pictures) == len(metadata) == manifest["totals"][split]
        assert all(p.parent.parent == dest / split and p.parent.name[0].isdigit() for p in pictures)
        for picture in pictures:
            caption = picture.with_suffix(".txt").read_text(encoding="utf-8")
            artwork_id, page = picture.stem.split("_p")
            assert caption.split(", ") == kohya_caption(catalogue["db"], artwork_id, int(page))
            assert "_" not in caption.replace("(genshin_impact)", "")  # long hair, mona (genshin impact)
            character_first += caption.startswith(f"{TRIGGER}, mona (genshin impact), ")
            key = f"{picture.parent.name}/{picture.stem}"  # sd-scripts: image_dir/key + an image suffix
            entry = metadata[key]  # sd-scripts trains on caption + ", " + tags
            assert (dest / split / f"{key}{picture.suffix}").is_file()
            assert entry["caption"] == TRIGGER and f"{entry['caption']}, {entry['tags']}" == caption
    # The tagger scored mona (a Character) under long_hair on some pictures: she still comes first.
    with closing(sqlite3.connect(catalogue["db"])) as conn:
        below = conn.execute("SELECT count(*) FROM image_tags WHERE tag = 'mona_(genshin_impact)' AND score < 0.7").fetchone()[0]
    assert below > 0 and character_first >= below - len(manifest["duplicates"])


def test_kohya_caption_options_from_the_command_line(catalogue, tmp_path):
    """--caption-underscores, --undesired-tags (normalised, and through aliases), --no-rating-tags and
    --repeats, as users pass them; a Pixiv tag that is an alias of a model Character tag goes first."""
    import tomllib

    from catalog.tags import add_alias

    output = own_crawl(catalogue, tmp_path)
    db = output / "catalog.db"
    catalog = Catalog(db)
    with catalog.batch():
        tagged = catalog.conn.execute(
            "SELECT artwork_id, page FROM image_tags WHERE tag = 'long_hair' ORDER BY artwork_id, page LIMIT 1").fetchone()
        catalog.replace_model_tags(*tagged, "tagger-test", [
            {"tag": "long_hair", "category": "General", "score": 0.7},
            {"tag": "^_^", "category": "General", "score": 0.65},
            {"tag": "mona_(genshin_impact)", "category": "Character", "score": 0.6},
            {"tag": "rating:safe", "category": "System", "score": 0.9},
            {"tag": "questionable", "category": "Rating", "score": 0.2},
        ])
    # A picture without model tags whose artwork has several Pixiv tags: its last one is made Mona.
    untagged, pixiv_tag, shown = catalog.conn.execute(
        "SELECT i.artwork_id || '_p' || i.page, x.tag, coalesce(t.translation_en, x.tag) FROM images i "
        "JOIN artwork_tags x ON x.artwork_id = i.artwork_id JOIN tags t ON t.name = x.tag "
        "WHERE i.status = 'kept' AND i.path LIKE '%.jpg' AND NOT EXISTS (SELECT 1 FROM image_tags m "
        "WHERE m.artwork_id = i.artwork_id AND m.page = i.page) "
        "AND (SELECT count(*) FROM artwork_tags y WHERE y.artwork_id = i.artwork_id) >= 2 "
        "ORDER BY i.artwork_id, i.page, x.position DESC LIMIT 1").fetchone()
    add_alias(catalog.conn, pixiv_tag, "mona_(genshin_impact)")
    catalog.close()
    key = "_p".join(map(str, tagged))

    def caption_of(dest: Path, stem: str) -> list[str]:
        [found] = dest.rglob(f"{stem}.txt")
        return found.read_text(encoding="utf-8").split(", ")

    plain = tmp_path / "plain"
    done = scrapy_export(output, plain, "--format", "kohya", "--class-from", "none", "--split", "0.8,0.2",
                         "-s", f"EXPORT_TRIGGER_WORD={TRIGGER}")
    assert done.returncode == 0, done.stderr[-3000:]
    held_back = json.loads((plain / "manifest.json").read_text(encoding="utf-8"))["totals"]["val"]
    assert held_back and f"not trained on: val {held_back} (their folders are not in dataset.toml" in done.stdout
    assert [p.name for p in (plain / "train").iterdir()] == [f"10_{TRIGGER}"]
    # Characters first: the model's, then the artwork's Pixiv tags written name (series); one name per tag.
    caption = caption_of(plain, key)
    characters = [t for t in caption if t.casefold().endswith("(genshin impact)")]
    assert caption[1] == "mona (genshin impact)" and caption[1:1 + len(characters)] == characters
    assert caption[1 + len(characters):5 + len(characters)] == ["rating:safe", "long hair", "^_^", "questionable"]
    assert len({re.sub(r"[\s_]", "", t.casefold()) for t in caption}) == len(caption)
    # AI-generated works (aiType 2) are captioned so, counted, and left out with --exclude-ai.
    manifest = json.loads((plain / "manifest.json").read_text(encoding="utf-8"))
    with closing(sqlite3.connect(db)) as conn:
        ai_works = {a for (a,) in conn.execute("SELECT id FROM artworks WHERE ai_type = 2")}
    exported_ai = sorted(k for k in manifest["ai_generated"])
    assert exported_ai and {stem_artwork(k) for k in exported_ai} <= ai_works
    assert f"AI-generated (Pixiv aiType 2): {len(exported_ai)}, captioned ai-generated" in done.stdout
    for stem in exported_ai:
        assert "ai-generated" in caption_of(plain, stem)
    assert not any("ai-generated" in caption_of(plain, p.stem) for p in plain.rglob("*.txt")
                   if stem_artwork(p.stem) not in ai_works)
    without_ai = tmp_path / "without-ai"
    done = scrapy_export(output, without_ai, "--format", "kohya", "--exclude-ai", "-s", f"EXPORT_TRIGGER_WORD={TRIGGER}")
    assert done.returncode == 0, done.stderr[-3000:]
    kept = json.loads((without_ai / "manifest.json").read_text(encoding="utf-8"))
    assert kept["total"] == manifest["total"] - len(exported_ai) and not kept["ai_generated"]
    assert "AI-generated" not in done.stdout
    # One name per tag: the site's GenshinImpact tag and 原神's translation Genshin Impact are written once.
    with closing(sqlite3.connect(db)) as conn:
        doubles = {a for (a,) in conn.execute("SELECT artwork_id FROM artwork_tags WHERE tag = 'GenshinImpact' "
                                              "INTERSECT SELECT artwork_id FROM artwork_tags WHERE tag = '原神'")}
    both = [p.stem for p in plain.rglob("*.txt") if stem_artwork(p.stem) in doubles]
    assert both and all("Genshin Impact" in caption_of(plain, stem) and "GenshinImpact" not in caption_of(plain, stem)
                        for stem in both)

    # No model tags at all: the Pixiv tag aliased to the character still comes right after the trigger,
    # among the artwork's other character tags.
    untagged_caption = caption_of(plain, untagged)
    aliased = untagged_caption.index(shown.replace("_", " ") if len(shown) > 3 else shown)
    assert all(t.casefold().endswith("(genshin impact)") for t in untagged_caption[1:aliased])

    options = tmp_path / "options"
    done = scrapy_export(output, options, "--format", "kohya", "--class-from", "none", "--repeats", "3",
                         "--caption-underscores", "keep", "--undesired-tags", "Long Hair, ｍｏｎａ_(GENSHIN_IMPACT)",
                         "--no-rating-tags", "-s", f"EXPORT_TRIGGER_WORD={TRIGGER}", "-s", "EXPORT_KOHYA_RESOLUTION=1024")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in (options / "train").iterdir()] == [f"3_{TRIGGER}"]
    caption = caption_of(options, key)
    others = [t for t in caption if t.casefold().endswith("(genshin impact)")]  # Keqing, ...: not undesired
    assert caption[:2 + len(others)] == [TRIGGER, *others, "^_^"] and not {"long_hair", "rating:safe", "questionable"} & set(caption)
    assert pixiv_tag not in caption_of(options, untagged) and shown not in caption_of(options, untagged)  # by alias
    config = tomllib.loads((options / "dataset.toml").read_text(encoding="utf-8"))
    assert config["datasets"][0]["resolution"] == 1024
    assert [s["num_repeats"] for s in config["datasets"][0]["subsets"]] == [3]
    manifest = json.loads((options / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["captions"] == {"underscores": "keep", "undesired_tags": ["Long Hair", "ｍｏｎａ_(GENSHIN_IMPACT)"],
                                    "rating_tags": False, "characters_first": True}

    # Other formats keep their old default (underscores kept); the options apply to their captions too.
    hf = tmp_path / "hf"
    done = scrapy_export(output, hf, "--format", "hf", "--class-from", "none", "--undesired-tags", "long hair",
                         "-s", f"EXPORT_TRIGGER_WORD={TRIGGER}")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {json.loads(line)["file_name"].split(".")[0]: json.loads(line)
            for split in ("train", "val") if (hf / split).is_dir()
            for line in (hf / split / "metadata.jsonl").read_text(encoding="utf-8").splitlines()}
    assert rows[key]["caption"].startswith(f"{TRIGGER}, rating:safe, ^_^, mona_(genshin_impact)")
    assert "long_hair" not in rows[key]["caption"] and "long_hair" in rows[key]["tags"]
    bad = scrapy_export(output, tmp_path / "bad", "--format", "kohya", "--repeats", "0")
    assert_usage_error(bad, "--repeats must be at least 1")


def test_a_kohya_export_without_a_trigger_names_its_class_folders(catalogue, tmp_path):
    manifest = run_export(catalogue["output"], tmp_path / "k", format="kohya", trigger_word="", repeats=2,
                          class_from="tags:mona_(genshin_impact)")
    assert {s["folder"] for s in manifest["kohya"]["subsets"].values()} == {"2_mona_(genshin_impact)", "2_other"}
    text = (tmp_path / "k" / "dataset.toml").read_text(encoding="utf-8")
    assert "keep_tokens = 0" in text
    for folder in (tmp_path / "k" / "train").iterdir():
        for caption in folder.glob("*.txt"):
            assert not caption.read_text(encoding="utf-8").startswith(TRIGGER)


def test_hf_metadata_names_every_picture(exports, catalogue):
    dest, manifest = exports["hf"]
    names_by_split = {}
    for split in ("train", "val"):
        rows = [json.loads(line) for line in (dest / split / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == manifest["totals"][split]
        assert sorted(r["file_name"] for r in rows) == sorted(p.name for p in (dest / split).iterdir() if p.suffix != ".jsonl")
        for row in rows:
            assert len(row["tags"]) == len(row["tag_scores"]) and row["caption"].startswith(f"{TRIGGER}, ")
            assert row["label"] == (row["classifier"]["label"] if row["classifier"] else "unlabelled")
        names_by_split[split] = [Path(r["file_name"]).stem for r in rows]
        tagged = [r for r in rows if r["tags"]]
        assert tagged and all(r["tags"][0] == "mona_(genshin_impact)" or r["tag_scores"][0] >= r["tag_scores"][1] for r in tagged)
    assert_split_by_artwork(names_by_split)


def test_webdataset_shards_read_back_with_tarfile(exports):
    dest, manifest = exports["webdataset"]
    for split in ("train", "val"):
        shards = sorted(dest.glob(f"{split}-*.tar"))
        total = manifest["totals"][split]
        assert [s.name for s in shards] == [f"{split}-{n:06d}.tar" for n in range(-(-total // 10))]
        samples: dict[str, dict[str, bytes]] = defaultdict(dict)
        order = []
        for shard in shards:
            with tarfile.open(shard) as tar:
                for member in tar:
                    assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
                    key, ext = member.name.split(".", 1)
                    if key not in samples:
                        order.append(key)
                    samples[key][ext] = tar.extractfile(member).read()
        assert len(samples) == total and order == sorted(order)
        for key, sample in samples.items():
            assert set(sample) == {"cls", "jpg", "json", "txt"}
            meta = json.loads(sample["json"])
            assert sample["txt"].decode("utf-8") == meta["caption"] and meta["caption"].startswith(TRIGGER)
            assert int(sample["cls"]) == manifest["class_index"][meta["label"]]
            Image.open(io.BytesIO(sample["jpg"])).load()


def test_the_same_catalogue_and_seed_give_byte_identical_exports(exports, catalogue, tmp_path):
    for fmt in FORMATS:
        again = tmp_path / fmt
        run_export(catalogue["output"], again, format=fmt, split="" if fmt == "kohya" else "0.8,0.2")
        first, second = file_hashes(exports[fmt][0]), file_hashes(again)
        if fmt == "kohya":  # dataset.toml names its DEST: the same but for that path
            config = (again / "dataset.toml").read_text(encoding="utf-8")
            assert config.replace(str(again), str(exports[fmt][0])) == (exports[fmt][0] / "dataset.toml").read_text(encoding="utf-8")
            first.pop("dataset.toml"), second.pop("dataset.toml")
        assert second == first, fmt
    # Into the same DEST again (--force): every byte the same, dataset.toml included.
    dest = exports["kohya"][0]
    before = file_hashes(dest)
    run_export(catalogue["output"], dest, format="kohya", force=True, split="")
    assert file_hashes(dest) == before


def test_faces_exports_the_crops_with_the_class_of_their_picture(catalogue, tmp_path):
    manifest = run_export(catalogue["output"], tmp_path / "faces", faces=True, split="0.5,0.5")
    crops = sorted((tmp_path / "faces").rglob("*.jpg"))
    assert manifest["faces"] and len(crops) == manifest["total"] == 8 - len(manifest["duplicates"])
    with closing(sqlite3.connect(catalogue["db"])) as conn:
        labels = {f"{a}_p{p}": label for a, p, label in conn.execute("SELECT artwork_id, page, classifier_label FROM images")}
    for crop in crops:
        assert crop.stem.endswith("_f0") and crop.parent.name == labels[crop.stem[:-3]]
        assert Image.open(crop).size == (96, 96)
    assert_split_by_artwork({split: [c.stem for c in crops if c.parts[-3] == split] for split in ("train", "val")})
    only_train = run_export(catalogue["output"], tmp_path / "one-split", faces=True, split="1,0", format="hf")
    assert only_train["totals"] == {"train": manifest["total"], "val": 0}
    assert sorted(p.name for p in (tmp_path / "one-split").iterdir()) == ["manifest.json", "train"]  # no empty val


def test_where_as_sql_and_as_rules(catalogue, tmp_path):
    sql = run_export(catalogue["output"], tmp_path / "sql", "i.classifier_label = 'mona' AND a.x_restrict = 0")
    assert set(sql["class_totals"]) == {"mona"} and sql["selection"]["kind"] == "sql"
    rule = run_export(catalogue["output"], tmp_path / "rule", '{"if": "classifier", "min": 0.8}')
    assert rule["class_totals"] == sql["class_totals"] and rule["selection"]["kind"] == "rules"
    yaml_rule = run_export(catalogue["output"], tmp_path / "yaml", "{if: tag, any: [MONA_(genshin_impact)]}",
                           **{"class_from": "none"})
    with closing(sqlite3.connect(catalogue["db"])) as conn:
        tagged = conn.execute("SELECT count(DISTINCT artwork_id || page) FROM image_tags WHERE tag = 'mona_(genshin_impact)'").fetchone()[0]
    assert yaml_rule["total"] + len(yaml_rule["duplicates"]) == tagged
    drop = run_export(catalogue["output"], tmp_path / "drop", '[{"action": "drop", "if": "classifier", "min": 0.8}]')
    assert "mona" not in drop["class_totals"] and drop["class_totals"]["other"] > 0
    by_tag = run_export(catalogue["output"], tmp_path / "bytag", class_from="tags:nothing_like_this,long_hair")
    assert set(by_tag["class_totals"]) == {"long_hair", "other"}


def test_rules_and_tag_classes_count_aliases_and_implications(catalogue, tmp_path):
    """モナ is made an alias of the tagger's tag and the tag made to imply genshin_impact: the rule
    filter and the ``tags:`` classes must see both, as the crawl's decision stage does."""
    from catalog.tags import add_alias, add_implication

    plain = run_export(catalogue["output"], tmp_path / "plain", "{if: tag, any: [mona_(genshin_impact)]}",
                       class_from="tags:mona_(genshin_impact)")
    assert plain["total"] > 0 and set(plain["class_totals"]) == {"mona_(genshin_impact)"}
    before = dump(catalogue["db"])
    with closing(sqlite3.connect(catalogue["db"])) as conn:
        assert run_export(catalogue["output"], tmp_path / "unknown", class_from="tags:モナ")["class_totals"].keys() == {"other"}
        add_alias(conn, "モナ", "mona_(genshin_impact)")
        add_implication(conn, "mona_(genshin_impact)", "genshin_impact")
    try:
        by_alias = run_export(catalogue["output"], tmp_path / "alias", "{if: tag, any: [モナ]}", class_from="tags:モナ")
        assert by_alias["total"] == plain["total"] and set(by_alias["class_totals"]) == {"モナ"}
        implied = run_export(catalogue["output"], tmp_path / "implied", "{if: tag, any: [genshin_impact]}",
                             class_from="tags:genshin_impact")
        assert implied["total"] == plain["total"] and set(implied["class_totals"]) == {"genshin_impact"}
    finally:
        with closing(sqlite3.connect(catalogue["db"])) as conn, conn:
            conn.execute("DELETE FROM tag_aliases")
            conn.execute("DELETE FROM tag_implications")
    assert dump(catalogue["db"]) == before


def test_hostile_where_is_refused_and_the_catalogue_untouched(catalogue, tmp_path):
    before = dump(catalogue["db"])
    for where in ("1; DROP TABLE images", "1 = 1; DELETE FROM artworks"):
        with pytest.raises(ExportError, match="';' is refused"):
            run_export(catalogue["output"], tmp_path / "x", where)
    with pytest.raises(ExportError, match="not authorized"):  # the authorizer: no extensions, no pragmas
        run_export(catalogue["output"], tmp_path / "x", "load_extension('/tmp/evil') IS NULL")
    with pytest.raises(ExportError, match="cannot run"):
        run_export(catalogue["output"], tmp_path / "x", "no_such_column = 1")
    done = subprocess.run(
        [sys.executable, "-m", "scrapy", "export", str(tmp_path / "y"), "--where", "1; DROP TABLE images",
         "-s", f"OUTPUT_DIR={catalogue['output']}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "';' is refused" in done.stderr
    assert dump(catalogue["db"]) == before
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not list(tmp_path.glob(".*"))


def test_a_failed_export_leaves_dest_as_it_was(catalogue, tmp_path, monkeypatch):
    dest = tmp_path / "dest"
    run_export(catalogue["output"], dest, format="hf")
    before = file_hashes(dest)
    with pytest.raises(ExportError, match="not empty; --force"):
        run_export(catalogue["output"], dest, format="kohya")

    def crash(*args, **kwargs):
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(export_module.Writer, "write_kohya", crash)
    with pytest.raises(RuntimeError):
        run_export(catalogue["output"], dest, format="kohya", force=True)
    assert file_hashes(dest) == before and not list(tmp_path.glob(".*"))
    with pytest.raises(ExportError, match="holds"):
        run_export(catalogue["output"], catalogue["output"], force=True)


def test_split_depends_on_the_artwork_and_seed_only():
    split = parse_split("0.8,0.1,0.1")
    ids = [str(120000000 + n) for n in range(3000)]
    first = {i: split_of(i, 7, split) for i in ids}
    assert {i: split_of(i, 7, split) for i in reversed(ids)} == first
    shares = {name: sum(1 for s in first.values() if s == name) / len(ids) for name, _ in split}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["test"] - 0.1) < 0.03
    assert sum(split_of(i, 8, split) != first[i] for i in ids) > 500  # another seed, another split
    assert {split_of(i, 1, parse_split("1,0")) for i in ids[:100]} == {"train"}
    for bad in ("1", "0.5,0.3,0.1,0.1", "a,b", "-1,2", "0,0"):
        with pytest.raises(ExportError):
            parse_split(bad)


def test_the_command_runs_as_users_run_it(catalogue, tmp_path):
    dest = tmp_path / "wds"
    command = [sys.executable, "-m", "scrapy", "export", str(dest), "--format", "webdataset", "--seed", "3",
               "--split", "0.8,0.2", "--no-progress", "-s", f"OUTPUT_DIR={catalogue['output']}",
               "-s", f"EXPORT_TRIGGER_WORD={TRIGGER}", "-s", "EXPORT_SHARD_SIZE=10"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Exported" in done.stdout and "duplicates left out: 2 (1 exact, 1 near)" in done.stdout
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "webdataset" and manifest["settings"]["EXPORT_SHARD_SIZE"] == 10
    forced = subprocess.run([*command, "--force"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert forced.returncode == 0 and file_hashes(dest)["manifest.json"]
    helped = subprocess.run([sys.executable, "-m", "scrapy", "export", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "--format" in helped.stdout and "--faces" in helped.stdout
    assert all(option in helped.stdout for option in ("--crop", "--size", "--fit", "--pad-colour", "--max-upscale"))


# --- hardening: DEST never inside the crawl, --where never outside its parentheses ----------------


def own_crawl(catalogue: dict, tmp_path: Path) -> Path:
    """A copy of the crawl for a test that (without the fix) damages it: the shared one stays whole."""
    output = tmp_path / "crawl"
    shutil.copytree(catalogue["output"], output, symlinks=True)
    return output


def scrapy_export(output: Path, dest: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "scrapy", "export", str(dest), "--no-progress", *args,
               "-s", f"OUTPUT_DIR={output}"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def assert_usage_error(done: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2 and one clear line, never a traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and message in done.stderr, done.stderr[-3000:]


def assert_data_error(done: subprocess.CompletedProcess, message: str) -> None:
    """The command line was right, the data could not give an export: exit 1, one line, no usage banner."""
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"scrapy export: error: {message}" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "usage:" not in done.stderr.casefold(), done.stderr[-3000:]


def catalogue_files_exist(output: Path) -> bool:
    with closing(sqlite3.connect(output / "catalog.db")) as conn:
        paths = [p for (p,) in conn.execute("SELECT path FROM images WHERE path IS NOT NULL")]
    return bool(paths) and all((output / p).is_file() for p in paths)


def secret_picture(folder: Path) -> Path:
    """A readable JPEG outside the crawl, which no export may copy."""
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "secret.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(secret, quality=90)
    return secret


def test_an_export_into_the_crawls_own_folders_is_refused_and_they_stay_whole(catalogue, tmp_path):
    output = own_crawl(catalogue, tmp_path)
    (tmp_path / "link").symlink_to(output, target_is_directory=True)
    before = {name: file_hashes(output / name) for name in ("images", "originals", "faces")}
    assert all(before.values())
    db_before = dump(output / "catalog.db")
    for dest in (output / "images", output / "originals"):
        assert_usage_error(scrapy_export(output, dest, "--force"), "inside the crawl")
    for dest in (output / "images" / "sub", output / "faces", output / "dropped", output / "logs",
                 tmp_path / "link" / "images", tmp_path / "link" / "originals" / "x"):
        with pytest.raises(ExportError, match="inside the crawl"):
            run_export(output, dest, force=True)
    assert {name: file_hashes(output / name) for name in before} == before
    assert dump(output / "catalog.db") == db_before and catalogue_files_exist(output)
    assert not (output / "dropped").exists() and not (output / "logs").exists()


def test_an_export_onto_the_crawl_or_a_folder_holding_it_is_refused(catalogue, tmp_path):
    output = own_crawl(catalogue, tmp_path)
    images = file_hashes(output / "images")
    assert_usage_error(scrapy_export(output, output, "--force"), "holds")
    for dest in (output, tmp_path, tmp_path / "link"):
        if dest.name == "link":
            dest.symlink_to(output, target_is_directory=True)
        with pytest.raises(ExportError, match="holds"):
            run_export(output, dest, force=True)
    # The catalogue elsewhere: its folder is refused too.
    elsewhere = tmp_path / "db-folder"
    elsewhere.mkdir()
    shutil.copy2(output / "catalog.db", elsewhere / "catalog.db")
    settings = settings_for(output, CATALOG_DB=str(elsewhere / "catalog.db"))
    with pytest.raises(ExportError, match="holds"):
        export(settings, ExportOptions.from_settings(settings, elsewhere, force=True, progress=False))
    assert file_hashes(output / "images") == images and (elsewhere / "catalog.db").is_file()


def test_an_export_that_skips_every_picture_fails_and_keeps_the_old_dest(catalogue, tmp_path):
    output = own_crawl(catalogue, tmp_path)
    dest = tmp_path / "dest"
    run_export(output, dest, format="hf")
    before = file_hashes(dest)
    for n, picture in enumerate(sorted((output / "images").iterdir())):
        if n % 2:
            picture.unlink()  # missing
        else:
            picture.write_bytes(b"not a picture")  # unreadable
    with pytest.raises(ExportError, match="every selected picture was skipped"):
        run_export(output, dest, format="hf", force=True)
    assert file_hashes(dest) == before and not list(tmp_path.glob(".*"))
    done = scrapy_export(output, dest, "--force", "--format", "hf")
    assert_data_error(done, "every selected picture was skipped")
    assert file_hashes(dest) == before and not list(tmp_path.glob(".*"))
    fresh = tmp_path / "fresh"
    assert_data_error(scrapy_export(output, fresh), "every selected picture was skipped")
    assert not fresh.exists()


def test_where_cannot_close_its_parentheses(catalogue, tmp_path):
    secret = secret_picture(tmp_path / "private")
    outside = os.path.relpath(secret, catalogue["output"])
    assert outside.startswith("..")
    before = dump(catalogue["db"])
    attacks = {
        "or": "1=0) OR (1=1",  # was: every row, even those without a file: TypeError traceback
        "union": f"1=0) UNION SELECT 'x', 0, '{outside}', 'kept', NULL, NULL, NULL, NULL, 't', 'u', 0, 0 "
                 "FROM images WHERE (1",  # was: the secret exported
        "comment": "1=1 /* the rest of the query",
        "open": "(1=1",
    }
    for name, where in attacks.items():
        dest = tmp_path / name
        assert_usage_error(scrapy_export(catalogue["output"], dest, "--where", where), "--where")
        assert not dest.exists()
    for where in attacks.values():
        with pytest.raises(ExportError, match="--where"):
            parse_where(where)
    # Parentheses and quotes inside strings and quoted names are text, not structure.
    for fine in ("a.title != ')'", "a.title != 'it''s ) (' AND \"i\".page >= 0", "a.title NOT LIKE '%/*%' -- why\n",
                 "(i.page = 0 OR (i.page > 0))"):
        assert parse_where(fine).sql == fine.strip()
    commented = run_export(catalogue["output"], tmp_path / "fine", "a.title != 'it''s ) (' -- a comment")
    assert commented["total"] > 0
    assert dump(catalogue["db"]) == before and not list(tmp_path.glob(".*"))


def test_where_reads_only_the_picture_and_tag_tables(catalogue, tmp_path):
    tagged = run_export(catalogue["output"], tmp_path / "tagged",
                        "EXISTS (SELECT 1 FROM image_tags t WHERE t.artwork_id = i.artwork_id AND t.page = i.page "
                        "AND lower(t.tag) = 'long_hair')")
    assert tagged["total"] > 0
    for where in ("EXISTS (SELECT 1 FROM sqlite_master)", "i.artwork_id IN (SELECT artwork_id FROM crawls)",
                  "randomblob(10) IS NOT NULL"):
        with pytest.raises(ExportError, match="not authorized"):
            run_export(catalogue["output"], tmp_path / "x", where)
    assert not (tmp_path / "x").exists()


def test_where_that_never_ends_is_stopped_with_a_clear_error(catalogue, tmp_path):
    recursive = ("EXISTS (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                 "SELECT 1 FROM r WHERE n < 0)")
    started = time.monotonic()
    done = scrapy_export(catalogue["output"], tmp_path / "r", "--where", recursive, "-s", "EXPORT_WHERE_TIMEOUT=2",
                         timeout=30)
    assert_usage_error(done, "recursive CTE")
    # Six copies of images joined: billions of rows, no recursion: the time bound stops it.
    slow = ("EXISTS (SELECT 1 FROM images x1, images x2, images x3, images x4, images x5, images x6 "
            "WHERE x1.page + x2.page + x3.page + x4.page + x5.page + x6.page < 0)")
    done = scrapy_export(catalogue["output"], tmp_path / "s", "--where", slow, "-s", "EXPORT_WHERE_TIMEOUT=1",
                         timeout=30)
    assert_usage_error(done, "--where took longer than 1 s")
    assert time.monotonic() - started < 25
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists() and not list(tmp_path.glob(".*"))
    with pytest.raises(ExportError, match="EXPORT_WHERE_TIMEOUT"):
        ExportOptions.from_settings(settings_for(catalogue["output"], EXPORT_WHERE_TIMEOUT=0), tmp_path / "t")


def test_a_catalogue_path_outside_the_crawl_is_skipped_with_a_reason(catalogue, tmp_path, caplog):
    output = own_crawl(catalogue, tmp_path)
    secret = secret_picture(tmp_path / "private")
    (output / "images" / "link.jpg").symlink_to(secret)
    with closing(sqlite3.connect(output / "catalog.db")) as conn, conn:
        rows = conn.execute("SELECT artwork_id, page FROM images WHERE status = 'kept' AND path LIKE '%.jpg' "
                            "ORDER BY artwork_id, page LIMIT 3").fetchall()
        for (artwork_id, page), path in zip(rows, ("../private/secret.jpg", str(secret), "images/link.jpg")):
            conn.execute("UPDATE images SET path = ? WHERE artwork_id = ? AND page = ?", [path, artwork_id, page])
    with caplog.at_level("WARNING", logger="jobs.export"):
        manifest = run_export(output, tmp_path / "dest")
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    for artwork_id, page in rows:
        assert "outside" in skipped[f"{artwork_id}_p{page}"], skipped
        assert f"{artwork_id}_p{page}" in caplog.text
    assert manifest["total"] > 0
    exported = file_hashes(tmp_path / "dest").values()
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in exported


# --- crops (--crop head/upper_body) and one training size (--size, --fit) --------------------------


def face_boxes(output: Path) -> dict[str, tuple[Path, dict]]:
    """``{key}_f{idx}`` -> (the stored picture, its face box), from the catalogue."""
    with closing(sqlite3.connect(output / "catalog.db")) as conn:
        return {f"{a}_p{p}_f{idx}": (output / path, {"x": x, "y": y, "w": w, "h": h})
                for a, p, idx, x, y, w, h, path in conn.execute(
                    "SELECT f.artwork_id, f.page, f.idx, f.x, f.y, f.w, f.h, i.path FROM faces f "
                    "JOIN images i ON i.artwork_id = f.artwork_id AND i.page = f.page")}


def kept_count(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT count(*) FROM images WHERE status = 'kept' AND path IS NOT NULL").fetchone()[0]


@pytest.mark.parametrize("kind", ["head", "upper_body"])
def test_head_and_upper_body_crops_are_cut_from_the_stored_picture(catalogue, tmp_path, kind):
    from models.crops import RATIOS, crop_box

    dest = tmp_path / kind
    manifest = run_export(catalogue["output"], dest, crop=kind, format="hf", class_from="none", split="1,0")
    assert manifest["crop"] == {"kind": kind, "ratios": RATIOS[kind]} and not manifest["faces"]
    boxes = face_boxes(catalogue["output"])
    crops = sorted((dest / "train").glob("*.jpg"))
    assert len(crops) == manifest["total"] and manifest["total"] + len(manifest["duplicates"]) == len(boxes) == 8
    for crop in crops:
        picture, face = boxes[crop.stem]
        with Image.open(picture) as source:
            box = crop_box(kind, face, *source.size)
            expected = np.asarray(source.convert("RGB").crop(box), dtype=float)
            if kind == "head":  # face (0, 0, 32, 32): 1.8 x 32 across, 2.1 x 32 down, cut to the picture
                assert box == (0, 0, min(45, source.width), min(42, source.height))
            else:
                assert box == (0, 0, min(64, source.width), min(80, source.height))
        with Image.open(crop) as exported:
            assert exported.size == (box[2] - box[0], box[3] - box[1])
            assert np.abs(np.asarray(exported.convert("RGB"), dtype=float) - expected).mean() < 6  # JPEG only
    rows = [json.loads(line) for line in (dest / "train" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(row["face"]["w"] == 32 and row["file_name"].endswith("_f0.jpg") for row in rows)
    # Every other picture is listed, with why it has no crop.
    assert manifest["total"] + len(manifest["duplicates"]) + len(manifest["skipped"]) == kept_count(catalogue["db"])
    assert {s["reason"] for s in manifest["skipped"]} <= {"no face found on it",
                                                          "the face stage never ran on it (scrapy curate --stages faces)"}
    assert "_f" not in "".join(s["key"] for s in manifest["skipped"])


def test_size_and_fit_on_the_command_line(catalogue, tmp_path):
    from models.crops import Fit, crop_box, plan

    output = catalogue["output"]
    # resize: short side at most 48 (never enlarged), both sides on 16; byte-identical again with --force.
    resize = ("--size", "48", "--fit", "resize", "--multiple", "16", "--class-from", "none")
    done = scrapy_export(output, tmp_path / "resize", *resize)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "resize" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["fit"] == {"size": 48, "fit": "resize", "multiple": 16, "pad_colour": None, "max_upscale": 1.0}
    pictures = sorted((tmp_path / "resize").rglob("*.jpg")) + sorted((tmp_path / "resize").rglob("*.png"))
    assert len(pictures) == manifest["total"] > 20
    for path in pictures:
        width, height = Image.open(path).size
        assert width % 16 == 0 and height % 16 == 0 and min(width, height) <= 48
    before = file_hashes(tmp_path / "resize")
    again = scrapy_export(output, tmp_path / "resize", *resize, "--force")
    assert again.returncode == 0 and file_hashes(tmp_path / "resize") == before

    # pad: the head crops (45 px at most) need enlarging to 64. --max-upscale 1 skips them all and the
    # export fails on its data; by default a crop may be enlarged (up to 8x), and the summary says so.
    pad = ("--crop", "head", "--size", "64", "--fit", "pad", "--pad-colour", "#000000", "--class-from", "none")
    refused = scrapy_export(output, tmp_path / "pad", *pad, "--max-upscale", "1")
    assert_data_error(refused, "every selected picture was skipped")
    assert "too small for --size 64 --fit pad" in refused.stderr
    assert not (tmp_path / "pad").exists()
    done = scrapy_export(output, tmp_path / "pad", *pad)
    assert done.returncode == 0 and "head crops" in done.stdout, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "pad" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["fit"]["max_upscale"] == 8.0 and len(manifest["enlarged"]) == manifest["total"]
    assert f"enlarged to --size: {manifest['total']} of {manifest['total']}" in done.stdout
    assert all(1 < factor <= 8 for factor in manifest["enlarged"].values())
    boxes = face_boxes(output)
    crops = sorted((tmp_path / "pad").rglob("*.jpg"))
    assert crops
    for crop in crops:
        picture, face = boxes[crop.stem]
        with Image.open(picture) as source:
            left, top, right, bottom = crop_box("head", face, *source.size)
        steps = plan(right - left, bottom - top, Fit(64, "pad", (0, 0, 0), max_upscale=8.0))
        pixels = np.asarray(Image.open(crop).convert("RGB"), dtype=int)
        assert pixels.shape == (64, 64, 3) and steps.size != (64, 64)
        (x, y), (w, h) = steps.offset, steps.size
        bars = np.concatenate([pixels[:y].reshape(-1, 3), pixels[y + h:].reshape(-1, 3),
                               pixels[:, :x].reshape(-1, 3), pixels[:, x + w:].reshape(-1, 3)])
        assert len(bars) and bars.mean() < 12  # the letterbox is black (JPEG noise aside)

    # --faces is --crop face: the same files.
    faces = scrapy_export(output, tmp_path / "faces", "--faces")
    crop_face = scrapy_export(output, tmp_path / "crop-face", "--crop", "face")
    assert faces.returncode == crop_face.returncode == 0
    assert file_hashes(tmp_path / "faces") == file_hashes(tmp_path / "crop-face")
    assert_usage_error(scrapy_export(output, tmp_path / "x", "--fit", "pad"), "--fit needs --size N")
    assert_usage_error(scrapy_export(output, tmp_path / "x", "--faces", "--crop", "head"), "--faces is --crop face")


def test_bad_alignment_options_are_refused(catalogue, tmp_path):
    settings = settings_for(catalogue["output"])
    for given, message in (({"size": 64, "pad_colour": "nope"}, "--pad-colour"), ({"size": 0}, "--size"),
                           ({"size": 64, "multiple": 0}, "--multiple"), ({"size": 64, "max_upscale": 0.5}, "--max-upscale"),
                           ({"size": 64, "fit": "stretch"}, "--fit"), ({"crop": "feet"}, "--crop"),
                           ({"max_upscale": 2.0}, "--max-upscale needs --size")):
        with pytest.raises(ExportError, match=message):
            ExportOptions.from_settings(settings, tmp_path / "x", **given)


@pytest.mark.parametrize("crop", ["head", "upper_body", "face"])
def test_face_boxes_that_are_empty_or_outside_the_picture_are_skipped_with_a_reason(catalogue, tmp_path, crop):
    output = own_crawl(catalogue, tmp_path)
    with closing(sqlite3.connect(output / "catalog.db")) as conn, conn:
        faces = conn.execute("SELECT f.artwork_id, f.page, i.width, i.height FROM faces f JOIN images i "
                             "ON i.artwork_id = f.artwork_id AND i.page = f.page ORDER BY f.artwork_id LIMIT 5").fetchall()
        bad = [(0, 0, 0, 20), (5, 5, 20, -3), ("w", "h", "x", "y"), (10_000, 10_000, 20, 20), (-50, -50, 20, 20)]
        for (artwork_id, page, width, height), (x, y, w, h) in zip(faces, bad):
            if x == "w":  # beyond the right edge of this very picture
                x, y, w, h = width, 0, 20, 20
            conn.execute("UPDATE faces SET x = ?, y = ?, w = ?, h = ?  WHERE artwork_id = ? AND page = ?",
                         [x, y, w, h, artwork_id, page])
    manifest = run_export(output, tmp_path / "dest", crop=crop, format="hf", class_from="none", split="1,0")
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    reasons = [skipped.get(f"{artwork_id}_p{page}_f0", "") for artwork_id, page, _, _ in faces]
    assert [r.split(" (")[0].split(" lies")[0] for r in reasons] == [
        "its face box is empty", "its face box is empty", "its face box", "its face box", "its face box"], reasons
    assert all("outside the" in r for r in reasons[2:]), reasons
    crops = list((tmp_path / "dest" / "train").glob("*.jpg"))
    assert len(crops) == manifest["total"] == 3  # the other three good boxes of the fixture
    assert all(min(Image.open(c).size) > 1 for c in crops)


def test_a_selection_without_faces_is_the_datas_fault_not_the_command_lines(catalogue, tmp_path):
    """Right options, no picture with a face among those selected: exit 1 and one line, no usage banner."""
    done = scrapy_export(catalogue["output"], tmp_path / "heads", "--crop", "head", "--where", "a.page_count > 99")
    assert_data_error(done, "the selection matched no pictures with faces")
    assert not (tmp_path / "heads").exists()


def test_size_bounds_and_unusable_dest_are_refused_before_any_work(catalogue, tmp_path):
    settings = settings_for(catalogue["output"])
    for given, message in (({"size": 100_000}, "--size must be from 1 to 8192"),
                           ({"size": 64, "max_upscale": 1e9}, "--max-upscale must be from 1"),
                           ({"size": 64, "max_upscale": float("nan")}, "--max-upscale must be from 1"),
                           ({"size": 64, "max_upscale": float("inf")}, "--max-upscale must be from 1"),
                           ({"size": 64, "multiple": 10**6}, "--multiple must be from 1 to 8192")):
        with pytest.raises(ExportError, match=message):
            ExportOptions.from_settings(settings, tmp_path / "x", **given)
    with pytest.raises(ExportError, match="EXPORT_KOHYA_RESOLUTION must be from 64 to 8192"):
        ExportOptions.from_settings(settings_for(catalogue["output"], EXPORT_KOHYA_RESOLUTION=10**6), tmp_path / "x")
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    for dest, message in ((str(tmp_path / "a-file" / "dest"), "a-file is a file, not a folder"),
                          (str(tmp_path / "a-file" / "deeper" / "dest"), "a-file is a file, not a folder"),
                          ("/proc/anime-export", "is in /proc, a folder of the system's"),
                          ("/sys/kernel/anime", "is in /sys"), ("", "DEST is empty"), ("  ", "DEST is empty")):
        assert_usage_error(scrapy_export(catalogue["output"], dest), message)
    done = scrapy_export(catalogue["output"], tmp_path / "big", "--size", "100000")
    assert_usage_error(done, "--size must be from 1 to 8192")
    assert not (tmp_path / "big").exists()


def test_where_that_builds_a_huge_value_is_stopped_by_the_memory_limit_not_the_clock(catalogue, tmp_path):
    huge = "length(" + "hex(" * 28 + "i.artwork_id" + ")" * 28 + ") > 0"
    started = time.monotonic()
    with pytest.raises(ExportError, match="string or blob too big.*may be at most 16 MB"):
        settings = settings_for(catalogue["output"], EXPORT_WHERE_TIMEOUT=300)
        export(settings, ExportOptions.from_settings(settings, tmp_path / "h", selection=parse_where(huge), progress=False))
    assert time.monotonic() - started < 60  # far under the 300 s clock
    with pytest.raises(ExportError, match="at most 10,000"):
        parse_where("i.page = 0 AND " + " AND ".join(["i.page >= 0"] * 1000))
    for deep in ("abs(" * 120 + "i.page" + ")" * 120 + " >= 0", "(" * 200 + "1" + ")" * 200 + " = 1"):
        with pytest.raises(ExportError, match="nest at most 100 deep"):
            run_export(catalogue["output"], tmp_path / "d", deep)
    assert not (tmp_path / "h").exists() and not (tmp_path / "d").exists()
    # the limits are lifted after the query: the normal export still works
    assert run_export(catalogue["output"], tmp_path / "ok", "length(hex(hex(i.artwork_id))) > 0")["total"] > 0


def test_where_rules_are_checked_like_the_crawls(tmp_path):
    for where, message in (("{if: classifier, min: 8e-1}", "--where, rule 1: a classifier rule's min must be a number"),
                           ("[{if: r18, action: drop},\n {if: bookmarks, min: .nan}]", "--where, rule 2 (line 2): bookmarks min"),
                           ('{"if": "bookmarks", "min": NaN}', "bookmarks min must be a number >= 0, not 'NaN' (text)"),
                           ("{if: ai, min: 1}", "an ai rule takes nothing more; unknown key 'min'")):
        with pytest.raises(ExportError, match=re.escape(message)):
            parse_where(where)
    rules = tmp_path / "select.yaml"
    rules.write_text("- {if: tag, any: [mona]}\n- {if: faces, count: .inf}\n", encoding="utf-8")
    with pytest.raises(ExportError, match=re.escape(f"{rules}, rule 2 (line 2): faces count must be a number >= 0, not inf")):
        parse_where(str(rules))
