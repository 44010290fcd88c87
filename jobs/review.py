"""``scrapy review``: a small local web page to keep or drop pictures by hand.

Models and rules get some pictures wrong; a person looking at a contact sheet sees it at once. The
page lists the catalogue's pictures (kept, dropped or failed) as thumbnails with Keep, Drop and
Clear buttons. A click is a *manual decision*: stored in the catalogue's ``manual_decisions``
table, it moves a crawled picture between ``images/`` and ``dropped/`` as any decision does, and
it outranks every rule and model from then on (``stages/decide.py``), so re-curating with a new
model never undoes it. Clear removes it; the next ``scrapy curate`` with rules decides again.

The server listens on 127.0.0.1 only. Every change is a POST that must carry the page's random
token, so another web site open in the same browser cannot click for you (cross-site requests
cannot read the token). Each change takes OUTPUT_DIR's lock for the moment it takes
(core/output_lock.py): while a crawl or curate runs there, the page says so and changes nothing.
The page works without JavaScript: plain forms, and a redirect back to where you were.

What a web page elsewhere could still try, and what stops it:

* DNS rebinding (a name of the attacker's that resolves to 127.0.0.1 a moment later): every request
  must name ``127.0.0.1:PORT`` or ``localhost:PORT`` in ``Host``, and a POST that says where it comes
  from (``Origin``, ``Sec-Fetch-Site``) must come from this page; anything else is 403.
* Framing the page to trick a click: ``X-Frame-Options: DENY`` and a Content-Security-Policy that
  allows no script, no frame ancestor, and forms and images from this server only.
* A redirect off-site: ``back`` is rebuilt from its status and page, never followed as given.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import math
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from aiohttp import web

from catalog.store import LOCAL_PREFIX, Catalog, utc_now
from catalog.tags import pictures_with
from core.output_lock import OutputLock
from core.storage import move_to_status
from jobs.report import make_thumbnail
from jobs.review_learning import Learner
from jobs.review_queue import DEFAULT_THRESHOLD, EXPLORE_EVERY, ORDERS, QueuedPicture, order_queue
from models.classifier import model_version
from stages.decide import manual_reason

logger = logging.getLogger(__name__)

STATUSES = ("kept", "dropped", "failed")
PER_PAGE = 60
THUMBNAIL_SIZE = 256
QUEUE_DEFAULT, QUEUE_MAX = 20, 500  # pictures GET /api/queue answers by default, at most
MAX_PAGE = 1_000_000  # a page number (of the listing, or an artwork's page) larger than this is refused
LOCAL_HOSTS = ("127.0.0.1", "localhost")
LABEL_SCRIPT = Path(__file__).with_name("review_static") / "label.js"
# the one-picture page runs its own script (this server's only) and calls the JSON API; nothing else
LABEL_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self'; style-src 'unsafe-inline'; "
             "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: browsers would then send a form POST with Origin: null
}


def apply_manual_decision(catalog: Catalog, root: Path, artwork_id: str, page: int, decision: str | None) -> str:
    """Store a person's keep/drop (None: clear it) and put the picture where its status says.

    A crawled picture moves between ``images/`` and ``dropped/`` (never deleted: a person may change
    their mind); a picture from a folder (``local:``) only changes in the catalogue, as in curate.
    Returns what happened, for the page.
    """
    picture = catalog.picture(artwork_id, page)
    if picture is None:
        raise LookupError(f"no picture {artwork_id} p{page} in the catalogue")
    now = utc_now()
    if decision is None:
        with catalog.batch():
            catalog.set_manual_decision(artwork_id, page, None, now)
        return f"{artwork_id} p{page}: manual decision cleared (the next curate with rules decides again)"
    if picture.status == "failed" or picture.path is None:
        raise ValueError(f"{artwork_id} p{page} has no stored picture to keep or drop ({picture.reason})")
    status = "kept" if decision == "keep" else "dropped"
    path = picture.path if artwork_id.startswith(LOCAL_PREFIX) else move_to_status(root, picture.path, status)
    try:
        with catalog.batch():
            catalog.set_manual_decision(artwork_id, page, decision, now)
            catalog.set_decision(artwork_id, page, status, manual_reason(decision, now), path)
    except BaseException:
        if path != picture.path:  # the catalogue still points at the old place: put the file back
            os.replace(root / path, root / picture.path)
        raise
    logger.info("Review: %s p%d %s by hand", artwork_id, page, status)
    return f"{artwork_id} p{page}: {status} by hand"


class Busy(Exception):
    """OUTPUT_DIR's lock is held by another process; the message says by whom."""


