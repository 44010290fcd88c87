"""stages/rules.py: a rule list is checked whole before any picture is judged, and a bad rule says
which, where (file, rule, line) and why."""

from __future__ import annotations

import json

import pytest

from stages.rules import CONDITIONS, MAX_NODES, MAX_RULES, MAX_TAGS, RuleError, check_rules, load_rules, read_rules_file
from tests.stages.test_decide import YAML_RULES, decision_pipeline


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"action": "maybe", "if": "r18"}, "action must be keep or drop"),
        ({"action": "keep", "if": "vibes"}, "'if' must be one of"),
        ({"action": "keep", "if": "classifier"}, "exactly one of min or max"),
        ({"action": "keep", "if": "tag", "any": []}, "non-empty list"),
        ("keep everything", "not an object"),
    ],
)
def test_bad_rules_are_refused_clearly(rule, message):
    with pytest.raises(RuleError, match=message):
        check_rules([rule])



def test_a_json_rules_file_still_works_and_reads_the_same_as_yaml(tmp_path):
    (tmp_path / "rules.yaml").write_text(YAML_RULES, encoding="utf-8")
    as_yaml = read_rules_file(tmp_path / "rules.yaml")
    (tmp_path / "rules.json").write_text(json.dumps(as_yaml, ensure_ascii=False), encoding="utf-8")
    assert read_rules_file(tmp_path / "rules.json") == as_yaml
    pipeline = decision_pipeline(tmp_path, CURATE_RULES_FILE=str(tmp_path / "rules.json"))
    assert pipeline.rules == as_yaml


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        # an unclosed flow list: the error points at the line the parser gave up on
        ("rules.yaml", "- action: keep\n  if: tag\n  any: [モナ(原神), 莫娜\n- action: drop\n  if: r18\n",
         r"rules\.yaml, line 4 column 9: not valid YAML: expected ',' or '\]'.*flow sequence that starts on line 3"),
        ("rules.yml", "- action: drop\n  if: r18\n\tmin: 1\n",
         r"rules\.yml, line 3 column 1: not valid YAML: found character '\\t' that cannot start any token"),
        ("rules.yaml", "action: drop\nif: r18\n", r"rules\.yaml: the curation rules must be a list, found a dict"),
        ("rules.yaml", "# nothing yet\n", r"rules\.yaml: the curation rules must be a list, found nothing"),
        # the extension decides: YAML syntax in a .json file is a JSON error
        ("rules.json", "- action: drop\n  if: r18\n", r"rules\.json, line 1 column 1: not valid JSON"),
    ],
)
def test_a_broken_rules_file_names_the_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(RuleError, match=message):
        decision_pipeline(tmp_path, CURATE_RULES_FILE=str(tmp_path / name))


def test_a_missing_rules_file_is_a_rule_error(tmp_path):
    with pytest.raises(RuleError, match=r"missing\.yaml: cannot read the curation rules"):
        read_rules_file(tmp_path / "missing.yaml")


# --- the filters dataset builders use ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"action": "drop", "unless": "tag", "any": ["x"]}, r"'unless' works with the range conditions .*write 'if' for tag"),
        ({"action": "drop", "if": "size", "unless": "size", "min_side": 1}, "either 'if' or 'unless', not both"),
        ({"action": "drop", "unless": "sizes", "min_side": 1}, "'unless' must be one of"),
        ({"action": "drop", "unless": "size"}, "a size rule needs at least one of min_side, max_side, min_pixels, max_pixels"),
        ({"action": "drop", "unless": "size", "min_sied": 512},
         "a size rule takes min_side, max_side, min_pixels, max_pixels; unknown key 'min_sied'"),
        ({"action": "drop", "unless": "size", "min_side": "512"}, "size min_side must be a number >= 0, not '512'"),
        ({"action": "drop", "unless": "faces", "count": -1}, "faces count must be a number >= 0"),
        ({"action": "drop", "unless": "bookmarks", "min": True}, "bookmarks min must be a number"),
        ({"action": "drop", "if": "monochrome", "line_art": 2}, "line_art must be a share from 0 to 1, or false"),
        ({"action": "drop", "if": "monochrome", "max": "low"}, "max .colorfulness. must be a number >= 0"),
        ({"action": "drop", "if": "monochrome", "threshold": 3}, "a monochrome rule takes max, line_art; unknown key"),
        ({"action": "drop", "if": "duplicate", "distance": 6.5}, "distance must be a whole number of bits from 0 to 64"),
        ({"action": "drop", "if": "tag", "any": ["x"], "none": ["y"]}, "one non-empty list: 'any', 'all' or 'none'"),
        ({"action": "drop", "if": "tag", "all": []}, "one non-empty list"),
    ],
)
def test_bad_filter_rules_are_refused_clearly(rule, message):
    with pytest.raises(RuleError, match=message):
        check_rules([rule])


def test_only_one_duplicate_rule():
    with pytest.raises(RuleError, match="only one duplicate rule"):
        check_rules([{"action": "drop", "if": "duplicate"}, {"action": "drop", "if": "duplicate", "distance": 2}])


# One rule of each condition that is fine as it is: adding a key it does not take must be refused.
VALID = {
    "r18": {}, "ai": {}, "no_face": {}, "classifier": {"min": 0.5}, "tag": {"any": ["x"]}, "monochrome": {},
    "duplicate": {}, "identity": {}, "size": {"min_side": 1}, "aspect": {"max": 2}, "faces": {"count": 1},
    "bookmarks": {"min": 1}, "page": {"max": 0},
}


