"""A local copy of the Isaac wiki (isaac.huijiwiki.com, MediaWiki) and its upload host.

Why: the wiki spider, its tests and the demo need a site that answers as the real one does (the
API's JSON, ResourceLoader's CSS, the list pages' tables, hashed upload paths, ``maxlag``) without
touching it. Everything is built at start from the captured files in ``../shared/fixtures/isaac``
(read in place, never copied; ``--fixtures`` points elsewhere):

* ``/api.php``: ``action=parse`` (``text``, ``modules``, ``modulestyles``, ``jsconfigvars``,
  ``revid``) and ``action=query&prop=imageinfo`` (url, size, sha1, timestamp); formatversion 1 and
  2. With ``--maxlag-every N`` every Nth request that carries ``maxlag`` gets MediaWiki's maxlag
  error: HTTP 200, ``{"error": {"code": "maxlag", …}}``, ``Retry-After`` and ``X-Database-Lag``.
* ``/load.php?modules=a|b&only=styles``: module CSS. ``ext.huiji.collectibles`` / ``ext.huiji.trinkets``
  are the captured ``items.css`` / ``trinket.css``; ``site.styles`` (also
  ``index.php?title=MediaWiki:Common.css&action=raw``) binds each sheet to the icon spans' class,
  as the real site does in a rule the captured files do not hold. ``action=parse`` lists only the
  page's own module, as MediaWiki does: every page view adds ``site.styles`` itself.
* ``/wiki/道具``, ``/wiki/饰品`` (and ``index.php?title=…``): the list pages, one table row per item
  of ``id_mapping_dict.json`` in the real column order, the icon a ``<span id="collectibles_001">``;
  the fixture's defects undone (trinkets get ``trinket_NNN`` ids, entries with only x, y no row).
  ``index.php?title=…&action=raw`` gives wikitext.
* The upload host: ``/isaac/uploads/<h>/<hh>/<File>``, ``<hh>`` the first two hex digits of md5(name).

Switches: ``--css-form variants`` re-emits every position rule in another valid form (shorthand,
``0`` and keywords, edge offsets, percentages, grouped selectors, ``!important``, multi-line,
``@media``, class + id, inline styles, keyframes decoys), each computed to show the same cell;
``--css-form 2x`` serves 2× nearest-neighbour sheets shown at half size with ``background-size``;
``--inject-script`` takes the position rules out of the CSS and has a script add them in a
``<style>`` after ``load``, as ResourceLoader does for modules that JavaScript loads; ``--no-api``
answers 404 on ``api.php``. ``POST /_mock/change`` changes the wiki as an edit would: trinket 190
appears (row, rule, icon) and the trinket sheet gets a new sha1 (``--state`` keeps it over restarts).

Run ``python -m mocksites.mediawiki --port 0 --upload-port 0``: it prints one JSON line
``{"api": wiki root, "images": upload root}`` (the keys ``mocksites.runner.LocalSite`` reads:
the host with the API and control endpoints, the host with the files) and serves until SIGTERM.
Control endpoints on the wiki port: ``POST /_mock/change``, ``GET /_mock/stats``, ``POST /_mock/reset-stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import hashlib
import html
import io
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from aiohttp import web
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = REPO.parent / "shared" / "fixtures" / "isaac"
CSS_FORMS = ("real", "variants", "2x")
BOX = 32  # px: every icon span
SKIN = "vector"
UPLOAD_PATH = "/isaac/uploads"
SITE_STYLES = "site.styles"
ICONS_SCRIPT_MODULE = "ext.isaac.icons"  # --inject-script: the module whose script adds the rules
REQUEST_LOG_LIMIT = 20_000
STATE_VERSION = 1

# The one form the captured stylesheets use for item positions.
POSITION_RULE = re.compile(r"#((?:collectibles|trinket)_\d+)\{background-position:(-?\d+)px (-?\d+)px\}")


@dataclasses.dataclass(frozen=True)
class ListPage:
    """One list page of the wiki and everything that belongs to it."""

    kind: str  # collectible, trinket
    title: str  # the page, and the table's type column
    page_id: int
    revid: int  # before any /_mock/change
    css_file: str  # the captured stylesheet served as its module
    module: str
    sheet_file: str
    id_prefix: str  # of its icon spans' ids
    sprite_class: str  # binds the sheet (site.styles)


LIST_PAGES = {
    "collectible": ListPage("collectible", "道具", 1062, 318_402, "items.css", "ext.huiji.collectibles",
                            "Collectibles_sprite.png", "collectibles_", "collectibles-sprite"),
    "trinket": ListPage("trinket", "饰品", 1063, 318_377, "trinket.css", "ext.huiji.trinkets",
                        "Trinket_sprite.png", "trinket_", "trinket-sprite"),
}
ICON_CLASS = "item-sprite"  # every icon span: the box (32x32, inline-block)


@dataclasses.dataclass(frozen=True)
class Item:
    """One row of a list page."""

    kind: str
    game_id: int
    name_en: str
    name_zh: str
    quality: str
    charge: str  # "/" when none, as the wiki writes it
    description: str

    @property
    def css_id(self) -> str:
        return f"{LIST_PAGES[self.kind].id_prefix}{self.game_id:03d}"


# What /_mock/change adds: a trinket in the sheet's first empty cell, and trinket 1 redrawn.
NEW_ITEM = Item("trinket", 190, "Mock Pebble", "模拟石子", "1", "/", "本地镜像新增的饰品，拾取后什么也不会发生。")
NEW_ITEM_CELL = (288, 288)
CHANGED_ITEM = ("trinket", 1)


def upload_path(file_name: str) -> str:
    """MediaWiki's hashed upload path: ``/<h>/<hh>/<name>`` from md5 of the name (spaces as ``_``)."""
    name = file_name.replace(" ", "_")
    digest = hashlib.md5(name.encode()).hexdigest()
    return f"{UPLOAD_PATH}/{digest[0]}/{digest[:2]}/{quote(name)}"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@dataclasses.dataclass
