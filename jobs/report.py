"""``scrapy report``: a static HTML contact sheet of what was kept, dropped and failed, and why.

One ``index.html`` with inline CSS, no script and nothing fetched from anywhere else, so it opens
from disk, from an archive or behind any web server alike. Every string that comes from the
catalogue (titles, artist names, tags, reasons) is escaped: they are written by strangers.

Thumbnails are small JPEGs made with Pillow, written atomically to ``DEST/thumbs/`` and kept in the
catalogue's ``thumbnails`` table (Datasette shows them, ``metadata.json``). A picture whose sha256
has not changed is not thumbnailed again, so a second report over a large catalogue is quick.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from catalog.store import Catalog
from core.progress import progress_bar
from core.storage import atomic_write
from models.imaging import flatten_on_white

GROUPS = ("kept", "dropped", "failed")
PLOTS = ("history.png", "confusion.png")  # what `scrapy classifier train` writes beside the model
FACES_PER_PICTURE = 6
THUMBNAIL_QUALITY = 80


def esc(value: Any) -> str:
    """Text or attribute value, escaped (quotes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def href(path: str) -> str:
    """A relative file path as a URL path, escaped for an attribute."""
    return esc(quote(Path(path).as_posix()))


@dataclass
class Picture:
    artwork_id: str
    page: int
    status: str
    reason: str | None
    path: str | None
    sha256: str | None
    title: str | None
    user_name: str | None
    pixiv_tags: list[str]
    classifier: dict[str, Any] | None
    model_tags: list[tuple[str, float]] = field(default_factory=list)
    faces: list[str] = field(default_factory=list)  # crop paths, relative to DEST
    thumb: str | None = None  # relative to DEST
    thumb_size: tuple[int, int] = (0, 0)
    link: str | None = None  # the stored picture, relative to DEST
    note: str | None = None  # why there is no thumbnail


@dataclass
class ReportSummary:
    index: Path
    counts: dict[str, int]
    shown: dict[str, int]
    thumbnails_made: int = 0
    thumbnails_reused: int = 0
    without_thumbnail: int = 0
    plots: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        counts = ", ".join(f"{self.counts.get(g, 0)} {g}" for g in GROUPS)
        out = [f"Report: {self.index}", f"  pictures: {counts}"]
        hidden = {g: self.counts.get(g, 0) - self.shown.get(g, 0) for g in GROUPS}
        if any(hidden.values()):
            out.append("  not shown (--limit): " + ", ".join(f"{n} {g}" for g, n in hidden.items() if n))
        out.append(f"  thumbnails: {self.thumbnails_made} made, {self.thumbnails_reused} unchanged, "
                   f"{self.without_thumbnail} pictures without one (file missing or unreadable)")
        plots = ", ".join(self.plots) if self.plots else "none (CLASSIFIER_MODEL not set or no plots beside it)"
        out.append(f"  classifier plots: {plots}")
        return out


def safe_name(artwork_id: str, page: int) -> str:
    """A file name for one picture's thumbnail (``local:`` ids hold a colon)."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', artwork_id)}_p{page}.jpg"


def make_thumbnail(source: Path, size: int) -> tuple[bytes, int, int]:
    """A JPEG at most ``size`` px on its longest side, transparency on white (first frame of an animation)."""
    with Image.open(source) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at 1/2..1/8 scale, several times faster
        image = flatten_on_white(image)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        if image.mode != "RGB":
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
        return buffer.getvalue(), image.width, image.height


def _source_key(file: Path, sha256: str | None) -> str:
    """What a thumbnail was made from: the picture's sha256, or its size and mtime when it has none."""
    if sha256:
        return sha256
    stat = file.stat()
    return f"size:{stat.st_size}:mtime:{stat.st_mtime_ns}"


def _pictures(catalog: Catalog, model_tag_count: int) -> list[Picture]:
    rows = catalog.report_rows()
    # The model tags of the tagger version that last ran on each picture (as `scrapy curate` reads them).
    last_tagger = catalog.last_tagger_versions()
    model_tags: dict[tuple[str, int], list[tuple[str, float]]] = {}
    models: dict[tuple[str, int], str] = {}
    for artwork_id, page, tag, score, model in catalog.model_tags_best_first():
        key = (artwork_id, page)
        if models.setdefault(key, last_tagger.get(key, model)) != model:
            continue
        tags = model_tags.setdefault(key, [])
        if len(tags) < model_tag_count:
            tags.append((tag, score))
    pictures = []
    for (artwork_id, page, status, reason, path, sha256, title, user_name, tags_json,
         label, score, model, target) in rows:
        try:
            pixiv_tags = [str(t) for t in json.loads(tags_json or "[]")]
        except ValueError:
            pixiv_tags = []
        classifier = {"label": label, "score": score, "model": model, "target": target} if model else None
        pictures.append(Picture(artwork_id, page, status, reason, path, sha256, title, user_name, pixiv_tags,
                                classifier, model_tags.get((artwork_id, page), [])))
    return pictures


def _copy_if_changed(source: Path, target: Path) -> bool:
    """Copy a small file atomically unless an identical-looking one is there; False when the source is gone."""
    if not source.is_file():
        return False
    if not (target.is_file() and target.stat().st_size == source.stat().st_size
            and target.stat().st_mtime_ns >= source.stat().st_mtime_ns):
        atomic_write(target, source.read_bytes())
    return True


def write_report(catalog_file: str | os.PathLike[str], root: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                 classifier_model: str = "", thumbnail_size: int = 160, model_tag_count: int = 8,
                 limit: int | None = None, progress: bool = True) -> ReportSummary:
    """Write ``dest/index.html`` with its thumbnails, face crops and classifier plots; say what it did.

    ``root`` is OUTPUT_DIR (picture paths in the catalogue are relative to it); ``limit``: at most that
    many pictures shown per group, newest first (the counts still cover all of them).
    """
    root, dest = Path(root).resolve(), Path(dest).resolve()
    if thumbnail_size < 16:
        raise ValueError(f"the thumbnail size must be at least 16 px, not {thumbnail_size}")
    catalog = Catalog(catalog_file)
    try:
        pictures = _pictures(catalog, model_tag_count)
        counts = Counter(p.status for p in pictures)
        groups = {g: [p for p in pictures if p.status == g] for g in GROUPS}
        shown = {g: items if limit is None else items[: max(limit, 0)] for g, items in groups.items()}
        summary = ReportSummary(index=dest / "index.html", counts=dict(counts),
                                shown={g: len(items) for g, items in shown.items()})
        faces = catalog.face_crop_paths()
        stored = [p for g in ("kept", "dropped") for p in shown[g]]
        bar = progress_bar("report", len(stored), enabled=progress)
        for start in range(0, len(stored), 64):
            with catalog.batch():  # one commit per 64 thumbnails
                for picture in stored[start:start + 64]:
                    _prepare(catalog, picture, root, dest, thumbnail_size, faces, summary)
                    bar.update(1)
        bar.close()
        summary.plots = _copy_plots(classifier_model, dest)
        card = _classifier_card(classifier_model)
        page = _render(groups, shown, counts, summary.plots, card, catalog.summary())
        atomic_write(summary.index, page.encode("utf-8"))
        return summary
    finally:
        catalog.close()


def _prepare(catalog: Catalog, picture: Picture, root: Path, dest: Path, size: int,
             faces: dict[tuple[str, int], list[str]], summary: ReportSummary) -> None:
    """The picture's thumbnail (made, or reused when its source is unchanged), link and face crops."""
    if not picture.path:
        picture.note = "no file (deleted when dropped)"
        summary.without_thumbnail += 1
        return
    file = root / picture.path  # an absolute path (a local: picture) stays as it is
    picture.link = os.path.relpath(file, dest)
    target = dest / "thumbs" / safe_name(picture.artwork_id, picture.page)
    try:
        key = _source_key(file, picture.sha256)
        jpeg = catalog.thumbnail(picture.artwork_id, picture.page, key) if file.is_file() else None
        if jpeg is None:
            jpeg, width, height = make_thumbnail(file, size)
            catalog.put_thumbnail(picture.artwork_id, picture.page, key, width, height, jpeg)
            summary.thumbnails_made += 1
        else:
            summary.thumbnails_reused += 1
        if not (target.is_file() and target.read_bytes() == jpeg):
            atomic_write(target, jpeg)
        with Image.open(io.BytesIO(jpeg)) as thumb:
            picture.thumb_size = thumb.size
        picture.thumb = target.relative_to(dest).as_posix()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        picture.note = f"no thumbnail: {type(exc).__name__}: {exc}"
        summary.without_thumbnail += 1
    for crop in faces.get((picture.artwork_id, picture.page), [])[:FACES_PER_PICTURE]:
        copied = dest / "faces" / Path(crop).name
        if _copy_if_changed(root / crop, copied):
            picture.faces.append(copied.relative_to(dest).as_posix())


def _copy_plots(classifier_model: str, dest: Path) -> list[str]:
    if not classifier_model:
        return []
    folder = Path(classifier_model).parent
    copied = []
    for name in PLOTS:
        if _copy_if_changed(folder / name, dest / "plots" / name):
            copied.append(f"plots/{name}")
    return copied


def _classifier_card(classifier_model: str) -> dict[str, Any] | None:
    """The classifier's card (``classifier.json`` beside the model), or None."""
    if not classifier_model:
        return None
    try:
        card = json.loads(Path(classifier_model).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


# --- HTML ----------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{margin:0 0 .3em}h2{margin:1.2em 0 .4em;border-bottom:2px solid #ccc}
.counts span{display:inline-block;margin-right:1.2em;font-weight:600}
.kept{color:#17692f}.dropped{color:#a15c00}.failed{color:#b3261e}
table.reasons{border-collapse:collapse;margin:.4em 0 1em}
table.reasons td,table.reasons th{border:1px solid #ddd;padding:.2em .6em;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{width:220px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px;overflow-wrap:anywhere}
.card-dropped{border-color:#e0b070}.card-failed{border-color:#e59a94}
.card .frame{display:flex;align-items:center;justify-content:center;height:170px;background:#eee}
.card img.thumb{max-width:208px;max-height:170px;height:auto}
.card .none{color:#777;font-size:12px;padding:1em}
.card h3{font-size:13px;margin:.3em 0 .1em}
.card p{margin:.15em 0;font-size:12px}
.tags{color:#555}.mtag{display:inline-block;background:#eef;border-radius:3px;padding:0 3px;margin:1px}
.faces img{width:40px;height:40px;margin:1px}
.plots img{max-width:480px;margin-right:1em;border:1px solid #ddd;background:#fff}
.muted{color:#777}
"""


def _reason_pattern(reason: str | None) -> str:
    """A reason with its per-picture numbers masked, so that reasons of one kind count together."""
    if not reason:
        return "(none)"
    reason = re.sub(r"\b\d+\.\d{3}\b", "#", reason)  # scores, printed with 3 decimals
    return re.sub(r"\(\d+ pixels\)", "(# pixels)", reason)


def _render(groups: dict[str, list[Picture]], shown: dict[str, list[Picture]], counts: Counter[str],
            plots: list[str], card: dict[str, Any] | None, catalog_summary: dict[str, Any]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Crawl report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Crawl report</h1>",
        f'<p class="muted">Catalogue {esc(catalog_summary["catalog"])}: {catalog_summary["artworks"]} artworks.</p>',
        '<p class="counts">' + "".join(
            f'<span class="{g}">{counts.get(g, 0)} {g}</span>' for g in GROUPS
        ) + "</p>",
        '<nav><a href="#kept">kept</a> · <a href="#dropped">dropped</a> · <a href="#failed">failed</a>'
        + (' · <a href="#classifier">classifier</a>' if plots or card else "") + "</nav>",
    ]
    if plots or card:
        parts.append('<h2 id="classifier">Classifier</h2>')
        if card:
            metrics = card.get("metrics") or {}
            facts = {
                "classes": ", ".join(map(str, card.get("classes") or [])),
                "threshold": card.get("threshold"),
                "validation accuracy": metrics.get("val_accuracy"),
                "trained on": (card.get("data") or {}).get("images"),
                "created": card.get("created"),
            }
            parts.append("<p>" + " · ".join(f"{esc(k)}: {esc(v)}" for k, v in facts.items() if v not in (None, ""))
                         + "</p>")
        if plots:
            parts.append('<p class="plots">' + "".join(
                f'<img src="{href(p)}" alt="{esc(Path(p).stem)}">' for p in plots) + "</p>")
    for group in GROUPS:
        total, items = len(groups[group]), shown[group]
        parts.append(f'<section id="{group}"><h2 class="{group}">{group.capitalize()} ({total})</h2>')
        reasons = Counter(_reason_pattern(p.reason) for p in groups[group] if p.reason)
        if reasons:
            parts.append('<table class="reasons"><tr><th>reason</th><th>pictures</th></tr>' + "".join(
                f"<tr><td>{esc(r)}</td><td>{n}</td></tr>" for r, n in reasons.most_common()) + "</table>")
        if len(items) < total:
            parts.append(f'<p class="muted">Showing the newest {len(items)} of {total}.</p>')
        parts.append('<div class="grid">' + "".join(_card(p) for p in items) + "</div></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _card(p: Picture) -> str:
    if p.thumb:
        width, height = p.thumb_size
        image = (f'<img class="thumb" src="{href(p.thumb)}" width="{width}" height="{height}" '
                 f'loading="lazy" alt="{esc(p.title or p.artwork_id)}">')
        image = f'<a href="{href(p.link)}">{image}</a>' if p.link else image
    else:
        image = f'<span class="none">{esc(p.note or p.reason or "no file")}</span>'
    lines = [f'<div class="card card-{p.status}" id="pic-{esc(safe_name(p.artwork_id, p.page)[:-4])}"><div class="frame">{image}</div>',
             f"<h3>{esc(p.title or '(untitled)')}</h3>",
             f'<p class="muted">{esc(p.artwork_id)} p{p.page}' + (f" · {esc(p.user_name)}" if p.user_name else "") + "</p>"]
    if p.reason:
        lines.append(f'<p class="{p.status}">{esc(p.reason)}</p>')
    if p.classifier:
        c = p.classifier
        score = f"{c['score']:.3f}" if isinstance(c.get("score"), (int, float)) else "?"
        lines.append(f"<p>classifier: {esc(c.get('label'))} · {esc(c.get('target') or 'score')} {score} "
                     f'<span class="muted">({esc(c.get("model"))})</span></p>')
    if p.model_tags:
        lines.append('<p class="tags">' + "".join(
            f'<span class="mtag">{esc(tag)} {score:.2f}</span>' for tag, score in p.model_tags) + "</p>")
    if p.pixiv_tags:
        lines.append(f'<p class="tags">Pixiv: {esc(", ".join(p.pixiv_tags))}</p>')
    if p.faces:
        lines.append('<p class="faces">' + "".join(
            f'<img src="{href(face)}" alt="face">' for face in p.faces) + "</p>")
    lines.append("</div>")
    return "".join(lines)
