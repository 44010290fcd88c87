"""A local Hugging Face Hub (and GitHub release host) for `scrapy models` and its tests.

Why: huggingface_hub is the download path of every pretrained model, so the tests must run it
unchanged, against a server that answers as the Hub does, with ``HF_ENDPOINT`` pointed here. What
huggingface_hub 2.x reads (``file_download.get_hf_file_metadata``, ``http_get``):

* ``HEAD``/``GET /{owner}/{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit`` (the 40-hex commit the
  revision resolves to), an ``ETag``. A small text file is answered in place (``ETag`` its git blob
  sha1, ``Content-Length``). A weights file (``.onnx``, ``.h5``, ``.zip``...: Git LFS on the real Hub)
  gets a ``302`` to the CDN host with ``X-Linked-Etag`` (its sha256) and ``X-Linked-Size``.
  A missing repo answers 401 ``X-Error-Code: RepoNotFound``; a missing revision 404
  ``RevisionNotFound``; a missing file 404 ``EntryNotFound`` (with the commit).
* The CDN host: ``GET /lfs/{sha256}`` with ``Range: bytes=N-`` answered ``206`` and ``Content-Range``.
* GitHub: ``GET /{owner}/{repo}/releases/download/{tag}/{asset}`` → ``302`` to the CDN
  (``/release/{owner}/{repo}/{tag}/{asset}``, ranges too), as github.com sends assets to its object host.

Content comes from ``--repos DIR``: ``DIR/hub/{owner}/{repo}/...`` and
``DIR/github/{owner}/{repo}/{tag}/{asset}``. A repo's commit is a hash of its files when the server
starts (``main`` and that commit resolve; nothing else).

Control endpoints on the Hub port: ``POST /_mock/tamper?repo=owner/name&path=P`` changes the file's
bytes under the same commit (a compromised mirror); ``POST /_mock/interrupt?count=N`` cuts the next N
file bodies on the CDN halfway; ``GET /_mock/stats`` lists the requests (method, path, range);
``POST /_mock/reset-stats``.

Run ``python -m mocksites.hub --port 0 --image-port 0 --repos DIR``; it prints one JSON line
``{"api": Hub root, "images": CDN root}`` (the keys ``mocksites.runner.LocalSite`` reads).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

LFS_SUFFIXES = (".onnx", ".h5", ".keras", ".zip", ".safetensors", ".pt", ".pth", ".bin", ".msgpack")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str


@dataclass
class HubState:
    repos: dict[str, Repo]
    releases: Path
    blobs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes (the CDN)
    interrupt: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)


def load_repos(root: Path) -> dict[str, Repo]:
    repos: dict[str, Repo] = {}
    hub = root / "hub"
    for folder in sorted(p for p in hub.glob("*/*") if p.is_dir()) if hub.is_dir() else []:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        listing = "\n".join(f"{name} {hashlib.sha256(data).hexdigest()}" for name, data in files.items())
        repos[f"{folder.parent.name}/{folder.name}"] = Repo(files, hashlib.sha1(listing.encode()).hexdigest())
    return repos


def ranged(request: web.Request, data: bytes, state: HubState, headers: dict[str, str]) -> web.StreamResponse:
    """``data`` whole (200) or from a ``Range: bytes=N-`` (206); the next ``interrupt`` bodies are cut."""
    wanted = _RANGE.match(request.headers.get("Range", ""))
    start = int(wanted.group(1)) if wanted else 0
    if start >= len(data) > 0:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
    body = data[start:]
    status = 206 if wanted else 200
    if wanted:
        headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
    return _Body(status, headers, body, cut=state.interrupt > 0 and request.method == "GET", state=state)


class _Body(web.StreamResponse):
    def __init__(self, status: int, headers: dict[str, str], body: bytes, cut: bool, state: HubState):
        super().__init__(status=status, headers={**headers, "Accept-Ranges": "bytes"})
        self.content_length = len(body)
        self.body_bytes, self.cut, self.state = body, cut, state

    async def prepare(self, request: web.BaseRequest) -> Any:
        writer = await super().prepare(request)
        if request.method == "HEAD":
            return writer
        if self.cut:
            self.state.interrupt -= 1
            await self.write(self.body_bytes[: max(1, len(self.body_bytes) // 2)])
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-body (what was written is flushed first)
            return writer
        await self.write(self.body_bytes)
        await self.write_eof()
        return writer


def request_recorder(state: HubState) -> Any:
    """Middleware that logs each request (not the test-control ones) so tests can count downloads."""
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_mock/"):
            state.requests.append({"method": request.method, "path": request.path,
                                   "range": request.headers.get("Range"), "host": request.host})
        result: web.StreamResponse = await handler(request)
        return result
    return record


def make_app(state: HubState, cdn_root: list[str]) -> web.Application:
    async def resolve(request: web.Request) -> web.StreamResponse:
        repo_id = f"{request.match_info['owner']}/{request.match_info['repo']}"
        repo = state.repos.get(repo_id)
        if repo is None:
            return web.Response(status=401, text="Repository not found", headers={"X-Error-Code": "RepoNotFound"})
        revision = request.match_info["revision"]
        if revision not in ("main", repo.commit):
            return web.Response(status=404, text="Revision not found", headers={"X-Error-Code": "RevisionNotFound"})
        path = request.match_info["path"]
        common = {"X-Repo-Commit": repo.commit}
        if path not in repo.files:
            return web.Response(status=404, text="Entry not found", headers={**common, "X-Error-Code": "EntryNotFound"})
        data = repo.files[path]
        if path.endswith(LFS_SUFFIXES):
            digest = hashlib.sha256(data).hexdigest()
            state.blobs[digest] = data
            return web.Response(status=302, headers={
                **common, "Location": f"{cdn_root[0]}/lfs/{digest}", "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_sha1(data)}"'})
        return ranged(request, data, state, {**common, "ETag": f'"{git_blob_sha1(data)}"',
                                             "Content-Type": "text/plain; charset=utf-8"})

    async def release(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        asset = state.releases / info["owner"] / info["repo"] / info["tag"] / info["asset"]
        if not asset.is_file():
            return web.Response(status=404, text="Not Found")
        location = f"{cdn_root[0]}/release/{info['owner']}/{info['repo']}/{info['tag']}/{info['asset']}"
        return web.Response(status=302, headers={"Location": location})

    async def tamper(request: web.Request) -> web.Response:
        repo = state.repos[request.query["repo"]]
        path = request.query["path"]
        repo.files[path] = repo.files[path] + b"\0tampered"
        return web.json_response({"path": path, "size": len(repo.files[path])})

    async def interrupt(request: web.Request) -> web.Response:
        state.interrupt = int(request.query.get("count", "1"))
        return web.json_response({"interrupt": state.interrupt})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": state.requests,
                                  "repos": {name: repo.commit for name, repo in state.repos.items()}})

    async def reset(request: web.Request) -> web.Response:
        state.requests.clear()
        state.interrupt = 0
        return web.json_response({})

    app = web.Application(middlewares=[request_recorder(state)])
    app.router.add_route("*", "/{owner}/{repo}/resolve/{revision}/{path:.+}", resolve)
    app.router.add_get("/{owner}/{repo}/releases/download/{tag}/{asset}", release)
    app.router.add_post("/_mock/tamper", tamper)
    app.router.add_post("/_mock/interrupt", interrupt)
    app.router.add_get("/_mock/stats", stats)
    app.router.add_post("/_mock/reset-stats", reset)
    return app


def make_cdn(state: HubState) -> web.Application:
    async def lfs(request: web.Request) -> web.StreamResponse:
        data = state.blobs.get(request.match_info["digest"])
        if data is None:
            return web.Response(status=404, text="NoSuchKey")
        return ranged(request, data, state, {"ETag": f'"{request.match_info["digest"]}"',
                                             "Content-Type": "application/octet-stream"})

    async def asset(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        path = state.releases / info["owner"] / info["repo"] / info["tag"] / info["asset"]
        if not path.is_file():
            return web.Response(status=404, text="NoSuchKey")
        return ranged(request, path.read_bytes(), state, {"Content-Type": "application/octet-stream"})

    app = web.Application(middlewares=[request_recorder(state)])
    app.router.add_route("*", "/lfs/{digest}", lfs)
    app.router.add_route("*", "/release/{owner}/{repo}/{tag}/{asset}", asset)
    return app


async def serve(args: argparse.Namespace) -> None:
    root = Path(args.repos)
    state = HubState(load_repos(root), root / "github")
    cdn_root: list[str] = [""]
    hub_runner = web.AppRunner(make_app(state, cdn_root), access_log=None)
    cdn_runner = web.AppRunner(make_cdn(state), access_log=None)
    await hub_runner.setup()
    await cdn_runner.setup()
    hub_site = web.TCPSite(hub_runner, args.host, args.port)
    cdn_site = web.TCPSite(cdn_runner, args.host, args.image_port)
    await hub_site.start()
    await cdn_site.start()
    hub_port = hub_runner.addresses[0][1]
    cdn_port = cdn_runner.addresses[0][1]
    cdn_root[0] = f"http://{args.host}:{cdn_port}"
    print(json.dumps({"api": f"http://{args.host}:{hub_port}", "images": cdn_root[0]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await hub_runner.cleanup()
    await cdn_runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--image-port", type=int, default=0, help="the CDN host's port")
    parser.add_argument("--repos", required=True, help="DIR with hub/OWNER/REPO/... and github/OWNER/REPO/TAG/ASSET")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
