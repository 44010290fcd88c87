"""Keep/drop rules: first match decides, the reason names the rule, bad rules are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scrapy.utils.test import get_crawler

from core.items import ArtworkItem
from pipelines.decide import DecisionPipeline
from stages.decide import decide
from stages.rules import check_rules
from tests.conftest import project_settings

MONA = ["mona_(genshin_impact)", "モナ(原神)", "莫娜"]
ARTWORK = {"x_restrict": 0, "ai_type": 1, "tags": [{"name": "原神"}, {"name": "GenshinImpact"}]}


def classified(score, label="mona"):
    return {"classifier": {"label": label, "target": "mona", "score": score, "model": "classifier-abc"}}


RULES = check_rules([
    {"action": "drop", "if": "r18"},
    {"action": "keep", "if": "classifier", "min": 0.8},
    {"action": "keep", "if": "tag", "any": MONA},
    {"action": "drop", "if": "no_face"},
])


def test_first_matching_rule_decides_and_says_why():
    assert decide(classified(0.93), ARTWORK, RULES, "drop") == (
        "keep", "keep: classifier mona 0.930 >= 0.8 (classifier-abc) (rule 2)")
    action, reason = decide(classified(0.93), {**ARTWORK, "x_restrict": 1}, RULES, "keep")
    assert action == "drop" and "R-18" in reason and "rule 1" in reason


def test_tags_match_model_tags_and_pixiv_tags_in_any_case():
    model = {"model_tags": [{"tag": "Mona_(Genshin_Impact)", "score": 0.91, "model": "dd-1"}]}
    assert decide(model, ARTWORK, RULES, "drop")[1] == "keep: model tag Mona_(Genshin_Impact) 0.910 (dd-1) (rule 3)"
    pixiv = {**ARTWORK, "tags": [{"name": "莫娜"}]}
    assert decide({}, pixiv, RULES, "drop") == ("keep", "keep: Pixiv tag 莫娜 (rule 3)")


def test_a_stage_that_did_not_run_does_not_match():
    # no classifier result and faces never searched: only the default can decide
    assert decide({}, ARTWORK, RULES, "drop") == ("drop", "drop: no rule matched (CURATE_DEFAULT)")
    assert decide({"faces": []}, ARTWORK, RULES, "keep")[1] == "drop: no face found (rule 4)"
    assert decide(classified(0.5), ARTWORK, RULES, "keep")[0] == "keep"


def test_max_rules_and_ai():
    rules = check_rules([{"action": "drop", "if": "classifier", "max": 0.2}, {"action": "drop", "if": "ai"}])
    assert decide(classified(0.1), ARTWORK, rules, "keep")[1].startswith("drop: classifier mona 0.100 < 0.2")
    assert decide({}, {**ARTWORK, "ai_type": 2}, rules, "keep")[1] == "drop: AI-generated (aiType 2) (rule 2)"


# The rules of docs/curation.md, written by hand as people write them: comments, unquoted Japanese, flow lists.
YAML_RULES = """\
# Mona or not: R-18 out first, then the classifier, then loose Pixiv tags.
- action: drop
  if: r18
- {action: keep, if: classifier, min: 0.8}
- action: keep
  if: tag
  any: [mona_(genshin_impact), モナ(原神), 莫娜]