class Fixtures:
    """The captured files, read once: items, each page's CSS split into positions and the rest, sheets."""

    items: dict[str, list[Item]]
    positions: dict[str, dict[str, tuple[int, int]]]  # per page: css id -> (x, y) in sheet pixels
    other_css: dict[str, tuple[str, str]]  # per page: the CSS before and after its position rules
    sheets: dict[str, Image.Image]

    @classmethod
    def load(cls, folder: Path) -> Fixtures:
        mapping = json.loads((folder / "id_mapping_dict.json").read_text(encoding="utf-8"))
        kinds = {page.title: page.kind for page in LIST_PAGES.values()}
        items: dict[str, list[Item]] = {kind: [] for kind in LIST_PAGES}
        for entry in mapping.values():
            kind = kinds.get(entry.get("type", ""))
            if kind is None or not str(entry.get("level", "")).isdigit():
                continue  # the three CSS ids with only x, y: no row on the wiki
            items[kind].append(Item(
                kind, int(entry["level"]), str(entry.get("en", "")).strip(), str(entry.get("zh", "")).strip(),
                str(entry.get("level2", "")), str(entry.get("?", "/")) or "/", str(entry.get("desc", "")).strip(),
            ))
        positions, other = {}, {}
        for kind, page in LIST_PAGES.items():
            css = (folder / page.css_file).read_text(encoding="utf-8")
            found = list(POSITION_RULE.finditer(css))
            positions[kind] = {m[1]: (-int(m[2]), -int(m[3])) for m in found}
            # The position rules sit in runs; whatever they are re-emitted as goes where the first was.
            first = found[0].start()
            other[kind] = (css[:first], POSITION_RULE.sub("", css[first:]))
        sheets = {kind: Image.open(folder / page.sheet_file).convert("RGBA") for kind, page in LIST_PAGES.items()}
        return cls({k: sorted(v, key=lambda i: i.game_id) for k, v in items.items()}, positions, other, sheets)


# --- CSS in other valid forms -------------------------------------------------------------------------
VARIANT_FORMS = (
    "plain", "zero-and-keywords", "shorthand", "edge-offsets", "percent", "grouped", "important",
    "multi-line", "media", "class-and-id", "inline-style", "start-edges",
)
VARIANT_DECOYS = (
    "/* animation frames are not items */\n"
    "@keyframes isaac-item-bob{0%{background-position:0 0}50%{background-position:-32px -32px}"
    "100%{background-position:-64px 0}}\n"
)


def _px(value: int) -> str:
    """A sheet offset as a CSS position term: 0, or minus the offset in px."""
    return "0" if value == 0 else f"{-value}px"


def _percent(offset: int, sheet_length: int) -> str:
    """The percentage that puts this offset at the box's start edge: p × (box − sheet) = −offset."""
    free = sheet_length - BOX
    return "0%" if free == 0 or offset == 0 else f"{offset / free * 100:.10g}%"