@pytest.mark.parametrize("condition", CONDITIONS)
def test_every_rule_kind_refuses_a_key_it_does_not_take(condition):
    rule = {"action": "drop", "if": condition, **VALID[condition]}
    assert check_rules([rule])
    with pytest.raises(RuleError, match=f"rule 1: an? {condition} rule takes .*; unknown key 'mni'"):
        check_rules([{**rule, "mni": 0.5}])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # YAML 1.1 reads 8e-1 as text: before, the crawl lost every item to "'>=' not supported"
        ("{action: keep, if: classifier, min: 8e-1}", r"a classifier rule's min must be a number from 0 to 1, "
                                                      r"not '8e-1' \(text: YAML 1.1 reads 8e-1 as text; write 0.8"),
        ("{action: drop, unless: bookmarks, min: .nan}", "bookmarks min must be a number >= 0, not nan .not a finite"),
        ("{action: drop, unless: size, max_side: .inf}", "size max_side must be a number >= 0, not inf"),
        ("{action: keep, if: classifier, max: -.inf}", "a classifier rule's max must be a number from 0 to 1, not -inf"),
        ("{action: keep, if: classifier, min: 1.5}", "a classifier rule's min must be a number from 0 to 1, not 1.5"),
        ("{action: drop, if: monochrome, max: .nan}", r"a monochrome rule's max \(colorfulness\) must be a number >= 0, not nan"),
        ("{action: drop, if: aspect, max: '2'}", "aspect max must be a number >= 0, not '2'"),
        ("{action: keep, if: tag, any: [2024, モナ]}", "a tag rule's tags are text, not 2024; quote it: '2024'"),
        ("{action: keep, if: tag, any: [null]}", "a tag rule's tags are text, not None"),
        ("{action: keep, if: [r18]}", "'if' must be one of .*, not \\['r18'\\]"),
    ],
)
def test_numbers_must_be_finite_numbers_and_tags_text(tmp_path, text, message):
    path = tmp_path / "rules.yaml"
    path.write_text(f"# two good rules first\n- {{action: drop, if: r18}}\n- {{action: drop, if: ai}}\n- {text}\n",
                    encoding="utf-8")
    with pytest.raises(RuleError, match=r"rules\.yaml, rule 3 \(line 4\): " + message):
        read_rules_file(path)


def test_a_json_file_and_curate_rules_name_the_rule_and_line(tmp_path):
    rules = [{"action": "drop", "if": "r18"}, {"action": "drop", "unless": "bookmarks", "min": float("nan")}]
    (tmp_path / "rules.json").write_text(json.dumps(rules, indent=2), encoding="utf-8")  # NaN: Python's JSON
    with pytest.raises(RuleError, match=r"rules\.json, rule 2 \(line 6\): bookmarks min must be a number >= 0, not nan"):
        read_rules_file(tmp_path / "rules.json")
    with pytest.raises(RuleError, match=r"^CURATE_RULES, rule 2 \(line 6\): bookmarks min"):
        load_rules({"CURATE_RULES": json.dumps(rules, indent=2)})
    with pytest.raises(RuleError, match=r"^CURATE_RULES, rule 2 \(line 1\): bookmarks min"):
        load_rules({"CURATE_RULES": json.dumps(rules).replace("NaN", "Infinity")})
    with pytest.raises(RuleError, match=r"^CURATE_RULES, rule 1: an ai rule takes nothing more; unknown key 'when'"):
        load_rules({"CURATE_RULES": [{"action": "drop", "if": "ai", "when": "always"}]})
    with pytest.raises(RuleError, match=r"^CURATE_RULES, line 1 column 3: not valid JSON"):
        load_rules({"CURATE_RULES": "[{action: drop}]"})


def test_yaml_aliases_may_share_a_list_but_not_multiply_it(tmp_path):
    shared = tmp_path / "shared.yaml"
    shared.write_text("- {action: keep, if: tag, any: &mona [mona_(genshin_impact), モナ(原神), 莫娜]}\n"
                      "- {action: drop, if: tag, none: *mona}\n", encoding="utf-8")
    assert read_rules_file(shared)[1]["none"] == ["mona_(genshin_impact)", "モナ(原神)", "莫娜"]
    # "billion laughs": nine aliases of nine aliases, seven deep, are 9**7 tags once expanded
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 7)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("- action: keep\n  if: tag\n  any:\n    " + "\n    ".join(f"- {line}" for line in levels)
                    + "\n", encoding="utf-8")
    with pytest.raises(RuleError, match=f"bomb.yaml: the rules expand to .* values with their YAML aliases; at most {MAX_NODES:,}"):
        read_rules_file(bomb)
    loop = tmp_path / "loop.yaml"
    loop.write_text("- &a {action: keep, if: tag, any: [*a]}\n", encoding="utf-8")
    with pytest.raises(RuleError, match="loop.yaml"):
        read_rules_file(loop)


def test_a_rule_list_and_a_tag_list_have_a_size_limit():
    with pytest.raises(RuleError, match=f"^{MAX_RULES + 1} rules; at most {MAX_RULES}"):
        check_rules([{"action": "drop", "if": "ai"}] * (MAX_RULES + 1))
    with pytest.raises(RuleError, match=f"rule 1: a tag rule lists {MAX_TAGS + 1} tags; at most {MAX_TAGS}"):
        check_rules([{"action": "drop", "if": "tag", "any": [f"t{n}" for n in range(MAX_TAGS + 1)]}])
    assert check_rules([{"action": "drop", "if": "tag", "any": [f"t{n}" for n in range(MAX_TAGS)]}])
