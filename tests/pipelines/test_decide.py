"""Keep/drop rules: first match decides, the reason names the rule, bad rules are refused."""

from __future__ import annotations

import pytest

from pipelines.decide import RuleError, check_rules, decide

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
