"""crawler/commands/crawl.py: a setting the crawl cannot use stops it with one line, exit 2, before any
request and without a crawl row; a crawl that ends failed exits non-zero."""

from __future__ import annotations

import json

import pytest

from tests.crawler.test_pixiv_spider import search_queries


def bad_settings(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model\n", encoding="utf-8")
    (tmp_path / "broken.keras").write_bytes(b"not a model")
    (tmp_path / "broken.json").write_text("{}", encoding="utf-8")
    (tmp_path / "rules.yaml").write_text(
        "# YAML 1.1 reads 8e-1 as text\n- {action: drop, if: r18}\n- {action: keep, if: classifier, min: 8e-1}\n",
        encoding="utf-8")
    return {
        "tagger on a text file": (("-s", f"TAGGER_PROJECT={tmp_path / 'notes.txt'}"),
                                  "TAGGER_PROJECT=", "not a folder"),
        "tagger missing": (("-s", f"TAGGER_PROJECT={tmp_path / 'nowhere'}"), "TAGGER_PROJECT=", "nowhere"),
        "classifier broken": (("-s", f"CLASSIFIER_MODEL={tmp_path / 'broken.keras'}"),
                              "CLASSIFIER_MODEL=", "the classifier model cannot be loaded"),
        "classifier missing": (("-s", f"CLASSIFIER_MODEL={tmp_path / 'missing.keras'}"), "CLASSIFIER_MODEL=", "missing.keras"),
        "rule as text": (("-s", f"CURATE_RULES_FILE={tmp_path / 'rules.yaml'}"),
                         "rules.yaml, rule 2 (line 3)", "min must be a number from 0 to 1, not '8e-1'"),
        "rule with NaN": (("-s", 'CURATE_RULES=[{"action": "drop", "unless": "bookmarks", "min": NaN}]'),
                          "CURATE_RULES, rule 1 (line 1)", "bookmarks min must be a number >= 0, not nan"),
        "rule with an unknown key": (("-s", 'CURATE_RULES=[{"action": "drop", "if": "r18", "min": 1}]'),
                                     "CURATE_RULES, rule 1", "an r18 rule takes nothing more; unknown key 'min'"),
        "a spider argument": (("-a", "pages=-3"), "pages must be at least 1", "not -3"),
        "a spider argument of the search": (("-a", "order=sideways"), "order must be one of", "sideways"),
    }


@pytest.mark.parametrize("case", ["tagger on a text file", "tagger missing", "classifier broken", "classifier missing",
                                  "rule as text", "rule with NaN", "rule with an unknown key", "a spider argument",
                                  "a spider argument of the search"])
def test_a_setting_the_crawl_cannot_use_stops_it_before_any_request(pixiv_site, run_crawl, tmp_path, case):
    args, names, why = bad_settings(tmp_path)[case]
    pixiv_site.reset_stats()
    run = run_crawl(pixiv_site, tmp_path / "out", *args, "-s", "LOG_LEVEL=WARNING")
    assert run.returncode == 2, run.log[-3000:]
    [line] = [line for line in run.log.splitlines() if line.startswith("scrapy crawl: error:")]
    assert names in line and why in line, line
    assert "Traceback" not in run.log and " ERROR: " not in run.log, run.log[-3000:]
    assert pixiv_site.stats()["requests"] == []
    assert not (tmp_path / "out" / "catalog.db").exists() or run.query("SELECT count(*) FROM crawls") == [(0,)]


def test_a_crawl_whose_search_fails_exits_1_with_the_status(make_site, run_crawl, tmp_path):
    site = make_site("--size", "30", "--image-size", "32")
    run = run_crawl(site, tmp_path / "out", "-s", "USER_AGENT=curl/8.0")  # the site refuses what is not a browser
    assert run.returncode == 1, run.log[-3000:]
    assert run.query("SELECT status, reason FROM crawls") == [("failed", "a search page failed: HTTP 403")]
    assert len(search_queries(site)) == 1


def test_the_rules_json_on_the_command_line_names_the_rule_line(pixiv_site, run_crawl, tmp_path):
    rules = json.dumps([{"action": "drop", "if": "r18"}, {"action": "keep", "if": "tag", "any": [2024]}], indent=1)
    run = run_crawl(pixiv_site, tmp_path / "out", "-s", f"CURATE_RULES={rules}", "-s", "LOG_LEVEL=WARNING")
    assert run.returncode == 2
    assert "CURATE_RULES, rule 2 (line 6): a tag rule's tags are text, not 2024; quote it: '2024'" in run.log, run.log