def position_rules(
    positions: dict[str, tuple[int, int]],
    form: str,
    sheet_for: Callable[[str], tuple[str, tuple[int, int]]],
    labelled: set[str],
) -> tuple[str, dict[str, str]]:
    """The position rules as CSS text in ``form``, and the inline styles that go with them (variants).

    ``sheet_for(css_id)`` gives the sheet's URL and displayed size, which the shorthand, edge
    offset and percentage forms need to land on the same cell.
    """
    if form != "variants":
        return "".join(f"#{i}{{background-position:-{x}px -{y}px}}" for i, (x, y) in positions.items()), {}
    rules: list[str] = []
    decoys: list[str] = []
    inline: dict[str, str] = {}
    rows: dict[tuple[str, int], list[tuple[str, int]]] = collections.defaultdict(list)
    # Forms go by the sorted ids, so every page that carries a rule gives it the same form.
    for index, (css_id, (x, y)) in enumerate(sorted(positions.items())):
        form_name = VARIANT_FORMS[index % len(VARIANT_FORMS)]
        url, (width, height) = sheet_for(css_id)
        if form_name == "inline-style" and css_id not in labelled:
            form_name = "plain"  # an id with no row has no span to carry a style
        if form_name == "plain":
            rules.append(f"#{css_id}{{background-position:{_px(x)} {_px(y)}}}")
        elif form_name == "zero-and-keywords":
            rules.append(f"#{css_id}{{background-position:{'left' if x == 0 else _px(x)} {'top' if y == 0 else _px(y)}}}")
        elif form_name == "shorthand":
            relative = url.split(":", 1)[1]  # protocol-relative, as wikis write them
            rules.append(f"#{css_id}{{background:url({relative}) no-repeat {_px(x)} {_px(y)}}}")
        elif form_name == "edge-offsets":
            rules.append(f"#{css_id}{{background-position:right {x + BOX - width}px bottom {y + BOX - height}px}}")
        elif form_name == "percent":
            rules.append(f"#{css_id}{{background-position:{_percent(x, width)} {_percent(y, height)}}}")
        elif form_name == "grouped":
            rows[(css_id.rsplit("_", 1)[0], y)].append((css_id, x))
        elif form_name == "important":
            rules.append(f"#{css_id}{{background-position:{_px(x)} {_px(y)} !important}}")
            decoys.append(f"#{css_id}{{background-position:0 0}}")
        elif form_name == "multi-line":
            rules.append(f"\n/* {css_id} */\n#{css_id} {{\n\tbackground-position:\n\t\t{_px(x)}\n\t\t{_px(y)};\n}}\n")
        elif form_name == "media":
            rules.append(f"@media screen and (min-width: 1px) {{\n  #{css_id} {{ background-position: {_px(x)} {_px(y)}; }}\n}}\n")
            decoys.append(f"@media print{{#{css_id}{{background-position:0 0}}}}")
        elif form_name == "class-and-id":
            rules.append(f".{ICON_CLASS}#{css_id}{{background-position:{_px(x)} {_px(y)}}}")
        elif form_name == "inline-style":
            inline[css_id] = f"background-position: {_px(x)} {_px(y)}"
            rules.append(f"#{css_id}{{background-position:0 0}}")  # what the inline style overrides
        elif form_name == "start-edges":
            rules.append(f"#{css_id}{{background-position:left {-x}px top {-y}px}}")
    for (_, y), members in rows.items():
        rules.append(",".join(f"#{css_id}" for css_id, _ in members) + f"{{background-position-y:{_px(y)}}}")
        rules += [f"#{css_id}{{background-position-x:{_px(x)}}}" for css_id, x in members]
    return "".join(rules) + "\n" + "".join(decoys) + "\n" + VARIANT_DECOYS, inline


# --- the site ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SiteConfig:
    """Everything the CLI can set."""

    host: str = "127.0.0.1"
    port: int = 0
    upload_port: int = 0
    fixtures: str = str(DEFAULT_FIXTURES)
    css_form: str = "real"
    inject_script: bool = False
    no_api: bool = False
    maxlag_every: int = 0
    retry_after: int = 1
    lag: int = 7  # seconds of replication lag that maxlag errors report
    state: str | None = None