"""


def decision_pipeline(tmp_path: Path, **settings: object) -> DecisionPipeline:
    crawler = get_crawler(settings_dict=project_settings(OUTPUT_DIR=str(tmp_path), **settings))
    return DecisionPipeline.from_crawler(crawler)


def stored_item(tmp_path: Path, work_id: str, artwork: dict, *records: dict) -> ArtworkItem:
    """An item whose pages are stored JPEGs under tmp_path/images/, as the JPEG stage leaves them."""
    images = []
    for page, record in enumerate(records):
        relative = f"images/{work_id}_p{page}.jpg"
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"jpeg")
        images.append({"page": page, "status": "kept", "path": relative, **record})
    return ArtworkItem(artwork={"id": work_id, **artwork}, images=images)


@pytest.mark.parametrize("name", ["rules.yaml", "rules.yml", "RULES.YAML"])
def test_a_yaml_rules_file_drives_the_decisions(tmp_path, name):
    rules_file = tmp_path / name
    rules_file.write_text(YAML_RULES, encoding="utf-8")
    pipeline = decision_pipeline(tmp_path, CURATE_RULES_FILE=str(rules_file), CURATE_DEFAULT="drop")
    assert [rule["if"] for rule in pipeline.rules] == ["r18", "classifier", "tag"]
    assert pipeline.rules[2]["any"] == MONA

    tagged = stored_item(tmp_path, "1", {**ARTWORK, "tags": [{"name": "モナ(原神)"}]}, classified(0.3), classified(0.95))
    r18 = stored_item(tmp_path, "2", {**ARTWORK, "x_restrict": 1}, classified(0.99))
    plain = stored_item(tmp_path, "3", ARTWORK, classified(0.1))
    for item in (tagged, r18, plain):
        pipeline.process_item(item)

    assert [(r["status"], r["reason"]) for r in tagged.images] == [
        ("kept", "keep: Pixiv tag モナ(原神) (rule 3)"),
        ("kept", "keep: classifier mona 0.950 >= 0.8 (classifier-abc) (rule 2)"),
    ]
    assert r18.images[0]["status"] == "dropped" and r18.images[0]["reason"].startswith("drop: R-18")
    assert plain.images[0]["reason"] == "drop: no rule matched (CURATE_DEFAULT)"
    assert {r["path"] for r in (r18.images[0], plain.images[0])} == {"dropped/2_p0.jpg", "dropped/3_p0.jpg"}
    assert sorted(p.name for p in (tmp_path / "dropped").iterdir()) == ["2_p0.jpg", "3_p0.jpg"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["1_p0.jpg", "1_p1.jpg"]


PICTURE = {"page": 0, "width": 600, "height": 1400, "faces": [{"x": 1}], "colorfulness": 42.0, "line_art": 0.1}


def reason(record: dict, rule: dict, artwork: dict | None = None) -> str | None:
    """Why the one rule matches (decide's reason), or None when it does not (the default decides)."""
    action, why = decide(record, {**ARTWORK, **(artwork or {})}, check_rules([rule]), "keep")
    return None if why.endswith("(CURATE_DEFAULT)") else why


@pytest.mark.parametrize(
    ("rule", "record", "artwork", "expected"),
    [
        # size: the short side against min_side, the long side against max_side, width x height against pixels
        ({"action": "drop", "unless": "size", "min_side": 800}, {}, {}, "drop: short side 600 < 800 (rule 1)"),
        ({"action": "drop", "unless": "size", "min_side": 512}, {}, {}, None),
        ({"action": "keep", "if": "size", "min_side": 512, "max_side": 2000}, {}, {},
         "keep: short side 600 >= 512, long side 1400 <= 2000 (rule 1)"),
        ({"action": "drop", "if": "size", "max_pixels": 1_000_000}, {}, {}, "drop: pixels 840000 <= 1000000 (rule 1)"),
        ({"action": "drop", "unless": "size", "min_pixels": 1_000_000}, {}, {}, "drop: pixels 840000 < 1000000 (rule 1)"),
        # aspect: long side / short side
        ({"action": "drop", "unless": "aspect", "max": 2.0}, {}, {}, "drop: aspect 2.33 > 2.0 (rule 1)"),
        ({"action": "drop", "unless": "aspect", "max": 2.5}, {}, {}, None),
        ({"action": "drop", "if": "aspect", "min": 2}, {"width": 1400, "height": 600}, {}, "drop: aspect 2.33 >= 2 (rule 1)"),
        # faces: an exact count, or a range; not searched: no match either way
        ({"action": "keep", "if": "faces", "count": 1}, {}, {}, "keep: faces 1 == 1 (rule 1)"),
        ({"action": "drop", "unless": "faces", "count": 1}, {"faces": [{}, {}, {}]}, {}, "drop: faces 3 != 1 (rule 1)"),
        ({"action": "drop", "unless": "faces", "count": 1}, {"faces": None}, {}, None),
        ({"action": "drop", "if": "faces", "min": 2}, {"faces": []}, {}, None),
        ({"action": "drop", "if": "faces", "max": 0}, {"faces": []}, {}, "drop: faces 0 <= 0 (rule 1)"),
        # bookmarks: the artwork's; none stored (a folder picture): no match
        ({"action": "drop", "unless": "bookmarks", "min": 100}, {}, {"bookmark_count": 42},
         "drop: bookmarks 42 < 100 (rule 1)"),
        ({"action": "keep", "if": "bookmarks", "min": 100}, {}, {"bookmark_count": 150}, "keep: bookmarks 150 >= 100 (rule 1)"),
        ({"action": "drop", "unless": "bookmarks", "min": 100}, {}, {"bookmark_count": None}, None),
        # page: first pages only
        ({"action": "drop", "unless": "page", "max": 0}, {"page": 2}, {}, "drop: page 2 > 0 (rule 1)"),
        ({"action": "drop", "unless": "page", "max": 0}, {"page": 0}, {}, None),
        ({"action": "keep", "if": "page", "min": 1, "max": 3}, {"page": 3}, {}, "keep: page 3 >= 1, page 3 <= 3 (rule 1)"),
        # monochrome: by colorfulness, else by line art; no statistics: no match
        ({"action": "drop", "if": "monochrome"}, {"colorfulness": 0.4}, {},
         "drop: monochrome (colorfulness 0.4 <= 3) (rule 1)"),
        ({"action": "drop", "if": "monochrome"}, {"colorfulness": 12.0, "line_art": 0.83}, {},
         "drop: sketch-like line art (line_art 0.83 >= 0.6, colorfulness 12.0) (rule 1)"),
        ({"action": "drop", "if": "monochrome", "line_art": False}, {"colorfulness": 12.0, "line_art": 0.83}, {}, None),
        ({"action": "drop", "if": "monochrome", "max": 15}, {"colorfulness": 12.0}, {},
         "drop: monochrome (colorfulness 12.0 <= 15) (rule 1)"),
        ({"action": "drop", "if": "monochrome"}, {}, {}, None),
        ({"action": "drop", "if": "monochrome"}, {"colorfulness": None, "line_art": None}, {}, None),
        # duplicate: only the curate-time grouping says which copy a picture repeats
        ({"action": "drop", "if": "duplicate"}, {}, {}, None),
        ({"action": "drop", "if": "duplicate"}, {"duplicate_of": {"of": "12345 p0", "kind": "near", "distance": 3}}, {},
         "drop: near-duplicate of 12345 p0 (phash distance 3) (rule 1)"),
        ({"action": "drop", "if": "duplicate", "distance": 0},
         {"duplicate_of": {"of": "12345 p1", "kind": "exact", "distance": 0}}, {},
         "drop: exact duplicate of 12345 p1 (same sha256) (rule 1)"),
    ],
)
def test_filter_conditions_match_with_value_and_threshold_in_the_reason(rule, record, artwork, expected):
    assert reason({**PICTURE, **record}, rule, artwork) == expected


def test_unknown_size_matches_neither_if_nor_unless():
    for word in ("if", "unless"):
        for rule in ({"action": "drop", word: "size", "min_side": 1}, {"action": "drop", word: "aspect", "max": 9}):
            assert reason({"page": 0, "width": None, "height": None}, rule) is None


def test_tag_rules_take_all_and_none():
    record = {"model_tags": [{"tag": "1girl", "score": 0.97, "model": "dd-1"}]}
    both = {"action": "keep", "if": "tag", "all": ["1girl", "原神"]}
    assert reason(record, both) == "keep: model tag 1girl 0.970 (dd-1); Pixiv tag 原神 (rule 1)"
    assert reason({}, both) is None  # 1girl missing
    without = {"action": "drop", "if": "tag", "none": MONA}
    assert reason(record, without) == (
        "drop: none of the tags mona_(genshin_impact), モナ(原神), 莫娜 (rule 1)")
    assert reason(record, without, {"tags": [{"name": "モナ(原神)"}]}) is None
    excluded = {"action": "drop", "if": "tag", "any": ["comic", "4koma"]}  # excluding tags: drop with any
    assert reason({}, excluded, {"tags": [{"name": "4KOMA"}]}) == "drop: Pixiv tag 4KOMA (rule 1)"


def test_the_crawl_drops_monochrome_pages_and_later_pages_with_the_jpeg_stages_numbers(tmp_path):
    rules = [{"action": "drop", "if": "monochrome"}, {"action": "drop", "unless": "page", "max": 1},
             {"action": "drop", "if": "duplicate"}]  # no grouping in a crawl: never matches
    pipeline = decision_pipeline(tmp_path, CURATE_RULES=json.dumps(rules))
    item = stored_item(tmp_path, "5", ARTWORK,
                       {"colorfulness": 40.0, "line_art": 0.1}, {"colorfulness": 0.2, "line_art": 0.1},
                       {"colorfulness": 40.0, "line_art": 0.1})
    pipeline.process_item(item)
    assert [(r["status"], r["reason"]) for r in item.images] == [
        ("kept", "keep: no rule matched (CURATE_DEFAULT)"),
        ("dropped", "drop: monochrome (colorfulness 0.2 <= 3) (rule 1)"),
        ("dropped", "drop: page 2 > 1 (rule 2)"),
    ]
