"""The local Isaac wiki answers as MediaWiki does, and each switch changes only what it says."""

from __future__ import annotations

import hashlib
import io
import json
from urllib.parse import quote

import pytest
import requests
from PIL import Image

from mocksites.mediawiki import ICONS_SCRIPT_MODULE, upload_path
from stages.sprites import parse_list_page, slice_sheet
from tests.conftest import ISAAC_FIXTURES

PAGES = {"collectible": "道具", "trinket": "饰品"}
SHEETS = {"collectible": "Collectibles_sprite.png", "trinket": "Trinket_sprite.png"}


def api(site, **params):
    response = requests.get(f"{site.api}/api.php", params={"format": "json", "formatversion": "2", **params}, timeout=30)
    return response, response.json()


def parse(site, kind):
    return api(site, action="parse", page=PAGES[kind], prop="text|modules|jsconfigvars", maxlag="5")[1]["parse"]


def imageinfo(site, kind):
    _, body = api(site, action="query", titles=f"File:{SHEETS[kind]}", prop="imageinfo", iiprop="url|size|sha1|timestamp")
    return body["query"]["pages"][0]["imageinfo"][0]


def styles(site, kind):
    module = parse(site, kind)["modulestyles"]
    url = f"{site.api}/load.php?modules={'|'.join(module + ['site.styles'])}&only=styles"
    return url, requests.get(url, timeout=30).text


def sprites_seen(site, kind):
    """What the sprite library makes of the site's page, CSS and sheet: (css id, x, y, w, h) per sprite."""
    rows, skipped = parse_list_page(parse(site, kind)["text"], kind)
    url, css = styles(site, kind)
    info = imageinfo(site, kind)
    sheet = requests.get(info["url"], timeout=30).content
    result = slice_sheet(css, rows, sheet, info["url"], info["sha1"], kind=kind, base_url=url)
    assert skipped == [] and result.problems == {}
    return {(s.key, s.x, s.y, s.w, s.h, s.sha256) for s in result.sprites}


def test_parse_imageinfo_load_and_upload_host(make_wiki):
    site = make_wiki()
    body = parse(site, "collectible")
    assert body["revid"] > 0 and body["modulestyles"] == ["ext.huiji.collectibles"]
    rows, _ = parse_list_page(body["text"], "collectible")
    assert len(rows) == 719 and rows[0].css_id == "collectibles_001" and rows[0].name_en == "The Sad Onion"
    assert rows[0].charge is None and rows[0].quality == 3  # "/" in the charge column: no charge
    trinkets, _ = parse_list_page(parse(site, "trinket")["text"], "trinket")
    assert len(trinkets) == 188 and all(r.css_id == f"trinket_{r.game_id:03d}" for r in trinkets)

    info = imageinfo(site, "trinket")
    assert info["url"] == site.images + "/isaac/uploads/8/89/Trinket_sprite.png" == site.images + upload_path(SHEETS["trinket"])
    sheet = requests.get(info["url"], timeout=30).content
    assert hashlib.sha1(sheet).hexdigest() == info["sha1"] and len(sheet) == info["size"]
    assert Image.open(io.BytesIO(sheet)).size == (info["width"], info["height"]) == (640, 320)
    assert requests.get(site.images + "/isaac/uploads/0/00/Trinket_sprite.png", timeout=30).status_code == 404

    _, css = styles(site, "collectible")
    assert "#collectibles_001{background-position:-32px -0px}" in css and "@keyframes collectible-dogma-anim" in css
    assert f"url({info['url']})" in css  # site.styles binds the sheet to the spans' class
    raw = requests.get(f"{site.api}/index.php", params={"title": "饰品", "action": "raw"}, timeout=30)
    assert raw.headers["Content-Type"].startswith("text/x-wiki") and "Swallowed Penny" in raw.text
    common = requests.get(f"{site.api}/index.php", params={"title": "MediaWiki:Common.css", "action": "raw"}, timeout=30)
    assert ".trinket-sprite{background-image:url(" in common.text


def test_the_list_page_html_carries_the_same_table_and_its_stylesheets(make_wiki):
    site = make_wiki()
    page = requests.get(f"{site.api}/wiki/{quote('饰品')}", timeout=30)
    assert page.status_code == 200 and '"wgRevisionId":318377' in page.text
    assert 'rel="stylesheet" href="/load.php?lang=zh-cn&amp;modules=ext.huiji.trinkets&amp;only=styles' in page.text
    rows, _ = parse_list_page(page.text, "trinket")
    assert rows == parse_list_page(parse(site, "trinket")["text"], "trinket")[0]
    # The real column order, the icon in a cell of its own.
    first = page.text.split('<span id="trinket_001"', 1)[1].split("</tr>", 1)[0]
    cells = [c.split("</td>")[0] for c in first.split("<td>")[1:]]
    assert cells[0] == "Swallowed Penny" and cells[2:6] == ["1", "饰品", "0", "/"]
    assert requests.get(f"{site.api}/wiki/{quote('不存在')}", timeout=30).status_code == 404


