"""Stage 1: download each page's original through Scrapy's FilesPipeline, atomically, by id.

FilesPipeline rather than ImagesPipeline: the latter re-encodes every JPEG and drops alpha without
compositing it. What this subclass adds:

* the ``Referer: https://www.pixiv.net/`` header that i.pximg.net demands (media requests skip the
  spider middlewares, so nothing else would add it);
* names from ids (``originals/{id}_p{n}.{ext}``), never from titles or URL paths;
* temp-file-and-rename writes (``AtomicFilesStore``), so a kill never leaves half a file;
* no disk round trip for an original that is not kept (``KEEP_ORIGINALS`` off, the default, and
  not an ugoira zip): its bytes go straight to the JPEG stage in ``record["original_bytes"]``,
  which that stage removes, instead of being written, read back and deleted;
* a refusal to store what is plainly not an image (empty body, an HTML page, an error status),
  with a reason that ends up in the catalogue;
* one outcome record per page in ``item.images``, which the later stages complete.
"""

from __future__ import annotations

import hashlib
import logging
from io import BytesIO
from os import PathLike
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.exceptions import IgnoreRequest
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline, FSFilesStore
from scrapy.pipelines.media import FileException, _MediaRequestFiltered
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from core.items import ArtworkItem
from core.storage import ORIGINALS_DIR, atomic_write, files_root, remove_partial_files
from sites.pixiv_api import original_file_name

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF", b"PK\x03\x04",
)


def refuse_non_image(body: bytes, content_type: str) -> str | None:
    """Why these bytes cannot be an image or ugoira zip, or None if they might be one."""
    if not body:
        return "empty body (0 bytes) where an image was expected"
    head = body[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or "html" in content_type:
        return f"an HTML page ({content_type or 'no Content-Type'}) where an image was expected"
    if not body.startswith(_IMAGE_MAGIC):
        return f"unknown file signature {body[:8]!r} ({content_type or 'no Content-Type'})"
    return None


class RefusedFile(_MediaRequestFiltered):
    """A page that could not be stored, for a reason we log ourselves as a warning.

    Scrapy's media pipeline logs every other failure at ERROR with a traceback; a 404 or an HTML
    page at an image URL is an expected outcome of crawling, recorded in the catalogue, not a bug.
    Subclassing its "filtered" exception is the one way to keep it quiet.
    """


class AtomicFilesStore(FSFilesStore):
    """Writes in Twisted's thread pool (as Scrapy's S3 and GCS stores do): creating a file can
    block for a millisecond while the conversion workers write beside it, and the reactor has
    every other download to serve meanwhile. FilesPipeline awaits the result."""

    def persist_file(  # type: ignore[override]  # the files store protocol allows a Deferred, as S3's returns
        self, path: str | PathLike[str], buf: BytesIO, info: Any, meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Deferred[None]:
        return deferToThread(atomic_write, self._get_filesystem_path(path), buf.getvalue())


class OriginalsPipeline(FilesPipeline):
    STORE_SCHEMES = {**FilesPipeline.STORE_SCHEMES, "": AtomicFilesStore, "file": AtomicFilesStore}
    referer: str = ""  # PIXIV_REFERER
    keep_originals: bool = False  # KEEP_ORIGINALS

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> OriginalsPipeline:
        settings = crawler.settings
        store = str(files_root(settings))
        cls._update_stores(settings)
        pipe = cls(store, crawler=crawler)
        pipe.referer = settings.get("PIXIV_REFERER")
        pipe.keep_originals = settings.getbool("KEEP_ORIGINALS")
        removed = remove_partial_files(store)
        if removed:
            logger.info("Removed %d partial files left by an interrupted crawl", removed)
        return pipe

    def media_to_download(self, request: Request, info: Any, *, item: Any = None) -> None:
        """Always download. The catalogue, not file age, decides what is fetched: the spider asks
        only for artworks that are new or re-uploaded, and a re-upload keeps its file name, so
        FilesPipeline's "already on disk and younger than FILES_EXPIRES" shortcut would reuse the
        old picture."""
        return None

    def get_media_requests(self, item: Any, info: Any) -> list[Request]:
        if not isinstance(item, ArtworkItem):
            return []
        ugoira = item.ugoira_frames is not None
        return [
            Request(
                url,
                headers={"Referer": self.referer},
                meta={"artwork_id": item.artwork["id"], "page": page, "ugoira": ugoira},
                callback=NO_CALLBACK,
            )
            for page, url in enumerate(item.file_urls)
        ]

    def file_path(self, request: Request, response: Response | None = None, info: Any = None, *, item: Any = None) -> str:
        name = original_file_name(
            request.meta["artwork_id"], request.meta["page"], request.url, request.meta.get("ugoira", False)
        )
        return f"{ORIGINALS_DIR}/{name}"

    async def media_downloaded(self, response: Response, request: Request, info: Any, *, item: Any = None) -> Any:
        reason: str | None
        if response.status != 200:
            hint = " (missing or wrong Referer?)" if response.status == 403 else ""
            reason = f"HTTP {response.status} from the image host{hint}"
        else:
            content_type = (response.headers.get(b"Content-Type") or b"").decode("latin-1").lower()
            reason = refuse_non_image(response.body, content_type)
        if reason:
            logger.warning("Image (refused): %s: %s", request.url, reason)
            self.inc_stats("refused")
            raise RefusedFile(reason)
        if self.keep_originals or request.meta.get("ugoira"):
            return await super().media_downloaded(response, request, info, item=item)
        self.inc_stats("downloaded")
        return {
            "url": request.url,
            "path": self.file_path(request, response=response, info=info, item=item),
            "checksum": hashlib.md5(response.body, usedforsecurity=False).hexdigest(),  # as FilesPipeline's
            "status": "downloaded",
            "body": response.body,
        }

    def media_failed(self, failure: Failure, request: Request, info: Any) -> Any:
        if isinstance(failure.value, RefusedFile):
            raise failure.value
        if isinstance(failure.value, IgnoreRequest):
            return super().media_failed(failure, request, info)
        if isinstance(failure.value, FileException):  # FilesPipeline's own, already logged
            raise RefusedFile(str(failure.value) or "could not store the file") from None
        reason = f"download failed: {failure.value.__class__.__name__}: {failure.value}"
        logger.warning("Image (failed): %s: %s", request.url, reason)
        raise RefusedFile(reason) from None

    def item_completed(self, results: list[Any], item: Any, info: Any) -> Any:
        if not isinstance(item, ArtworkItem):
            return item
        item.files = [{k: v for k, v in value.items() if k != "body"} for ok, value in results if ok]
        item.images = []
        for page, (url, (ok, value)) in enumerate(zip(item.file_urls, results, strict=True)):
            record: dict[str, Any] = {"page": page, "url": url}
            if ok:
                record["original_path"] = value["path"]
                if "body" in value:
                    # Popped, not copied: MediaPipeline caches this very dict for the whole crawl
                    # (SpiderInfo.downloaded), so a body left in it is never freed (~6 KB an artwork).
                    record["original_bytes"] = value.pop("body")
            else:
                reason = str(value.value) or value.value.__class__.__name__
                transient = reason.startswith("download failed") or reason.startswith("HTTP 5") or reason.startswith("HTTP 429")
                record.update(status="failed", reason=reason, transient=transient)
            item.images.append(record)
        return item