@dataclass
class Listed:
    artwork_id: str
    page: int
    status: str
    reason: str | None
    path: str | None
    title: str | None
    manual: str | None


class ReviewSite:
    """The review page over one catalogue; ``app()`` is the aiohttp application."""

    def __init__(self, catalog_path: Path, root: Path, lock: OutputLock, classifier_model: Path | None = None,
                 phash_distance: int = 6, learner: Learner | None = None, write_lock: threading.Lock | None = None,
                 explore_every: int = EXPLORE_EVERY):
        self.catalog = Catalog(catalog_path)
        self.root = root
        self.lock = lock
        self.token = secrets.token_urlsafe(24)
        self.classifier_model = classifier_model  # its card gives the queue's threshold and GET /api/model
        self.phash_distance = phash_distance  # near duplicates for the diverse sample (CURATE_PHASH_DISTANCE)
        self.explore_every = explore_every  # uncertain order: every Nth question from the diverse sample
        self.learner = learner  # retrains after every N labels (jobs/review_learning.py); None: never
        self.write_lock = write_lock or threading.Lock()  # a click waits while a retrain writes

    async def _apply(self, artwork_id: str, page: int, decision: str | None) -> str:
        """A click: wait for a retrain's writes to end, take OUTPUT_DIR's lock (409 when another process
        holds it), store the decision, and tell the learner there is one more label."""
        await asyncio.to_thread(self.write_lock.acquire)
        try:
            holder = self.lock.acquire("scrapy review")
            if holder is not None:
                raise Busy(holder)
            try:
                said = apply_manual_decision(self.catalog, self.root, artwork_id, page, decision)
            finally:
                self.lock.release()
        finally:
            self.write_lock.release()
        if self.learner is not None and decision is not None:
            self.learner.labels_changed(sum(self.catalog.manual_decision_counts()))
        return said

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard])
        app.router.add_get("/", self.index)
        app.router.add_get("/thumb", self.thumbnail)
        app.router.add_post("/decide", self.decide)
        app.router.add_get("/favicon.ico", self.no_icon)
        app.router.add_get("/label", self.label_page)
        app.router.add_get("/static/label.js", self.label_script)
        app.router.add_get("/picture", self.picture_file)
        app.router.add_get("/face", self.face_file)
        app.router.add_get("/api/queue", self.api_queue)
        app.router.add_post("/api/decide", self.api_decide)
        app.router.add_get("/api/model", self.api_model)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        self.catalog.close()

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Only this server's own names and pages may use it (see the module's docstring); every answer,
        errors too, carries the security headers."""
        try:
            self._check_origin(request)
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        policy = response.headers.get("Content-Security-Policy")
        response.headers.update(SECURITY_HEADERS)
        if policy == LABEL_CSP:  # the one-picture page's own policy, which lets its script run
            response.headers["Content-Security-Policy"] = policy
        return response

    @staticmethod
    def _check_origin(request: web.Request) -> None:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else None
        ours = {f"{host}:{port}" for host in LOCAL_HOSTS}
        if request.headers.get("Host", "").lower() not in ours:
            raise web.HTTPForbidden(text=f"this page answers to http://127.0.0.1:{port}/ only")
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin.lower() not in {f"http://{name}" for name in ours}:
                raise web.HTTPForbidden(text="a change must come from the review page itself")
            if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
                raise web.HTTPForbidden(text="a change must come from the review page itself")

    # --- pages ----------------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "kept")
        if status not in (*STATUSES, "all"):
            raise web.HTTPBadRequest(text=f"status must be one of {', '.join(STATUSES)} or all")
        page_number = max(number(request.query.get("page", "1"), "page"), 1)
        listed, total = self._listed(status, page_number)
        here = listing_path(status, page_number)
        message = request.query.get("said", "")
        return web.Response(text=self._render(status, page_number, total, listed, here, message),
                            content_type="text/html", charset="utf-8")

    async def thumbnail(self, request: web.Request) -> web.Response:
        artwork_id = request.query.get("artwork_id", "")
        picture = self.catalog.picture(artwork_id, number(request.query.get("page", ""), "page"))
        if picture is None or picture.path is None:
            raise web.HTTPNotFound(text="no such picture")
        file = self.root / picture.path
        source = picture.sha256 or picture.path
        stored = self.catalog.thumbnail(artwork_id, picture.page, source)
        if stored is None:
            try:
                # decoding is slow next to everything else here: off the event loop, so a click is
                # answered while a page's thumbnails are still being drawn
                made, width, height = await asyncio.to_thread(make_thumbnail, file, THUMBNAIL_SIZE)
            except (OSError, ValueError, SyntaxError) as exc:
                raise web.HTTPNotFound(text=f"no thumbnail: {exc}") from None
            with self.catalog.batch():
                self.catalog.put_thumbnail(artwork_id, picture.page, source, width, height, made)
            stored = made
        return web.Response(body=stored, content_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    async def decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        if not secrets.compare_digest(str(form.get("token", "")), self.token):
            raise web.HTTPForbidden(text="the page's token is missing or wrong: reload the review page")
        decision = str(form.get("decision", ""))
        if decision not in ("keep", "drop", "clear"):
            raise web.HTTPBadRequest(text="decision must be keep, drop or clear")
        artwork_id, page = str(form.get("artwork_id", "")), number(str(form.get("page", "")), "page")
        back = safe_back(str(form.get("back", "/")))
        try:
            said = await self._apply(artwork_id, page, None if decision == "clear" else decision)
        except Busy as exc:
            raise web.HTTPConflict(text=f"OUTPUT_DIR is busy ({exc}); nothing was changed: try again when it is done") from None
        except LookupError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        except (ValueError, OSError) as exc:
            said = f"nothing changed: {exc}"
        raise web.HTTPSeeOther(f"{back}&{urlencode({'said': said})}")

    @staticmethod
    async def no_icon(_request: web.Request) -> web.Response:
        """There is no icon; 204 rather than 404, so a browser's console stays clean."""
        return web.Response(status=204)

    # --- the one-picture mode: a page, its script, and the full picture and face crops it shows ---------
    async def label_page(self, request: web.Request) -> web.Response:
        """GET /label: one picture at a time, labelled with the keyboard (jobs/review_static/label.js)."""
        order = request.query.get("order", "uncertain")
        if order not in ORDERS:
            raise web.HTTPBadRequest(text=f"order must be one of {', '.join(ORDERS)}")
        orders = " ".join(f'<a href="/label?order={o}"{" class=on" if o == order else ""}>{o}</a>' for o in ORDERS)
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Label: {_esc(order)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1em; }} nav a {{ margin-right: 1em; }} nav a.on {{ font-weight: bold; }}
main {{ display: flex; gap: 1.5em; }} #picture {{ max-width: 70vw; max-height: 80vh; }}
#faces img {{ width: 96px; height: 96px; margin: 2px; }} .reason {{ color: #555; word-break: break-word; }}
#said, #model {{ background: #ffd; padding: 4px; min-height: 1.2em; }} kbd {{ border: 1px solid #999; padding: 0 3px; }}
</style></head><body>
<nav><a href="/">grid</a> order: {orders}</nav>
<p>Keys: <kbd>k</kbd> keep, <kbd>d</kbd> drop, <kbd>u</kbd> undo, <kbd>s</kbd> skip, <kbd>←</kbd> <kbd>→</kbd> move.</p>
<p id="model" role="status"></p>
<p id="said" role="status"></p>
<main data-token="{_esc(self.token)}"><img id="picture" alt=""><div><div id="faces"></div><div id="facts"></div></div></main>
<script src="/static/label.js"></script>
</body></html>
"""
        return web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": LABEL_CSP})

    async def label_script(self, request: web.Request) -> web.Response:
        return web.Response(body=LABEL_SCRIPT.read_bytes(), content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def picture_file(self, request: web.Request) -> web.StreamResponse:
        """GET /picture?artwork_id=…&page=…: the stored picture itself, as the catalogue names it."""
        picture = self.catalog.picture(request.query.get("artwork_id", ""), number(request.query.get("page", ""), "page"))
        if picture is None or picture.path is None:
            raise web.HTTPNotFound(text="no such picture")
        file = self.root / picture.path  # an absolute stored path (a folder's picture) stays as it is
        if not file.is_file():
            raise web.HTTPNotFound(text="the picture's file is gone")
        return web.FileResponse(file, headers={"Cache-Control": "no-cache"})

    async def face_file(self, request: web.Request) -> web.StreamResponse:
        """GET /face?artwork_id=…&page=…&idx=…: one stored face crop."""
        artwork_id = request.query.get("artwork_id", "")
        page, index = number(request.query.get("page", ""), "page"), number(request.query.get("idx", ""), "idx")
        crops = dict(self.catalog.face_crops_of(artwork_id, page))
        if index not in crops or not (self.root / crops[index]).is_file():
            raise web.HTTPNotFound(text="no such face crop")
        return web.FileResponse(self.root / crops[index], headers={"Cache-Control": "no-cache"})

    # --- the JSON API (docs/curation.md): what the one-picture mode uses, and scripts may too ----------
    async def api_queue(self, request: web.Request) -> web.Response:
        """``GET /api/queue?order=uncertain&n=K`` and filters: the next pictures to label, in order."""
        query = request.query
        order = query.get("order", "uncertain")
        if order not in ORDERS:
            raise json_error(web.HTTPBadRequest, f"order must be one of {', '.join(ORDERS)}")
        n = plain_number(query.get("n", str(QUEUE_DEFAULT)))
        if n is None or not 1 <= n <= QUEUE_MAX:
            raise json_error(web.HTTPBadRequest, f"n must be a whole number from 1 to {QUEUE_MAX}")
        status = query.get("status", "all")
        if status not in (*STATUSES, "all"):
            raise json_error(web.HTTPBadRequest, f"status must be one of {', '.join(STATUSES)} or all")
        manual_choices: dict[str, bool | None] = {"any": None, "yes": True, "no": False}
        if query.get("manual", "any") not in manual_choices:
            raise json_error(web.HTTPBadRequest, "manual must be yes, no or any")
        manual = manual_choices[query.get("manual", "any")]
        bounds = [score_bound(query.get(name), name) for name in ("min_score", "max_score", "threshold")]
        model = self.model_card()
        threshold = bounds[2] if bounds[2] is not None else float(model.get("threshold", DEFAULT_THRESHOLD))
        rows = self.catalog.review_queue(None if status == "all" else status, manual, bounds[0], bounds[1])
        pictures = [QueuedPicture(*row) for row in rows]
        tag = query.get("tag", "").strip()
        if tag:
            tagged = {(t.artwork_id, t.page) for t in pictures_with(self.catalog.conn, tag, STATUSES)}
            pictures = [p for p in pictures if (p.artwork_id, p.page) in tagged]
        ordered = order_queue(pictures, order, threshold, self.phash_distance, self.explore_every)
        listed = []
        for picture in ordered[:n]:
            entry = picture.as_json(threshold)
            if picture.has_file:
                key = {"artwork_id": picture.artwork_id, "page": picture.page}
                entry["thumbnail"] = "/thumb?" + urlencode(key)
                entry["picture"] = "/picture?" + urlencode(key)
                entry["faces"] = ["/face?" + urlencode({**key, "idx": index})
                                  for index, _ in self.catalog.face_crops_of(picture.artwork_id, picture.page)]
            listed.append(entry)
        return web.json_response({"order": order, "threshold": threshold, "matching": len(ordered),
                                  "model": model.get("version"), "pictures": listed})

    async def api_decide(self, request: web.Request) -> web.Response:
        """``POST /api/decide`` with a JSON body {artwork_id, page, decision: keep|drop|clear, token}:
        the form's rules (token, lock), answered in JSON."""
        try:
            body = await request.json()
        except ValueError:
            raise json_error(web.HTTPBadRequest, "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise json_error(web.HTTPBadRequest, "the body must be a JSON object")
        if not secrets.compare_digest(str(body.get("token", "")), self.token):
            raise json_error(web.HTTPForbidden, "the page's token is missing or wrong: reload the review page")
        decision = body.get("decision")
        if decision not in ("keep", "drop", "clear"):
            raise json_error(web.HTTPBadRequest, "decision must be keep, drop or clear")
        artwork_id, page = body.get("artwork_id"), body.get("page")
        if not isinstance(artwork_id, str) or not artwork_id:
            raise json_error(web.HTTPBadRequest, "artwork_id must be the artwork's id as text")
        if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page <= MAX_PAGE:
            raise json_error(web.HTTPBadRequest, f"page must be a whole number from 0 to {MAX_PAGE}")
        try:
            said = await self._apply(artwork_id, page, None if decision == "clear" else decision)
        except Busy as exc:
            raise json_error(web.HTTPConflict, f"OUTPUT_DIR is busy ({exc}); nothing was changed: try again when it is done") from None
        except LookupError as exc:
            raise json_error(web.HTTPNotFound, str(exc)) from None
        except (ValueError, OSError) as exc:
            raise json_error(web.HTTPUnprocessableEntity, f"nothing changed: {exc}") from None
        picture = self.catalog.picture(artwork_id, page)
        return web.json_response({"said": said, "artwork_id": artwork_id, "page": page,
                                  "status": picture.status if picture else None,
                                  "manual": None if decision == "clear" else decision})

    async def api_model(self, request: web.Request) -> web.Response:
        """``GET /api/model``: the classifier the queue's scores come from (its version, what it learned
        from, its held-out figures from its card) and how many labels the catalogue holds now."""
        card = self.model_card()
        keep, drop = self.catalog.manual_decision_counts()
        answer: dict[str, Any] = {"model": card or None, "labels": {"keep": keep, "drop": drop, "total": keep + drop}}
        if self.learner is not None:
            answer["learning"] = self.learner.status()
        return web.json_response(answer)

    def model_card(self) -> dict[str, Any]:
        """The card of the model the scores come from: the learner's latest, else the configured
        classifier's; {} without either."""
        learned = self.learner.model_path if self.learner is not None else None
        path = learned or self.classifier_model
        if path is None or not path.is_file():
            return {}
        try:
            card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            card = {}
        data = card.get("data") or {}
        return {"version": model_version(path), "path": str(path), "target": card.get("target"),
                "classes": card.get("classes"), "threshold": card.get("threshold", DEFAULT_THRESHOLD),
                "learned_from": data.get("images"), "per_class": data.get("per_class"),
                "held_out": card.get("metrics"), "created": card.get("created")}

    # --- reading and drawing ------------------------------------------------------------------------------
    def _listed(self, status: str, page_number: int) -> tuple[list[Listed], int]:
        rows, total = self.catalog.review_listing(None if status == "all" else status, PER_PAGE,
                                                  (page_number - 1) * PER_PAGE)
        return [Listed(*row) for row in rows], total

    def _render(self, status: str, page_number: int, total: int, listed: list[Listed], here: str, message: str) -> str:
        esc = _esc
        tabs = " ".join(
            f'<a href="/?status={s}"{" class=on" if s == status else ""}>{s}</a>' for s in (*STATUSES, "all")
        )
        pages = -(-total // PER_PAGE) or 1
        nav = []
        if page_number > 1:
            nav.append(f'<a rel="prev" href="/?{urlencode({"status": status, "page": page_number - 1})}">previous</a>')
        if page_number < pages:
            nav.append(f'<a rel="next" href="/?{urlencode({"status": status, "page": page_number + 1})}">next</a>')
        cards = "\n".join(self._card(item, here) for item in listed)
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Review: {esc(status)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1em; }}
nav a {{ margin-right: 1em; }} nav a.on {{ font-weight: bold; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.card {{ width: 270px; border: 1px solid #ccc; padding: 6px; }}
.card img {{ max-width: 256px; max-height: 256px; display: block; margin: auto; }}
.card.manual {{ border-color: #36c; }} .reason {{ color: #555; font-size: 12px; word-break: break-word; }}
.said {{ background: #ffd; padding: 4px; }}
</style></head><body>
<nav>{tabs} <a href="/label">label one at a time</a></nav>
<p>{total} pictures, page {page_number} of {pages}. {" ".join(nav)}</p>
{f'<p class="said" role="status">{esc(message)}</p>' if message else ""}
{self._learning_line()}
<div class="grid">
{cards}
</div></body></html>
"""

    def _learning_line(self) -> str:
        """Where the background learner stands, for the page (no JavaScript needed to see it)."""
        if self.learner is None:
            return ""
        status = self.learner.status()
        labels = sum(self.catalog.manual_decision_counts())
        last = status["last"]
        if status["state"] == "training":
            text = f"Learning from {status['trained_on']} labels…"
        elif status["state"] == "waiting":
            text = f"Not learning yet: {status['error']}"
        elif status["state"] == "failed":
            text = (f"The last retrain failed: {status['error']}. Every label is stored; the next one tries again.")
        elif last:
            change = last["change"]
            text = (f"Model {last['version']} is live: learned from {last['labels']} labels, "
                    f"+{change['kept']} kept, −{change['dropped']}.")
        elif status["model"]:
            text = f"Model {Path(status['model']).name} (from an earlier session); it learns again every {status['every']} labels."
        else:
            text = f"No model yet: it learns after every {status['every']} labels (you have {labels})."
        return f'<p class="learning" role="status" data-state="{_esc(status["state"])}">{_esc(text)}</p>'

    def _card(self, item: Listed, here: str) -> str:
        esc = _esc
        key = urlencode({"artwork_id": item.artwork_id, "page": item.page})
        image = f'<img loading="lazy" alt="" src="/thumb?{esc(key)}">' if item.path else "<p>(no picture)</p>"
        buttons = "".join(
            f'<button name="decision" value="{value}">{label}</button>'
            for value, label in (("keep", "Keep"), ("drop", "Drop"), ("clear", "Clear"))
            if item.path or value == "clear"
        )
        return (
            f'<div class="card{" manual" if item.manual else ""}" data-key="{esc(item.artwork_id)}:{item.page}" '
            f'data-status="{esc(item.status)}">{image}'
            f"<div><b>{esc(item.artwork_id)} p{item.page}</b> {esc(item.title or '')}</div>"
            f'<div>{esc(item.status)}{" (by hand)" if item.manual else ""}</div>'
            f'<div class="reason">{esc(item.reason or "")}</div>'
            f'<form method="post" action="/decide">'
            f'<input type="hidden" name="token" value="{esc(self.token)}">'
            f'<input type="hidden" name="artwork_id" value="{esc(item.artwork_id)}">'
            f'<input type="hidden" name="page" value="{item.page}">'
            f'<input type="hidden" name="back" value="{esc(here)}">{buttons}</form></div>'
        )


def json_error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    """An HTTP error whose body is {"error": message}, for the JSON API."""
    return kind(text=json.dumps({"error": message}), content_type="application/json")


def score_bound(text: str | None, what: str) -> float | None:
    """A score from 0 to 1 in a query; None when not given; else 400."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise json_error(web.HTTPBadRequest, f"{what} must be a number from 0 to 1")
    return value


def plain_number(text: str) -> int | None:
    """A page number as typed: ASCII digits only (no ``²`` or ``١``), at most ``MAX_PAGE``; else None."""
    return int(text) if re.fullmatch(r"[0-9]{1,7}", text) and int(text) <= MAX_PAGE else None


def number(text: str, what: str) -> int:
    """A page number from a query or form (``plain_number``); else 400."""
    value = plain_number(text)
    if value is None:
        raise web.HTTPBadRequest(text=f"{what} must be a whole number from 0 to {MAX_PAGE}")
    return value


def listing_path(status: str, page_number: int) -> str:
    """The path of one page of the listing: where a form goes back to."""
    return f"/?{urlencode({'status': status, 'page': page_number})}"


def safe_back(back: str) -> str:
    """Where to go after a change: the listing page ``back`` names, rebuilt from its status and page
    number; anything else (another host, ``/%09/evil.example``, another path) goes to the first page."""
    parts = urlsplit(back)
    if parts.scheme or parts.netloc or parts.path != "/":
        return listing_path("kept", 1)
    query = parse_qs(parts.query)
    status = (query.get("status") or ["kept"])[0]
    page = plain_number((query.get("page") or ["1"])[0])
    if status not in (*STATUSES, "all") or not page:
        return listing_path("kept", 1)
    return listing_path(status, page)


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)