def test_variants_re_emit_every_rule_in_other_forms_that_land_on_the_same_cells(make_wiki):
    real, variants = make_wiki(), make_wiki("--css-form", "variants")
    _, real_css = styles(real, "trinket")
    _, variant_css = styles(variants, "trinket")
    for form in ("background:url(//", "right ", "%", "!important", "background-position-y:", "@media screen",
                 "@media print", ".item-sprite#", "@keyframes isaac-item-bob", "\n\tbackground-position:\n"):
        assert form in variant_css, form
    assert "#trinket_001{background-position:-0px -0px}" in real_css
    assert "#trinket_001{background-position:-0px -0px}" not in variant_css
    assert 'style="background-position:' in requests.get(f"{variants.api}/wiki/{quote('饰品')}", timeout=30).text
    assert sprites_seen(variants, "trinket") == sprites_seen(real, "trinket")


def test_2x_serves_a_doubled_sheet_shown_at_half_size(make_wiki):
    site = make_wiki("--css-form", "2x")
    info = imageinfo(site, "trinket")
    assert (info["width"], info["height"]) == (1280, 640)
    _, css = styles(site, "trinket")
    assert "background-size:640px 320px" in css
    sheet = Image.open(io.BytesIO(requests.get(info["url"], timeout=30).content))
    original = Image.open(ISAAC_FIXTURES / "Trinket_sprite.png").convert("RGBA")
    assert sheet.tobytes() == original.resize((1280, 640), Image.Resampling.NEAREST).tobytes()
    seen = sprites_seen(site, "trinket")
    assert len(seen) == 189 and {(w, h) for _, _, _, w, h, _ in seen} == {(64, 64)}
    assert all(x % 64 == 0 and y % 64 == 0 for _, x, y, *_ in seen)


def test_inject_script_moves_the_positions_out_of_the_css(make_wiki):
    site = make_wiki("--inject-script")
    body = parse(site, "trinket")
    assert ICONS_SCRIPT_MODULE in body["modules"]
    _, css = styles(site, "trinket")
    assert "#trinket_001{" not in css and "#collectibles_001{" not in css
    script = requests.get(f"{site.api}/load.php?modules={ICONS_SCRIPT_MODULE}&only=scripts", timeout=30)
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert "#trinket_001{background-position:-0px -0px}" in json.loads(script.text.split("var css = ", 1)[1].split(";\n")[0])
    assert "addEventListener('load'" in script.text
    assert f"modules={ICONS_SCRIPT_MODULE}&amp;only=scripts" in requests.get(f"{site.api}/wiki/{quote('饰品')}", timeout=30).text


def test_no_api_and_maxlag(make_wiki):
    assert requests.get(f"{make_wiki('--no-api').api}/api.php?action=parse", timeout=30).status_code == 404
    site = make_wiki("--maxlag-every", "2", "--retry-after", "3")
    assert "parse" in api(site, action="parse", page="饰品", maxlag="5")[1]
    response, body = api(site, action="parse", page="饰品", maxlag="5")
    assert response.status_code == 200 and body["error"]["code"] == "maxlag" and body["error"]["lag"] == 7
    assert response.headers["Retry-After"] == "3" and response.headers["X-Database-Lag"] == "7"
    assert "parse" in api(site, action="parse", page="饰品")[1]  # without maxlag= the API never refuses
    assert "parse" in api(site, action="parse", page="饰品")[1]
    assert api(site, action="parse", page="Nope")[1]["error"]["code"] == "missingtitle"


def test_change_adds_an_item_and_updates_the_sheet_and_persists(make_wiki, tmp_path):
    state = tmp_path / "wiki-state.json"
    site = make_wiki("--state", str(state))
    before, sheet_before = parse(site, "trinket"), imageinfo(site, "trinket")
    collectibles_before = (parse(site, "collectible")["revid"], imageinfo(site, "collectible")["sha1"])
    changed = site.control("/_mock/change", "POST")
    after, sheet_after = parse(site, "trinket"), imageinfo(site, "trinket")
    assert changed["new"] == "trinket_190" and after["revid"] == changed["revid"] > before["revid"]
    assert sheet_after["sha1"] == changed["sha1"] != sheet_before["sha1"]
    assert (parse(site, "collectible")["revid"], imageinfo(site, "collectible")["sha1"]) == collectibles_before
    rows, _ = parse_list_page(after["text"], "trinket")
    assert rows[-1].game_id == 190 and len(rows) == 189
    seen = {key: (x, y) for key, x, y, *_ in sprites_seen(site, "trinket")}
    assert seen["trinket:190"] == (288, 288)
    site.stop()
    restarted = make_wiki("--state", str(state))
    assert parse(restarted, "trinket")["revid"] == after["revid"]
    assert imageinfo(restarted, "trinket")["sha1"] == sheet_after["sha1"]


def test_stats_record_routes_and_user_agents(make_wiki):
    site = make_wiki()
    requests.get(f"{site.api}/wiki/{quote('道具')}", headers={"User-Agent": "test-agent/1"}, timeout=30)
    stats = site.stats()
    assert stats["counts"] == {"page": 1} and stats["requests"][0]["user_agent"] == "test-agent/1"
    site.reset_stats()
    assert site.stats()["counts"] == {}


@pytest.mark.parametrize("argument", ["--css-form", "--maxlag-every"])
def test_bad_options_are_refused(argument):
    from mocksites.mediawiki import parse_args

    with pytest.raises(SystemExit):
        parse_args([argument, "nonsense"])
