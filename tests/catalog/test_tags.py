"""Tag aliases and implications (catalog/tags.py), tag search, `scrapy tags`, and the rules reading them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from scrapy.utils.test import get_crawler

from catalog import tags
from catalog.store import Catalog
from core.items import ArtworkItem
from pipelines.decide import DecisionPipeline
from stages.decide import decide
from stages.rules import check_rules
from tests.conftest import project_settings
from tests.crawler.small_crawl import crawled_copy

REPO = Path(__file__).resolve().parents[2]
MONA = "mona_(genshin_impact)"


def artwork(work_id: str, *names: str, translations: dict[str, str] | None = None) -> dict:
    translations = translations or {}
    return {"id": work_id, "title": f"work {work_id}", "page_count": 1, "status": "ok", "reason": None,
            "tags": [{"name": n, "translation_en": translations.get(n)} for n in names]}


@pytest.fixture
def catalog(tmp_path):
    """Five artworks: Mona under three names (one of them only as a model tag), and stockings."""
    cat = Catalog(tmp_path / "catalog.db")
    kept = [{"page": 0, "status": "kept", "path": "images/x.jpg"}]
    cat.record_artwork(artwork("1", "原神", "モナ(原神)", translations={"モナ(原神)": "Mona (Genshin Impact)",
                                                                     "原神": "Genshin Impact"}), kept, "now")
    cat.record_artwork(artwork("2", "原神", "莫娜"), kept, "now")
    cat.record_artwork(artwork("3", "原神"), [{"page": 0, "status": "kept", "path": "images/3.jpg",
                                              "model_tags": [{"tag": MONA, "score": 0.9, "model": "t1"},
                                                             {"tag": "long_hair", "score": 0.8, "model": "t1"}]}],
                       "now")
    cat.record_artwork(artwork("4", "黑丝", "黑丝袜"), [{"page": 0, "status": "dropped", "reason": "drop: test",
                                                         "path": "dropped/4.jpg"}], "now")
    cat.record_artwork(artwork("5", "甘雨(原神)"), kept, "now")
    yield cat
    cat.close()


def rows(cat: Catalog, table: str) -> list[tuple]:
    return cat.conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


# --- names and aliases ---------------------------------------------------------------------------------

def test_names_match_across_case_width_and_spaces():
    assert tags.normalise("Ｍｏｎａ　(Genshin  Impact)") == MONA  # full-width letters and space
    assert tags.normalise("モナ（原神）") == tags.normalise("モナ(原神)")  # full-width brackets
    assert tags.normalise("ﾓﾅ") == tags.normalise("モナ")  # half-width katakana
    assert tags.normalise(" Long Hair ") == "long_hair"
    assert tags.normalise("long_hair") != tags.normalise("longhair")


def test_aliases_in_any_language_resolve_through_chains_to_one_canonical_tag(catalog):
    tags.add_alias(catalog.conn, "莫娜", MONA)
    tags.add_alias(catalog.conn, "モナ（原神）", MONA)  # full-width brackets: the same key as モナ(原神)
    tags.add_alias(catalog.conn, "Mona", "莫娜")  # a chain: Mona → 莫娜 → mona_(genshin_impact)
    index = tags.TagIndex.load(catalog.conn)
    for name in ("莫娜", "モナ(原神)", "MONA", "mona", "Mona_(Genshin_Impact)", MONA):
        assert index.canonical(name) == MONA, name
    assert index.canonical("甘雨(原神)") == "甘雨(原神)"  # not aliased: itself
    assert tags.canonical_tags(catalog.conn, ["原神", "莫娜", "モナ(原神)"]) == ["原神", MONA]
    # Re-aliasing replaces the row (one row per alias key, whatever the case)
    tags.add_alias(catalog.conn, "MONA", "甘雨(原神)")
    assert tags.TagIndex.load(catalog.conn).canonical("mona") == "甘雨(原神)"
    assert catalog.conn.execute("SELECT count(*) FROM tag_aliases WHERE alias = 'mona'").fetchone()[0] == 1


def test_a_loop_or_a_self_alias_is_refused_clearly_and_changes_nothing(catalog):
    tags.add_alias(catalog.conn, "A", "B")
    tags.add_alias(catalog.conn, "B", "C")
    before = rows(catalog, "tag_aliases")
    with pytest.raises(tags.TagError, match="would make a loop: C → A → B → C"):
        tags.add_alias(catalog.conn, "C", "A")
    with pytest.raises(tags.TagError, match="already the same tag"):
        tags.add_alias(catalog.conn, "Long Hair", "long_hair")
    assert rows(catalog, "tag_aliases") == before


def test_implications_expand_transitively_and_refuse_loops(catalog):
    tags.add_alias(catalog.conn, "莫娜", MONA)
    tags.add_implication(catalog.conn, MONA, "genshin_impact")
    tags.add_implication(catalog.conn, "Genshin Impact", "hoyoverse")  # matched by key
    index = tags.TagIndex.load(catalog.conn)
    assert index.expand(["莫娜", "モナ(原神)", "long_hair"]) == [MONA, "モナ(原神)", "long_hair", "genshin_impact", "hoyoverse"]
    assert index.implied("莫娜") == ["genshin_impact", "hoyoverse"]
    before = rows(catalog, "tag_implications")
    with pytest.raises(tags.TagError, match="would make a loop: mona_\\(genshin_impact\\) already implies hoyoverse"):
        tags.add_implication(catalog.conn, "hoyoverse", MONA)
    with pytest.raises(tags.TagError, match="same tag"):
        tags.add_implication(catalog.conn, "莫娜", MONA)
    with pytest.raises(tags.TagError, match="imply itself"):  # merging a tag with one it implies
        tags.add_alias(catalog.conn, "genshin_impact", MONA)
    assert rows(catalog, "tag_implications") == before
    assert tags.TagIndex.load(catalog.conn).canonical("genshin_impact") == "genshin_impact"


# --- seeding from Pixiv's translations, and the user's file ---------------------------------------------

def test_seeding_makes_each_translation_an_alias_of_its_tag_once(catalog):
    summary = tags.seed_from_translations(catalog.conn)
    assert summary.added == 2 and summary.skipped == []
    index = tags.TagIndex.load(catalog.conn)
    assert index.canonical("Mona (Genshin Impact)") == "モナ(原神)"
    assert index.canonical(MONA) == "モナ(原神)"  # the tagger's name is the translation's key
    assert index.canonical("genshin impact") == "原神"
    assert index.sources[MONA] == tags.TRANSLATION
    assert tags.seed_from_translations(catalog.conn).added == 0  # a second seed changes nothing


def test_a_translation_shared_by_two_tags_names_the_more_used_one(catalog):
    for work_id in ("6", "7"):  # モナ on two artworks, モナ(原神) on one
        catalog.record_artwork(artwork(work_id, "モナ", translations={"モナ": "Mona (Genshin Impact)"}),
                               [{"page": 0, "status": "kept"}], "now")
    summary = tags.seed_from_translations(catalog.conn)
    assert tags.TagIndex.load(catalog.conn).canonical(MONA) == "モナ"
    assert summary.skipped == ["Mona (Genshin Impact) → モナ(原神): already an alias of モナ (translation)"]


TAGS_FILES = {
    "tags.yaml": "aliases:\n  mona_(genshin_impact): [モナ(原神), 莫娜, Mona]\n"
                 "implications:\n  mona_(genshin_impact): genshin_impact\n",
    "tags.toml": '[aliases]\n"mona_(genshin_impact)" = ["モナ(原神)", "莫娜", "Mona"]\n'
                 '[implications]\n"mona_(genshin_impact)" = ["genshin_impact"]\n',
    "tags.json": json.dumps({"aliases": {MONA: ["モナ(原神)", "莫娜", "Mona"]},
                             "implications": {MONA: ["genshin_impact"]}}, ensure_ascii=False),
}


@pytest.mark.parametrize("name", sorted(TAGS_FILES))
def test_the_users_file_wins_over_seeded_translations(catalog, tmp_path, name):
    tags.seed_from_translations(catalog.conn)  # Mona (Genshin Impact) → モナ(原神)
    path = tmp_path / name
    path.write_text(TAGS_FILES[name], encoding="utf-8")
    summary = tags.load_file(catalog.conn, path)
    assert (summary.aliases, summary.implications) == (3, 1)
    assert any("removed the translation alias" in note for note in summary.notes)
    index = tags.TagIndex.load(catalog.conn)
    for alias in ("モナ(原神)", "莫娜", "Mona", "Mona (Genshin Impact)"):
        assert index.canonical(alias) == MONA, alias
    assert index.implied("莫娜") == ["原神"]  # genshin_impact is the translation of 原神, an alias of it
    assert index.sources["莫娜"] == f"file:{name}"
    # Seeding after the file leaves the person's aliases alone
    tags.seed_from_translations(catalog.conn)
    assert tags.TagIndex.load(catalog.conn).canonical("Mona (Genshin Impact)") == MONA


def test_without_pyyaml_a_yaml_file_is_refused_and_toml_still_works(catalog, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    for name in ("tags.yaml", "tags.toml"):
        (tmp_path / name).write_text(TAGS_FILES[name], encoding="utf-8")
    with pytest.raises(tags.TagError, match="YAML needs PyYAML"):
        tags.load_file(catalog.conn, tmp_path / "tags.yaml")
    assert tags.load_file(catalog.conn, tmp_path / "tags.toml").aliases == 3


def test_a_bad_tags_file_is_refused_whole_with_its_name(catalog, tmp_path):
    loops = tmp_path / "loops.json"
    loops.write_text(json.dumps({"aliases": {"B": ["A"], "A": ["B"]}}), encoding="utf-8")
    with pytest.raises(tags.TagError, match=r"loops.json: aliases.A: .*loop"):
        tags.load_file(catalog.conn, loops)
    assert rows(catalog, "tag_aliases") == []  # the first alias went with the second
    broken = tmp_path / "broken.toml"
    broken.write_text("[aliases\n", encoding="utf-8")
    with pytest.raises(tags.TagError, match="broken.toml: not valid TOML"):
        tags.load_file(catalog.conn, broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"aliasses": {}}', encoding="utf-8")
    with pytest.raises(tags.TagError, match="'aliases' and/or 'implications' only"):
        tags.load_file(catalog.conn, wrong)


# --- search ----------------------------------------------------------------------------------------------

def test_search_is_alias_aware_and_counts_every_name(catalog):
    tags.add_alias(catalog.conn, "莫娜", MONA)
    tags.add_alias(catalog.conn, "モナ(原神)", MONA)
    [first, *_] = tags.search(catalog.conn, "莫娜")
    assert (first.tag, first.matched, first.score) == (MONA, "莫娜", 1.0)
    # artwork 1 (モナ(原神)), 2 (莫娜) and 3 (the model tag): three artworks, three kept pictures
    assert (first.artworks, first.pictures, first.kept) == (3, 3, 3)
    assert {"莫娜", "モナ(原神)", MONA} <= set(first.names)
    assert [p.artwork_id for p in tags.pictures_with(catalog.conn, "Mona (genshin impact)")] == ["1", "2", "3"]


def test_search_finds_substrings_and_near_misses(catalog):
    assert [m.tag for m in tags.search(catalog.conn, "黑丝")] == ["黑丝", "黑丝袜"]  # exact first
    [stockings] = [m for m in tags.search(catalog.conn, "黑丝") if m.tag == "黑丝袜"]
    assert (stockings.artworks, stockings.pictures, stockings.kept) == (1, 1, 0)  # dropped, still counted
    assert tags.search(catalog.conn, "Long Hair")[0].tag == "long_hair"
    assert tags.search(catalog.conn, "lnog_hair")[0].tag == "long_hair"  # a typo: fuzzy
    assert tags.search(catalog.conn, "mona")[0].matched in ("Mona (Genshin Impact)", MONA)  # via the translation
    assert tags.search(catalog.conn, "zzzz") == []
    assert len(tags.search(catalog.conn, "原神", limit=2)) == 2


def test_search_counts_pictures_of_implying_tags(catalog):
    tags.add_implication(catalog.conn, "甘雨(原神)", "原神")
    [genshin] = [m for m in tags.search(catalog.conn, "原神") if m.tag == "原神"]
    assert genshin.artworks == 4  # 1, 2, 3 carry it; 5 implies it
    assert [p.artwork_id for p in tags.pictures_with(catalog.conn, "原神")] == ["1", "2", "3", "5"]


# --- keep/drop rules by canonical tag --------------------------------------------------------------------

RULES = check_rules([{"action": "keep", "if": "tag", "any": [MONA]}, {"action": "drop", "if": "tag", "any": ["genshin_impact"]}])
PIXIV_MONA = {"x_restrict": 0, "ai_type": 1, "tags": [{"name": "莫娜"}]}


def test_a_rule_matches_an_alias_and_an_implication_with_the_index_only(catalog):
    assert decide({}, PIXIV_MONA, RULES, "drop")[1] == "drop: no rule matched (CURATE_DEFAULT)"  # as before
    tags.add_alias(catalog.conn, "莫娜", MONA)
    tags.add_implication(catalog.conn, "甘雨(原神)", "genshin_impact")
    index = tags.TagIndex.load(catalog.conn)
    assert decide({}, PIXIV_MONA, RULES, "drop", index) == ("keep", f"keep: Pixiv tag 莫娜 as {MONA} (rule 1)")
    ganyu = {"x_restrict": 0, "ai_type": 1, "tags": [{"name": "甘雨（原神）"}]}
    assert decide({}, ganyu, RULES, "keep", index) == ("drop", "drop: Pixiv tag 甘雨（原神） as genshin_impact (rule 2)")
    model = {"model_tags": [{"tag": "Mona_(Genshin_Impact)", "score": 0.9, "model": "t1"}]}
    assert decide(model, {"tags": []}, RULES, "drop", index)[1] == "keep: model tag Mona_(Genshin_Impact) 0.900 (t1) (rule 1)"


def decision_pipeline(output: Path) -> DecisionPipeline:
    settings = project_settings(OUTPUT_DIR=str(output), CURATE_RULES=RULES, CURATE_DEFAULT="drop")
    return DecisionPipeline.from_crawler(get_crawler(settings_dict=settings))


def mona_item(output: Path) -> ArtworkItem:
    (output / "images").mkdir(parents=True, exist_ok=True)
    (output / "images/9_p0.jpg").write_bytes(b"jpeg")
    return ArtworkItem(artwork={"id": "9", **PIXIV_MONA}, images=[{"page": 0, "status": "kept", "path": "images/9_p0.jpg"}])


def test_the_decision_stage_reads_the_catalogues_aliases_at_start(tmp_path):
    plain = decision_pipeline(tmp_path / "fresh")  # no catalogue yet: plain matching
    assert plain.tags is None
    assert plain.process_item(mona_item(tmp_path / "fresh")).images[0]["status"] == "dropped"
    cat = Catalog(tmp_path / "aliased" / "catalog.db")
    tags.add_alias(cat.conn, "莫娜", MONA)
    cat.close()
    aliased = decision_pipeline(tmp_path / "aliased")
    record = aliased.process_item(mona_item(tmp_path / "aliased")).images[0]
    assert (record["status"], record["reason"]) == ("kept", f"keep: Pixiv tag 莫娜 as {MONA} (rule 1)")


# --- the command, as users run it ---------------------------------------------------------------------

def scrapy(output: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scrapy", *args, "-s", f"OUTPUT_DIR={output}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_scrapy_tags_on_a_crawled_catalogue(pixiv_site, tmp_path_factory, tmp_path):
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    tags_file = tmp_path / "tags.json"
    tags_file.write_text(json.dumps({"aliases": {MONA: ["モナ(原神)", "莫娜"]}, "implications": {MONA: ["原神"]}}), encoding="utf-8")
    cat = Catalog(output / "catalog.db")  # seeded here, to spare a subprocess: the command prints this summary
    translated = cat.conn.execute("SELECT count(*) FROM tags WHERE translation_en IS NOT NULL").fetchone()[0]
    assert translated > 5 and tags.seed_from_translations(cat.conn).added == translated
    cat.close()
    unknown = scrapy(output, "tags", "show", "莫娜")  # Chinese for Mona: no artwork or alias has it yet
    assert unknown.returncode == 0, unknown.stderr
    assert "  aliases: -" in unknown.stdout
    assert "not in the catalogue: no artwork or picture carries '莫娜' and no alias or implication names it" in unknown.stdout
    assert "`scrapy tags alias 莫娜 TAG` makes it another name of TAG" in unknown.stdout
    loaded = scrapy(output, "tags", "load", str(tags_file))
    assert loaded.returncode == 0, loaded.stderr
    assert "removed the translation alias mona_(genshin_impact) → モナ(原神)" in loaded.stdout
    found = scrapy(output, "tags", "search", "莫娜", "--json", "--limit", "1")
    assert found.returncode == 0, found.stderr
    [match] = [json.loads(line) for line in found.stdout.splitlines()]
    with sqlite3.connect(output / "catalog.db") as conn:
        mona_artworks = conn.execute("SELECT count(*) FROM artwork_tags WHERE tag = 'モナ(原神)'").fetchone()[0]
    assert (match["tag"], match["matched"], match["artworks"]) == (MONA, "莫娜", mona_artworks)
    assert mona_artworks > 0
    # (Once aliased, `tags show 莫娜` shows her canonical tag and no hint: tests/test_recipe_page.py.)
    close = scrapy(output, "tags", "show", "genshin_inpact", "--json")  # a typo: not known, the near names said
    assert json.loads(close.stdout)["known"] is False and "原神" in json.loads(close.stdout)["similar"]
    looped = scrapy(output, "tags", "alias", MONA, "莫娜")
    assert looped.returncode == 2
    assert "would make a loop: mona_(genshin_impact) → 莫娜 → mona_(genshin_impact)" in looped.stderr
    helped = scrapy(output, "tags", "--help")
    assert helped.returncode == 0 and "alias ALIAS TAG" in helped.stdout and "--limit N" in helped.stdout