class RequestStats:
    """What clients asked for: counts per route and a log with times, for tests to read."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.requests: list[dict[str, Any]] = []

    def record(self, route: str, request: web.Request) -> None:
        self.counts[route] += 1
        if len(self.requests) < REQUEST_LOG_LIMIT:
            self.requests.append({
                "route": route, "path": request.path_qs, "time": time.time(),
                "user_agent": request.headers.get("User-Agent", ""),
            })

    def as_json(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "requests": self.requests}


class WikiSite:
    """Both hosts over the fixtures, with the switches of :class:`SiteConfig` and the control endpoints."""

    def __init__(self, config: SiteConfig, fixtures: Fixtures) -> None:
        if config.css_form not in CSS_FORMS:
            raise ValueError(f"--css-form must be one of {', '.join(CSS_FORMS)}")
        self.config = config
        self.fixtures = fixtures
        self.wiki_base = ""
        self.upload_base = ""
        self.stats = RequestStats()
        self.generation = 0  # how many /_mock/change calls the wiki has seen
        self.api_requests = 0
        self._sheet_cache: dict[tuple[str, bool], bytes] = {}
        self._load_state()

    # ---- state ----------------------------------------------------------------------------------
    def _load_state(self) -> None:
        if self.config.state and Path(self.config.state).is_file():
            state = json.loads(Path(self.config.state).read_text(encoding="utf-8"))
            self.generation = int(state.get("generation", 0))

    def _save_state(self) -> None:
        if not self.config.state:
            return
        path = Path(self.config.state)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps({"version": STATE_VERSION, "generation": self.generation}), encoding="utf-8")
        os.replace(temporary, path)

    @property
    def changed(self) -> bool:
        return self.generation > 0

    # ---- content --------------------------------------------------------------------------------
    def items(self, kind: str) -> list[Item]:
        items = list(self.fixtures.items[kind])
        if self.changed and kind == NEW_ITEM.kind:
            items.append(NEW_ITEM)
        return items

    def revid(self, kind: str) -> int:
        page = LIST_PAGES[kind]
        return page.revid + (self.generation if kind == NEW_ITEM.kind else 0)

    def positions(self, kind: str) -> dict[str, tuple[int, int]]:
        positions = dict(self.fixtures.positions[kind])
        if self.changed:
            positions[NEW_ITEM.css_id] = NEW_ITEM_CELL
        return positions

    def sheet_url(self, kind: str) -> str:
        return self.upload_base + upload_path(LIST_PAGES[kind].sheet_file)

    def sheet_image(self, kind: str) -> Image.Image:
        """The sheet as the wiki shows it now, at 1×."""
        sheet = self.fixtures.sheets[kind]
        if not (self.changed and kind == NEW_ITEM.kind):
            return sheet
        sheet = sheet.copy()
        x, y = self.fixtures.positions[kind][f"{LIST_PAGES[kind].id_prefix}{CHANGED_ITEM[1]:03d}"]
        cell = sheet.crop((x, y, x + BOX, y + BOX))
        red, green, blue, alpha = cell.split()
        sheet.paste(Image.merge("RGBA", (blue, red, green, alpha)).transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                    NEW_ITEM_CELL)
        inverted = Image.merge("RGB", (red, green, blue)).point(lambda v: 255 - v)
        sheet.paste(Image.merge("RGBA", (*inverted.split(), alpha)), (x, y))
        return sheet

    def sheet_bytes(self, kind: str) -> bytes:
        key = (kind, self.changed)
        if key not in self._sheet_cache:
            sheet = self.sheet_image(kind)
            if self.config.css_form == "2x":
                sheet = sheet.resize((sheet.width * 2, sheet.height * 2), Image.Resampling.NEAREST)
            self._sheet_cache[key] = png_bytes(sheet)
        return self._sheet_cache[key]

    def displayed_size(self, kind: str) -> tuple[int, int]:
        return self.fixtures.sheets[kind].size

    def _kind_of_id(self, css_id: str) -> str:
        return next(kind for kind, page in LIST_PAGES.items() if css_id.startswith(page.id_prefix))

    def _position_css(self, kind: str) -> tuple[str, dict[str, str]]:
        labelled = {item.css_id for k in LIST_PAGES for item in self.items(k)}

        def sheet_for(css_id: str) -> tuple[str, tuple[int, int]]:
            owner = self._kind_of_id(css_id)
            return self.sheet_url(owner), self.displayed_size(owner)

        return position_rules(self.positions(kind), self.config.css_form, sheet_for, labelled)

    def inline_styles(self, kind: str) -> dict[str, str]:
        return self._position_css(kind)[1]

    def module_css(self, module: str) -> str | None:
        """A style module's CSS; None when there is no such module."""
        if module == SITE_STYLES:
            return self.site_css()
        page = next((p for p in LIST_PAGES.values() if p.module == module), None)
        if page is None:
            return None
        before, after = self.fixtures.other_css[page.kind]
        if self.config.inject_script:
            return before + after
        return before + self._position_css(page.kind)[0] + after

    def site_css(self) -> str:
        """MediaWiki:Common.css: the box of every icon, and each sheet bound to its kind's class."""
        rules = [f".{ICON_CLASS}{{display:inline-block;width:{BOX}px;height:{BOX}px;background-repeat:no-repeat;"
                 "vertical-align:middle}"]
        for kind, page in LIST_PAGES.items():
            url = self.sheet_url(kind)
            if self.config.css_form == "variants":
                url = f"\"{url}\"" if kind == "collectible" else f"'{url}'"
            size = ""
            if self.config.css_form == "2x":
                width, height = self.displayed_size(kind)
                size = f";background-size:{width}px {height}px"
            rules.append(f".{page.sprite_class}{{background-image:url({url}){size}}}")
        return "\n".join(rules) + "\n"

    def icons_script(self) -> str:
        """--inject-script: what ResourceLoader's client does for a JavaScript-loaded module."""
        css = self._position_css(next(iter(LIST_PAGES)))[0]  # every page's stylesheet has every rule
        return (
            "(function () {\n"
            f"  var css = {json.dumps(css)};\n"
            "  function inject() {\n"
            "    var style = document.createElement('style');\n"
            f"    style.setAttribute('data-module', {json.dumps(ICONS_SCRIPT_MODULE)});\n"
            "    style.textContent = css;\n"
            "    document.head.appendChild(style);\n"
            "  }\n"
            "  function later() { setTimeout(inject, 50); }\n"
            "  if (document.readyState === 'complete') { later(); } else { window.addEventListener('load', later); }\n"
            "}());\n"
        )

    def table_html(self, kind: str) -> str:
        """The parser output of a list page: an intro and the item table, as ``parse.text`` carries it."""
        page = LIST_PAGES[kind]
        inline = self.inline_styles(kind)
        lines = [
            '<div class="mw-parser-output">',
            f"<p>本页列出游戏中全部{html.escape(page.title)}（共 {len(self.items(kind))} 个）。</p>",
            '<table class="wikitable sortable isaac-item-list">',
            "<tbody><tr>\n<th>图标</th>\n<th>英文名</th>\n<th>中文名</th>\n<th>ID</th>\n<th>类型</th>\n"
            "<th>品质</th>\n<th>充能</th>\n<th>描述</th></tr>",
        ]
        for item in self.items(kind):
            link = "/wiki/" + quote(item.name_zh)
            style = f' style="{html.escape(inline[item.css_id])}"' if item.css_id in inline else ""
            span = f'<span id="{item.css_id}" class="{ICON_CLASS} {page.sprite_class}"{style}></span>'
            cells = (
                f'<a href="{link}" title="{html.escape(item.name_zh)}">{span}</a>',
                html.escape(item.name_en),
                f'<a href="{link}" title="{html.escape(item.name_zh)}">{html.escape(item.name_zh)}</a>',
                str(item.game_id), html.escape(page.title), html.escape(item.quality), html.escape(item.charge),
                html.escape(item.description),
            )
            lines.append("<tr>\n" + "\n".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        lines.append("</tbody></table>\n</div>")
        return "\n".join(lines)

    def page_modules(self, kind: str) -> tuple[list[str], list[str]]:
        """(script modules, style modules) of a list page, as ``action=parse`` names them."""
        scripts = ["jquery.tablesorter"] + ([ICONS_SCRIPT_MODULE] if self.config.inject_script else [])
        return scripts, [LIST_PAGES[kind].module]

    def page_html(self, kind: str) -> str:
        page = LIST_PAGES[kind]
        scripts, styles = self.page_modules(kind)
        config = {
            "wgPageName": page.title, "wgTitle": page.title, "wgCurRevisionId": self.revid(kind),
            "wgRevisionId": self.revid(kind), "wgArticleId": page.page_id, "wgIsArticle": True,
            "wgAction": "view", "wgPageContentModel": "wikitext", "wgPageContentLanguage": "zh-cn",
        }

        def load(modules: list[str], only: str) -> str:
            return html.escape(f"/load.php?lang=zh-cn&modules={quote('|'.join(modules))}&only={only}&skin={SKIN}")

        head = [
            '<!DOCTYPE html>\n<html class="client-nojs" lang="zh-Hans-CN" dir="ltr">\n<head>\n<meta charset="UTF-8"/>',
            f"<title>{html.escape(page.title)} - 以撒的结合中文维基 - 灰机wiki</title>",
            '<script>document.documentElement.className="client-js";'
            f"RLCONF={json.dumps(config, ensure_ascii=False, separators=(',', ':'))};"
            f"RLPAGEMODULES={json.dumps(scripts, separators=(',', ':'))};</script>",
            f'<link rel="stylesheet" href="{load(styles, "styles")}"/>',
            '<meta name="ResourceLoaderDynamicStyles" content=""/>',
            f'<link rel="stylesheet" href="{load([SITE_STYLES], "styles")}"/>',
        ]
        if self.config.inject_script:
            head.append(f'<script async="" src="{load([ICONS_SCRIPT_MODULE], "scripts")}"></script>')
        body = [
            "</head>\n<body class=\"mediawiki ltr skin-vector action-view\">",
            f'<div id="content" class="mw-body"><h1 id="firstHeading" class="firstHeading">{html.escape(page.title)}</h1>',
            '<div id="bodyContent" class="vector-body">',
            '<div id="mw-content-text" class="mw-body-content mw-content-ltr" lang="zh-Hans-CN" dir="ltr">',
            self.table_html(kind),
            "</div></div></div>",
            '<div id="footer">本站文字内容除另有声明外，均在 CC BY-NC-SA 3.0 许可协议下提供。</div>',
            "</body>\n</html>\n",
        ]
        return "\n".join(head + body)

    def wikitext(self, kind: str) -> str:
        page = LIST_PAGES[kind]
        lines = [f"本页列出游戏中全部{page.title}。", '{| class="wikitable sortable isaac-item-list"',
                 "! 图标 !! 英文名 !! 中文名 !! ID !! 类型 !! 品质 !! 充能 !! 描述"]
        for item in self.items(kind):
            lines += ["|-", f"| {{{{图标|{item.css_id}}}}} || {item.name_en} || [[{item.name_zh}]] || {item.game_id} "
                            f"|| {page.title} || {item.quality} || {item.charge} || {item.description}"]
        return "\n".join(lines + ["|}"]) + "\n"

    def imageinfo(self, kind: str) -> dict[str, Any]:
        data = self.sheet_bytes(kind)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        page = LIST_PAGES[kind]
        return {
            "timestamp": "2024-03-08T06:12:40Z" if not (self.changed and kind == NEW_ITEM.kind) else "2025-01-19T10:31:05Z",
            "size": len(data), "width": width, "height": height, "sha1": hashlib.sha1(data).hexdigest(),
            "url": self.sheet_url(kind),
            "descriptionurl": f"{self.wiki_base}/wiki/{quote('File:' + page.sheet_file)}",
            "descriptionshorturl": f"{self.wiki_base}/index.php?curid={page.page_id + 5000}",
            "mime": "image/png",
        }

    # ---- apps -----------------------------------------------------------------------------------
    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_mock/"):
            self.stats.record(request.match_info.route.name or "other", request)
        response: web.StreamResponse = await handler(request)
        return response

    def wiki_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_route("*", "/api.php", self.handle_api, name="api")
        app.router.add_get("/load.php", self.handle_load, name="load")
        app.router.add_get("/index.php", self.handle_index, name="index")
        app.router.add_get("/wiki/{title:.+}", self.handle_wiki, name="page")
        app.router.add_post("/_mock/change", self.handle_change)
        app.router.add_get("/_mock/stats", self.handle_stats)
        app.router.add_post("/_mock/reset-stats", self.handle_reset_stats)
        return app

    def upload_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get(UPLOAD_PATH + "/{h}/{hh}/{name}", self.handle_upload, name="upload")
        return app

    @staticmethod
    def _kind_of_title(title: str | None) -> str | None:
        wanted = (title or "").replace("_", " ").strip()
        return next((kind for kind, page in LIST_PAGES.items() if page.title == wanted), None)

    @staticmethod
    def _not_found(what: str) -> web.Response:
        return web.Response(status=404, text=f"<!DOCTYPE html><title>404</title><p>{html.escape(what)}</p>",
                            content_type="text/html", charset="utf-8")

    # ---- api.php --------------------------------------------------------------------------------
    async def handle_api(self, request: web.Request) -> web.Response:
        if self.config.no_api:
            return self._not_found("Not Found: the API is not available on this wiki")
        query = request.query if request.method == "GET" else await request.post()
        self.api_requests += 1
        every = self.config.maxlag_every
        if every and "maxlag" in query and self.api_requests % every == 0:
            lag = self.config.lag
            return self._api_json({"error": {
                "code": "maxlag", "info": f"Waiting for 10.0.4.17: {lag} seconds lagged.", "host": "10.0.4.17",
                "lag": lag, "type": "db", "*": "See https://www.mediawiki.org/wiki/API:Etiquette for notice.",
            }}, headers={"Retry-After": str(self.config.retry_after), "X-Database-Lag": str(lag)})
        version = 2 if query.get("formatversion") in ("2", "latest") else 1
        action = query.get("action")
        if action == "parse":
            return self._api_json(self._parse(query, version))
        if action == "query" and "imageinfo" in str(query.get("prop", "")).split("|"):
            return self._api_json(self._imageinfo(query, version))
        return self._api_json({"error": {"code": "badvalue",
                                         "info": f"Unrecognized value for parameter \"action\": {action!s}."}})

    @staticmethod
    def _api_json(payload: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            body=json.dumps(payload, ensure_ascii=False).encode(), content_type="application/json",
            charset="utf-8", headers={"MediaWiki-API-Error": payload["error"]["code"], **(headers or {})}
            if "error" in payload else headers,
        )

    def _parse(self, query: Any, version: int) -> dict[str, Any]:
        kind = self._kind_of_title(query.get("page"))
        if kind is None:
            return {"error": {"code": "missingtitle", "info": "The page you specified doesn't exist."}}
        page = LIST_PAGES[kind]
        props = set((query.get("prop") or "text|modules|jsconfigvars").split("|"))
        scripts, styles = self.page_modules(kind)
        result: dict[str, Any] = {"title": page.title, "pageid": page.page_id, "revid": self.revid(kind)}
        if "text" in props:
            text = self.table_html(kind)
            result["text"] = text if version == 2 else {"*": text}
        if "modules" in props:
            result.update(modules=scripts, modulescripts=[], modulestyles=styles)
        if "jsconfigvars" in props:
            result["jsconfigvars"] = {"wgHuijiItemList": page.kind}
        return {"parse": result}

    def _imageinfo(self, query: Any, version: int) -> dict[str, Any]:
        pages = []
        for number, asked in enumerate((query.get("titles") or "").split("|")):
            title = asked.replace("_", " ").strip()
            name = title.split(":", 1)[1] if ":" in title else title
            kind = next((k for k, p in LIST_PAGES.items() if p.sheet_file.replace("_", " ") == name), None)
            if kind is None:
                pages.append({"ns": 6, "title": title, "missing": True, "known": False, "imagerepository": ""})
                continue
            pages.append({"pageid": LIST_PAGES[kind].page_id + 5000, "ns": 6, "title": title,
                          "imagerepository": "local", "imageinfo": [self.imageinfo(kind)]})
        body: dict[str, Any] = {"batchcomplete": True if version == 2 else ""}
        if version == 2:
            body["query"] = {"pages": pages}
        else:
            body["query"] = {"pages": {str(p.get("pageid", -1 - i)): p for i, p in enumerate(pages)}}
        return body

    # ---- load.php, index.php, /wiki/ ----------------------------------------------------------------
    async def handle_load(self, request: web.Request) -> web.Response:
        modules = [m for m in request.query.get("modules", "").split("|") if m]
        if request.query.get("only") == "scripts":
            script = "".join(self.icons_script() for m in modules if m == ICONS_SCRIPT_MODULE and self.config.inject_script)
            return web.Response(text=script or "/* no scripts */\n", content_type="text/javascript", charset="utf-8")
        parts, missing = [], {}
        for module in modules:
            css = self.module_css(module)
            if css is None:
                missing[module] = "missing"
            else:
                parts.append(css)
        if missing:
            parts.append(f"/* Problematic modules: {json.dumps(missing)} */\n")
        return web.Response(text="".join(parts), content_type="text/css", charset="utf-8")

    async def handle_index(self, request: web.Request) -> web.Response:
        title = request.query.get("title", "")
        if request.query.get("action") == "raw":
            if title.replace(" ", "_") == "MediaWiki:Common.css":
                return web.Response(text=self.site_css(), content_type="text/css", charset="utf-8")
            kind = self._kind_of_title(title)
            if kind is None:
                return self._not_found(f"no page {title}")
            return web.Response(text=self.wikitext(kind), content_type="text/x-wiki", charset="utf-8")
        kind = self._kind_of_title(title)
        if kind is None:
            return self._not_found(f"no page {title}")
        return web.Response(text=self.page_html(kind), content_type="text/html", charset="utf-8")

    async def handle_wiki(self, request: web.Request) -> web.Response:
        kind = self._kind_of_title(request.match_info["title"])
        if kind is None:
            return self._not_found(f"no page {request.match_info['title']}")
        return web.Response(text=self.page_html(kind), content_type="text/html", charset="utf-8")

    async def handle_upload(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = next((k for k, p in LIST_PAGES.items() if p.sheet_file == name), None)
        if kind is None or upload_path(name) != request.path:
            return web.Response(status=404, text="404 Not Found", content_type="text/plain")
        data = await asyncio.get_running_loop().run_in_executor(None, self.sheet_bytes, kind)
        return web.Response(body=data, content_type="image/png",
                            headers={"ETag": f'"{hashlib.sha1(data).hexdigest()}"'})

    # ---- control --------------------------------------------------------------------------------
    async def handle_change(self, request: web.Request) -> web.Response:
        self.generation += 1
        self._save_state()
        kind = NEW_ITEM.kind
        return web.json_response({"generation": self.generation, "revid": self.revid(kind),
                                  "sha1": self.imageinfo(kind)["sha1"], "new": NEW_ITEM.css_id})

    async def handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json())

    async def handle_reset_stats(self, request: web.Request) -> web.Response:
        self.stats = RequestStats()
        self.api_requests = 0
        return web.json_response({"ok": True})


def _public_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def serve(config: SiteConfig) -> None:
    """Start both hosts, announce their URLs on stdout, serve until SIGTERM/SIGINT."""
    folder = Path(config.fixtures)
    if not (folder / "id_mapping_dict.json").is_file():
        print(f"mocksites.mediawiki: no Isaac fixtures in {folder} (see ../shared/fixtures/isaac)", file=sys.stderr)
        raise SystemExit(2)
    site = WikiSite(config, Fixtures.load(folder))
    upload_runner = web.AppRunner(site.upload_app(), access_log=None)
    await upload_runner.setup()
    await web.TCPSite(upload_runner, config.host, config.upload_port).start()
    site.upload_base = f"http://{_public_host(config.host)}:{upload_runner.addresses[0][1]}"
    wiki_runner = web.AppRunner(site.wiki_app(), access_log=None)
    await wiki_runner.setup()
    await web.TCPSite(wiki_runner, config.host, config.port).start()
    site.wiki_base = f"http://{_public_host(config.host)}:{wiki_runner.addresses[0][1]}"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    print(json.dumps({"api": site.wiki_base, "images": site.upload_base}), flush=True)
    try:
        await stop.wait()
    finally:
        await wiki_runner.cleanup()
        await upload_runner.cleanup()


def parse_args(argv: list[str] | None = None) -> SiteConfig:
    defaults = SiteConfig()
    parser = argparse.ArgumentParser(prog="python -m mocksites.mediawiki", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="wiki port (0 = any free port)")
    # --image-port: the name mocksites.runner.LocalSite passes for a site's second host.
    parser.add_argument("--upload-port", "--image-port", dest="upload_port", type=int, default=defaults.upload_port,
                        help="upload host port (0 = any)")
    parser.add_argument("--fixtures", default=defaults.fixtures, help="the captured Isaac wiki files")
    parser.add_argument("--css-form", choices=CSS_FORMS, default=defaults.css_form,
                        help="real: as captured; variants: every rule in another valid form; 2x: 2x sheets + background-size")
    parser.add_argument("--inject-script", action="store_true",
                        help="position rules only through a script that adds a <style> after load")
    parser.add_argument("--no-api", action="store_true", help="api.php answers 404")
    parser.add_argument("--maxlag-every", type=int, default=defaults.maxlag_every,
                        help="every Nth API request with maxlag gets a maxlag error (0 = never)")
    parser.add_argument("--retry-after", type=int, default=defaults.retry_after, help="seconds, sent with maxlag")
    parser.add_argument("--state", default=None, help="JSON file keeping /_mock/change over restarts")
    return SiteConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
