"""The list pages' rows, and the original scraper's dictionary read back as the same rows."""

from __future__ import annotations

from stages.sprites.table import ItemRow, css_id_pattern, index_rows, parse_list_page

PAGE = """
<html><body><div id="mw-content-text"><div class="mw-parser-output">
<table class="wikitable"><tbody>
  <tr><th>图标</th><th>英文名</th><th>中文名</th><th>ID</th><th>类型</th><th>品质</th><th>充能</th><th>描述</th></tr>
  <tr>
    <td><a href="/wiki/1"><span id="collectibles_001" class="item-icon sprite" style="width:32px"></span></a></td>
    <td>The Sad Onion</td><td><a href="/wiki/悲伤洋葱">悲伤洋葱</a></td><td>1</td><td>道具</td><td>3</td>
    <td>/</td><td>射速<b>上升</b>。</td>
  </tr>
  <tr>
    <td><span id="collectibles_045" class="item-icon sprite"></span> Yum   Heart</td><td>美味的心</td>
    <td>45</td><td>道具</td><td>2</td><td>4</td><td>主动道具：
      回复一颗红心。</td>
  </tr>
  <tr><td>Broken</td><td>坏</td><td>n/a</td><td>道具</td><td>1</td><td>/</td><td>x</td></tr>
  <tr><td>too few cells</td></tr>
</tbody></table></div></div></body></html>
"""


def test_parse_list_page_rows_in_column_order():
    rows, skipped = parse_list_page(PAGE, kind="collectible")
    assert rows == [
        ItemRow("collectible", 1, "The Sad Onion", "悲伤洋葱", 3, None, "射速上升。", "collectibles_001",
                ("item-icon", "sprite"), "width:32px"),
        ItemRow("collectible", 45, "Yum Heart", "美味的心", 2, "4", "主动道具： 回复一颗红心。", "collectibles_045",
                ("item-icon", "sprite")),
    ]
    assert skipped == ["row 4: in-game id 'n/a' is not a number", "row 5: 1 cells, 7 expected"]


def test_parse_api_fragment_and_type_column_decides_the_kind():
    fragment = """<div class="mw-parser-output"><table><tr>
        <td><span id="trinket_001"></span></td><td>Swallowed Penny</td><td>吞下的硬币</td><td>1</td>
        <td>饰品</td><td>0</td><td>/</td><td>受伤时掉落硬币。</td></tr></table></div>"""
    rows, skipped = parse_list_page(fragment)  # no #mw-content-text: the API's parse.text
    assert [(r.kind, r.game_id, r.css_id, r.charge) for r in rows] == [("trinket", 1, "trinket_001", None)]
    assert skipped == []
    rows, skipped = parse_list_page(fragment.replace("饰品", "?"))
    assert rows == [] and "neither a collectible nor a trinket" in skipped[0]


def test_rows_from_the_original_scrapers_dictionary(isaac_rows):
    by_key, repeated = index_rows(isaac_rows)
    assert repeated == []
    kinds = [row.kind for row in isaac_rows]
    assert (kinds.count("collectible"), kinds.count("trinket")) == (719, 188)
    # Trinkets were re-keyed collectibles_733..921 there; their CSS id is rebuilt from kind and id.
    penny = by_key[("trinket", 1)]
    assert penny.css_id == "trinket_001" and penny.name_en == "Swallowed Penny"
    onion = by_key[("collectible", 1)]
    assert (onion.css_id, onion.name_en, onion.name_zh, onion.quality, onion.charge) == (
        "collectibles_001", "The Sad Onion", "悲伤洋葱", 3, None)
    assert by_key[("collectible", 45)].charge == "4"
    # The three x/y-only entries are CSS ids without a row: none of them became a row.
    assert not {"collectibles_059", "collectibles_656", "trinket_047"} & {row.css_id for row in isaac_rows}
    assert ("collectible", 43) not in by_key and ("trinket", 47) not in by_key


def test_css_id_pattern():
    assert css_id_pattern("collectible") == r"collectibles_\d+"
    assert css_id_pattern("trinket") == r"trinket_\d+"
