"""The Isaac wiki's item icons: list page → CSS → sprite sheet, for each kind of item.

    scrapy crawl isaac_wiki [-a kinds=collectibles,trinkets] [-a render=css|browser]

``render=css`` (the default) reads the wiki the way its API is meant to be read:
``action=parse`` gives the list page's HTML, its revision and the style modules it needs;
``load.php`` serves their CSS (with ``site.styles``, which every page view adds and ``parse``
does not list); ``prop=imageinfo`` gives the sheet's URL, size and sha1. When the API is not
usable (HTTP error, not JSON, an error other than ``maxlag``) the page itself is read instead:
``/wiki/<page>``, its ``<link rel=stylesheet>`` and ``<style>`` CSS, ``wgRevisionId``, and the sheet
that the CSS binds to the icons. A ``maxlag`` error (HTTP 200, ``Retry-After``) rests the host for
that long through ``ThrottleMiddleware`` and retries.

``render=browser`` has Chromium (scrapy-playwright) render the list page and reads each icon's
computed ``background-image``, ``-position`` and ``-size`` and its box, so CSS that a script adds
after load counts too (MediaWiki does this for modules loaded by JavaScript); ids that the page's
style rules name but no span carries are probed with a stand-in element.

Incremental: a kind whose page revision, CSS and sheet sha1 are those of the last slice is not cut
again (with the API, its sheet is not even downloaded). A kind whose page fails gets its reason
logged and recorded (``wiki_pages``, the crawl's status); the other kind goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator
from urllib.parse import quote, urlencode, urljoin

import scrapy

from catalog.store import Catalog
from core.errors import ArgumentError
from core.items import SpriteSheetItem
from core.storage import catalog_path
from crawler.middlewares import WAIT_META, parse_retry_after
from stages.sprites.css import ComputedIcon, Element, Stylesheet, first_image_url
from stages.sprites.table import ItemRow, parse_list_page

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

# MediaWiki's etiquette: say who you are and how to reach you.
USER_AGENT = (
    "anime-art-datasets/0.1 (Isaac item-icon dataset crawler, Scrapy; "
    "contact: set your e-mail or project URL here with -s USER_AGENT=...)"
)
SITE_STYLES = "site.styles"  # MediaWiki:Common.css: on every page view, never in parse's modulestyles
SKIN = "vector"
LANGUAGE = "zh-cn"
MAXLAG_TRIES_META = "maxlag_tries"
DEFAULT_MAXLAG_WAIT = 5.0  # seconds, when a maxlag error carries no Retry-After
PAGE_META = {"handle_httpstatus_all": True}
REVISION_ID = re.compile(r'"wgRevisionId"\s*:\s*(\d+)')


@dataclasses.dataclass(frozen=True)
class WikiKind:
    """One kind of item on the wiki: its list page and the file its icons are cut from."""

    kind: str  # as stages.sprites names it
    page: str
    sheet_file: str


WIKI_KINDS = {
    "collectibles": WikiKind("collectible", "道具", "Collectibles_sprite.png"),
    "trinkets": WikiKind("trinket", "饰品", "Trinket_sprite.png"),
}
RENDERS = ("css", "browser")

# In the rendered page (after its load event): wait until no stylesheet has been added for
# settleMs and ResourceLoader (when the page has it) has no module in flight, stop animations
# (their frames are not the item's icon), then read every icon span of the kind, and probe the
# ids that style rules name but no span carries, with the classes every icon span shares.
# Playwright's "networkidle" is not used: it never comes on a page whose aborted image requests
# (skip_heavy_resources) Chromium keeps counting.
READ_ICONS_JS = r"""
async ({prefix, settleMs, maxWaitMs}) => {
  const started = performance.now();
  const loaderBusy = () => {
    const loader = window.mw && mw.loader;
    if (!loader || !loader.getModuleNames) return false;
    return loader.getModuleNames().some(name => ['loading', 'loaded', 'executing'].includes(loader.getState(name)));
  };
  let count = document.styleSheets.length, stableSince = performance.now();
  while ((performance.now() - stableSince < settleMs || loaderBusy() || document.readyState !== 'complete')
         && performance.now() - started < maxWaitMs) {
    await new Promise(resolve => setTimeout(resolve, 50));
    if (document.styleSheets.length !== count) { count = document.styleSheets.length; stableSince = performance.now(); }
  }
  document.getAnimations().forEach(animation => animation.cancel());
  const idPattern = new RegExp('^' + prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '\\d+$');
  const spans = [...document.querySelectorAll('span[id]')].filter(span => idPattern.test(span.id));
  const named = new Set();
  const walk = rules => {
    for (const rule of rules) {
      if (rule instanceof CSSStyleRule) {
        for (const selector of rule.selectorText.split(',')) {
          const subject = selector.trim().split(/[\s>+~]+/).pop();
          if (/[:\[]/.test(subject)) continue;
          for (const match of subject.matchAll(/#([\w-]+)/g)) if (idPattern.test(match[1])) named.add(match[1]);
        }
      } else if (rule instanceof CSSMediaRule) {
        if (matchMedia(rule.media.mediaText || 'all').matches) walk(rule.cssRules);
      } else if (rule.cssRules && !(rule instanceof CSSKeyframesRule)) {
        walk(rule.cssRules);
      }
    }
  };
  for (const sheet of document.styleSheets) { try { walk(sheet.cssRules); } catch (error) { /* cross-origin */ } }
  const shared = spans.length ? [...spans[0].classList].filter(c => spans.every(s => s.classList.contains(c))) : [];
  const host = document.createElement('div');
  host.style.cssText = 'position:absolute;left:-100000px;top:0';
  (spans[0] ? spans[0].parentNode : document.body).appendChild(host);
  const present = new Set(spans.map(span => span.id));
  const probes = [...named].filter(id => !present.has(id)).sort().map(id => {
    const probe = document.createElement('span');
    probe.id = id;
    probe.className = shared.join(' ');
    host.appendChild(probe);
    return probe;
  });
  const read = (element, probe) => {
    const style = getComputedStyle(element);
    return {id: element.id, probe, classes: [...element.classList], image: style.backgroundImage,
            position: style.backgroundPosition, size: style.backgroundSize,
            width: element.offsetWidth, height: element.offsetHeight};
  };
  const icons = spans.map(span => read(span, false)).concat(probes.map(probe => read(probe, true)));
  host.remove();
  const config = window.RLCONF || (window.mw && mw.config && mw.config.values) || {};
  return {revid: config.wgRevisionId || null, icons};
}
"""


def skip_heavy_resources(request: Any) -> bool:
    """PLAYWRIGHT_ABORT_REQUEST: computed styles need no pictures, fonts or media, so the browser
    does not fetch them (the sheets are downloaded once, by Scrapy, politely)."""
    return request.resource_type in ("image", "media", "font")


def sha1_hex(data: bytes | str) -> str:
    return hashlib.sha1(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclasses.dataclass
class Visit:
    """What the spider has learnt so far about one kind's page; becomes a :class:`SpriteSheetItem`."""

    wiki: WikiKind
    page_url: str
    source: str | None = None
    revid: int | None = None
    rows: list[ItemRow] = dataclasses.field(default_factory=list)
    skipped_rows: list[str] = dataclasses.field(default_factory=list)
    css_text: str = ""
    css_url: str = ""
    stylesheet: Stylesheet | None = None
    pending_css: list[str] = dataclasses.field(default_factory=list)  # HTML path: stylesheets still to fetch
    inline_css: list[str] = dataclasses.field(default_factory=list)
    computed: list[ComputedIcon] | None = None
    styles_sha1: str | None = None
    sheet_url: str | None = None
    sheet_sha1: str | None = None

    def item(self, **fields: Any) -> SpriteSheetItem:
        return SpriteSheetItem(
            kind=self.wiki.kind, page_url=self.page_url, source=self.source, revid=self.revid, rows=self.rows,
            skipped_rows=self.skipped_rows, css=self.stylesheet or self.css_text or None, css_url=self.css_url,
            computed=self.computed, styles_sha1=self.styles_sha1, sheet_url=self.sheet_url,
            sheet_sha1=self.sheet_sha1, **fields,
        )


class IsaacWikiSpider(scrapy.Spider):
    name = "isaac_wiki"
    # Set by ``from_crawler`` from the settings.
    base_url: str
    maxlag: int
    maxlag_retries: int
    catalog: Catalog
    custom_settings = {
        # Only the sprite stage: the Pixiv stages have nothing to do with these items.
        "ITEM_PIPELINES": {"pipelines.sprite_sheets.SpriteSheetPipeline": 100},
        "USER_AGENT": USER_AGENT,
        "DEFAULT_REQUEST_HEADERS": {"Accept": "*/*", "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"},
    }

    def __init__(self, kinds: str = "collectibles,trinkets", render: str = "css", *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        names = [name.strip().lower() for name in kinds.split(",") if name.strip()]
        unknown = [name for name in names if name not in WIKI_KINDS and f"{name}s" not in WIKI_KINDS]
        if unknown or not names:
            raise ArgumentError(f"kinds must be a comma-separated list of {', '.join(WIKI_KINDS)}, not {kinds!r}")
        self.kinds = [WIKI_KINDS[name if name in WIKI_KINDS else f"{name}s"] for name in dict.fromkeys(names)]
        if render not in RENDERS:
            raise ArgumentError(f"render must be one of {', '.join(RENDERS)}, not {render!r}")
        self.render = render

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> IsaacWikiSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        s = crawler.settings
        spider.base_url = s.get("ISAAC_WIKI_URL").rstrip("/")
        spider.maxlag = s.getint("ISAAC_WIKI_MAXLAG")
        spider.maxlag_retries = s.getint("ISAAC_WIKI_MAXLAG_RETRIES")
        if spider.render == "browser":
            use_browser(s, s.get("ISAAC_WIKI_CHROMIUM"))
        spider.catalog = Catalog(catalog_path(s))  # read-only here: what was sliced last
        crawler.signals.connect(spider._close_catalog, signal=scrapy.signals.spider_closed)
        return spider

    def crawl_arguments(self) -> dict[str, Any]:
        return {"kinds": [k.kind for k in self.kinds], "render": self.render, "base_url": self.base_url}

    def page_url(self, wiki: WikiKind) -> str:
        return f"{self.base_url}/wiki/{quote(wiki.page)}"

    # --- entry point ------------------------------------------------------------------------------
    async def start(self) -> AsyncIterator[Any]:
        for wiki in self.kinds:
            visit = Visit(wiki, self.page_url(wiki))
            if self.render == "browser":
                yield self.rendered_page_request(visit)
            else:
                yield self.api_request(
                    {"action": "parse", "page": wiki.page, "prop": "text|modules|jsconfigvars|revid"},
                    self.parse_api_page, visit,
                )

    # --- the API ----------------------------------------------------------------------------------
    def api_request(self, params: dict[str, str], callback: Any, visit: Visit) -> scrapy.Request:
        query = {**params, "format": "json", "formatversion": "2", "maxlag": str(self.maxlag)}
        return scrapy.Request(
            f"{self.base_url}/api.php?{urlencode(query, safe='|:')}", callback=callback, errback=self.api_failed,
            cb_kwargs={"visit": visit}, meta=dict(PAGE_META), dont_filter=True,
        )

    def _api_data(self, response: Response, visit: Visit, what: str) -> Any:
        """The API's JSON answer; None after yielding a maxlag retry or the way around the API."""
        data: Any = None
        why = None
        if response.status != 200:
            why = f"HTTP {response.status}"
        else:
            try:
                data = json.loads(response.text)
            except ValueError:
                why = "the answer is not JSON"
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            if error.get("code") == "maxlag":
                retry = self._maxlag_retry(response, error)
                if retry is not None:
                    yield retry
                    return None
                why = f"still lagged after {self.maxlag_retries} maxlag retries"
            else:
                why = f"API error {error.get('code')}: {error.get('info')}"
        elif why is None and not isinstance(data, dict):
            why = "the answer is not a JSON object"
        if why is not None:
            yield from self._around_the_api(visit, what, why)
            return None
        return data

    def _maxlag_retry(self, response: Response, error: dict[str, Any]) -> scrapy.Request | None:
        """MediaWiki asks clients to wait Retry-After when its replicas lag more than maxlag."""
        tries = response.meta.get(MAXLAG_TRIES_META, 0)
        if tries >= self.maxlag_retries:
            return None
        header = response.headers.get(b"Retry-After")
        wait = parse_retry_after(header)
        wait = DEFAULT_MAXLAG_WAIT if wait is None else wait
        self.crawler.stats.inc_value("isaac_wiki/maxlag")
        logger.warning(
            "Isaac wiki API: %s (maxlag=%d); resting %.1f s (Retry-After: %s), then retry %d/%d",
            error.get("info") or "replication lag", self.maxlag, wait,
            header.decode("latin-1") if header else "none", tries + 1, self.maxlag_retries,
        )
        # ThrottleMiddleware rests the whole host for WAIT_META seconds before this goes out.
        assert response.request is not None  # a response the engine downloaded: it knows its request
        return response.request.replace(
            dont_filter=True, meta={**PAGE_META, MAXLAG_TRIES_META: tries + 1, WAIT_META: wait},
        )

    def _around_the_api(self, visit: Visit, what: str, why: str) -> Any:
        """Without the API: the page's HTML instead of parse, the CSS's sheet instead of imageinfo."""
        self.crawler.stats.inc_value("isaac_wiki/api_unusable")
        if what == "parse":
            logger.warning("Isaac wiki %s: the API is not usable (%s); reading the page's HTML instead",
                           visit.wiki.page, why)
            yield self.html_page_request(visit)
        else:
            logger.warning("Isaac wiki %s: imageinfo is not usable (%s); taking the sheet the CSS names",
                           visit.wiki.page, why)
            yield from self._sheet_named_by_css(visit)

    def parse_api_page(self, response: Response, visit: Visit) -> Any:
        data = yield from self._api_data(response, visit, "parse")
        if data is None:
            return
        parsed = data.get("parse") or {}
        text = parsed.get("text")
        text = text.get("*") if isinstance(text, dict) else text
        if not text:
            yield from self._around_the_api(visit, "parse", "its answer holds no page text")
            return
        visit.source = "api"
        visit.revid = parsed.get("revid")
        visit.rows, visit.skipped_rows = parse_list_page(text, visit.wiki.kind)
        modules = [m for m in parsed.get("modulestyles") or [] if m != SITE_STYLES] + [SITE_STYLES]
        query = urlencode({"lang": LANGUAGE, "modules": "|".join(modules), "only": "styles", "skin": SKIN}, safe="|")
        yield scrapy.Request(
            f"{self.base_url}/load.php?{query}", callback=self.parse_module_styles, errback=self.page_failed,
            cb_kwargs={"visit": visit}, meta=dict(PAGE_META), dont_filter=True,
        )

    def parse_module_styles(self, response: Response, visit: Visit) -> Any:
        if response.status != 200:
            yield self.fail(visit, f"load.php answered HTTP {response.status} for the page's styles")
            return
        visit.css_text, visit.css_url = response.text, response.url
        visit.styles_sha1 = sha1_hex(visit.css_text)
        yield self.api_request(
            {"action": "query", "titles": f"File:{visit.wiki.sheet_file}", "prop": "imageinfo",
             "iiprop": "url|size|sha1|timestamp"},
            self.parse_imageinfo, visit,
        )

    def parse_imageinfo(self, response: Response, visit: Visit) -> Any:
        data = yield from self._api_data(response, visit, "imageinfo")
        if data is None:
            return
        pages = (data.get("query") or {}).get("pages") or []
        pages = list(pages.values()) if isinstance(pages, dict) else pages
        info = next((p["imageinfo"][0] for p in pages if p.get("imageinfo")), None)
        if not info or not info.get("url"):
            yield from self._around_the_api(visit, "imageinfo", f"File:{visit.wiki.sheet_file} has no imageinfo")
            return
        visit.sheet_url = urljoin(response.url, info["url"])
        visit.sheet_sha1 = info.get("sha1")
        if self._unchanged(visit):
            yield self._unchanged_item(visit)
            return
        yield self.sheet_request(visit)

    # --- without the API: the page's HTML ------------------------------------------------------------
    def html_page_request(self, visit: Visit) -> scrapy.Request:
        return scrapy.Request(visit.page_url, callback=self.parse_html_page, errback=self.page_failed,
                              cb_kwargs={"visit": visit}, meta=dict(PAGE_META), dont_filter=True)

    def parse_html_page(self, response: Response, visit: Visit) -> Any:
        if response.status != 200:
            yield self.fail(visit, f"the page answered HTTP {response.status}")
            return
        visit.source = "html"
        visit.rows, visit.skipped_rows = parse_list_page(response.text, visit.wiki.kind)
        found = REVISION_ID.search(response.text)
        visit.revid = int(found[1]) if found else None
        visit.pending_css = [
            response.urljoin(href) for href in
            response.xpath('//link[contains(concat(" ", normalize-space(@rel), " "), " stylesheet ")]/@href').getall()
        ]
        visit.inline_css = response.xpath("//style/text()").getall()
        visit.css_url = visit.pending_css[0] if visit.pending_css else response.url
        yield from self._next_stylesheet(visit, [])

    def _next_stylesheet(self, visit: Visit, parts: list[str]) -> Any:
        """Fetch the page's stylesheets one after the other, then find the sheet they name."""
        if visit.pending_css:
            url = visit.pending_css.pop(0)
            yield scrapy.Request(url, callback=self.parse_stylesheet, errback=self.page_failed,
                                 cb_kwargs={"visit": visit, "parts": parts}, meta=dict(PAGE_META), dont_filter=True)
            return
        # All of them come from the wiki's load.php, so one base URL serves their relative url()s.
        visit.css_text = "\n".join(parts + visit.inline_css)
        visit.styles_sha1 = sha1_hex(visit.css_text)
        yield from self._sheet_named_by_css(visit)

    def parse_stylesheet(self, response: Response, visit: Visit, parts: list[str]) -> Any:
        if response.status != 200:
            yield self.fail(visit, f"stylesheet {response.url} answered HTTP {response.status}")
            return
        yield from self._next_stylesheet(visit, [*parts, response.text])

    def _sheet_named_by_css(self, visit: Visit) -> Any:
        """The sheet most icons draw from, by the CSS's own background-image rules."""
        visit.stylesheet = Stylesheet(visit.css_text, visit.css_url)
        urls = Counter(
            url for row in visit.rows if row.css_id
            if (url := visit.stylesheet.sheet_url(Element(row.css_id, row.css_classes, row.icon_style),
                                                  page_url=visit.page_url))
        )
        if not urls:
            yield self.fail(visit, "no sheet: without the API only the CSS can name it, and it binds no "
                                   "background-image to the icons")
            return
        visit.sheet_url = urls.most_common(1)[0][0]
        yield self.sheet_request(visit)

    # --- the browser ------------------------------------------------------------------------------
    def rendered_page_request(self, visit: Visit) -> scrapy.Request:
        from scrapy_playwright.page import PageMethod  # only installed (and needed) for render=browser

        prefix = "collectibles_" if visit.wiki.kind == "collectible" else "trinket_"
        return scrapy.Request(
            visit.page_url, callback=self.parse_rendered_page, errback=self.page_failed,
            cb_kwargs={"visit": visit}, dont_filter=True,
            meta={**PAGE_META, "playwright": True, "playwright_page_methods": [
                PageMethod("evaluate", READ_ICONS_JS, {"prefix": prefix, "settleMs": 500, "maxWaitMs": 15_000}),
            ]},
        )

    def parse_rendered_page(self, response: Response, visit: Visit) -> Any:
        if response.status != 200:
            yield self.fail(visit, f"the page answered HTTP {response.status} in the browser")
            return
        found = response.meta["playwright_page_methods"][-1].result or {}
        visit.source = "browser"
        visit.rows, visit.skipped_rows = parse_list_page(response.text, visit.wiki.kind)
        visit.revid = found.get("revid")
        visit.css_url = response.url
        visit.computed = [
            ComputedIcon(icon["id"], icon["image"] or "none", icon["position"] or "", icon["size"] or "auto",
                         float(icon["width"] or 0), float(icon["height"] or 0))
            for icon in found.get("icons") or []
        ]
        visit.styles_sha1 = sha1_hex(json.dumps([dataclasses.astuple(i) for i in visit.computed]))
        labelled = {row.css_id for row in visit.rows}
        urls = Counter(
            url for icon in visit.computed
            if icon.id in labelled and (url := first_image_url(icon.background_image, response.url))
        )
        if not urls:
            yield self.fail(visit, f"the browser shows no background image on any of the {len(labelled)} icons")
            return
        visit.sheet_url = urls.most_common(1)[0][0]
        yield self.sheet_request(visit)

    # --- the sheet --------------------------------------------------------------------------------
    def sheet_request(self, visit: Visit) -> scrapy.Request:
        assert visit.sheet_url is not None  # set before the sheet is asked for
        return scrapy.Request(visit.sheet_url, callback=self.parse_sheet, errback=self.page_failed,
                              cb_kwargs={"visit": visit}, meta=dict(PAGE_META), dont_filter=True)

    def parse_sheet(self, response: Response, visit: Visit) -> Any:
        if response.status != 200:
            yield self.fail(visit, f"the sheet {response.url} answered HTTP {response.status}")
            return
        sha1 = sha1_hex(response.body)
        if visit.sheet_sha1 and visit.sheet_sha1 != sha1:
            logger.warning("Isaac wiki %s: the sheet's bytes have sha1 %s, imageinfo said %s; keeping the bytes'",
                           visit.wiki.page, sha1, visit.sheet_sha1)
        visit.sheet_sha1 = sha1
        if self._unchanged(visit):  # without the API the sha1 is known only now
            yield self._unchanged_item(visit)
            return
        logger.info("Isaac wiki %s (%s): revision %s, %d rows, sheet %s (sha1 %s); slicing",
                    visit.wiki.page, visit.source, visit.revid, len(visit.rows), visit.sheet_url, sha1[:12])
        yield visit.item(sheet_bytes=response.body)

    # --- outcomes ---------------------------------------------------------------------------------
    def _unchanged(self, visit: Visit) -> bool:
        last = self.catalog.wiki_page(visit.wiki.kind)
        return last is not None and last["status"] == "ok" and all(
            last[name] == getattr(visit, name) for name in ("revid", "styles_sha1", "sheet_url", "sheet_sha1")
        ) and last["page_url"] == visit.page_url

    def _unchanged_item(self, visit: Visit) -> SpriteSheetItem:
        logger.info("Isaac wiki %s (unchanged): revision %s and sheet sha1 %s as last sliced; nothing to cut",
                    visit.wiki.page, visit.revid, (visit.sheet_sha1 or "")[:12])
        return visit.item(status="unchanged")

    def fail(self, visit: Visit, why: str) -> SpriteSheetItem:
        """This kind is given up for this crawl (the pipeline records why); the other goes on, and
        what was cut before stays."""
        logger.error("Isaac wiki %s (failed): %s", visit.wiki.page, why)
        return visit.item(status="failed", reason=why)

    def api_failed(self, failure: Failure) -> Any:
        visit = failure.request.cb_kwargs["visit"]  # type: ignore[attr-defined]  # set by Scrapy on an errback's failure
        what = "parse" if visit.source is None else "imageinfo"
        yield from self._around_the_api(visit, what, f"{failure.value.__class__.__name__}: {failure.value}")

    def page_failed(self, failure: Failure) -> Any:
        request = failure.request  # type: ignore[attr-defined]  # set by Scrapy on an errback's failure
        yield self.fail(request.cb_kwargs["visit"], f"{request.url}: {failure.value.__class__.__name__}: {failure.value}")

    def _close_catalog(self, spider: scrapy.Spider) -> None:
        self.catalog.close()


def use_browser(settings: Any, chromium: str) -> None:
    """Route this crawl's ``playwright`` requests through scrapy-playwright and Debian's Chromium.

    Only for ``render=browser``: other requests go through the handler's plain HTTP download. Set
    at the spider's priority, so ``-s`` on the command line still wins.
    """
    try:
        import scrapy_playwright  # noqa: F401
    except ImportError:
        raise ValueError("render=browser needs scrapy-playwright: pip install -e '.[browser]'") from None
    if not Path(chromium).is_file():
        raise ValueError(f"render=browser needs Chromium at {chromium} (apt-get install chromium, "
                         "or -s ISAAC_WIKI_CHROMIUM=/path/to/chromium)")
    handler = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"
    settings.set("DOWNLOAD_HANDLERS", {"http": handler, "https": handler}, priority="spider")
    settings.set("PLAYWRIGHT_BROWSER_TYPE", "chromium", priority="spider")
    settings.set("PLAYWRIGHT_LAUNCH_OPTIONS", {"executable_path": chromium, "headless": True}, priority="spider")
    settings.set("PLAYWRIGHT_ABORT_REQUEST", "crawler.spiders.isaac_wiki.skip_heavy_resources", priority="spider")
