"""Deploy the project to a Scrapyd: build its egg and upload it (``addversion.json``).

    python -m ops.deploy [--url http://localhost:6800/] [--project crawler] [--version V]
    python -m ops.deploy --build-egg dist/crawler.egg     # build only

Then schedule crawls through Scrapyd's JSON API, e.g.
``curl http://localhost:6800/schedule.json -d project=crawler -d spider=pixiv -d tag=原神
-d setting=OUTPUT_DIR=/data/pixiv``.

Why not ``scrapyd-deploy`` (scrapyd-client): it writes a ``setup.py`` into the checkout when there is
none and runs ``setup.py clean -a``; this project is described by ``pyproject.toml`` alone. The
egg is built the same way, by setuptools' ``bdist_egg``, from that file: its packages and the
``scrapy`` entry point that tells Scrapyd the settings module (the one ``scrapy.cfg`` names),
with every build file in a temporary folder. Scrapyd runs the egg with the Python it runs under,
so that environment needs the project's dependencies (``pip install -e '.[ops]'``).
"""

from __future__ import annotations

import argparse
import base64
import configparser
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def deploy_target() -> dict[str, str]:
    """scrapy.cfg's [deploy] section (url, project) and the settings module of [settings]."""
    config = configparser.ConfigParser()
    config.read(REPO / "scrapy.cfg", encoding="utf-8")
    return {
        "url": config.get("deploy", "url", fallback="http://localhost:6800/"),
        "project": config.get("deploy", "project", fallback="crawler"),
        "settings": config.get("settings", "default", fallback="crawler.settings"),
    }


def build_egg(destination: Path) -> Path:
    """Build the egg into ``destination`` (a file path); build folders stay out of the checkout."""
    with tempfile.TemporaryDirectory(prefix="egg-") as work:
        command = [
            sys.executable, "-c", "from setuptools import setup; setup()", "--quiet",
            "egg_info", "--egg-base", work,
            "build", "--build-base", f"{work}/build",
            "bdist_egg", "--bdist-dir", f"{work}/bdist", "--dist-dir", f"{work}/dist",
        ]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        eggs = list(Path(work, "dist").glob("*.egg"))
        if done.returncode != 0 or len(eggs) != 1:
            raise RuntimeError(f"building the egg failed ({done.returncode}):\n{done.stderr[-4000:]}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(eggs[0]), destination)
    return destination


Fields = dict[str, str] | list[tuple[str, str]]  # a list where a name repeats (setting=A=1, setting=B=2)


def _multipart(fields: Fields, files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts = []
    for name, value in fields.items() if isinstance(fields, dict) else fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def scrapyd_call(url: str, endpoint: str, fields: Fields | None = None,
                 files: dict[str, tuple[str, bytes]] | None = None, timeout: float = 120) -> dict[str, Any]:
    """One Scrapyd JSON API call (POST when there are fields); user:password in the URL is sent as Basic auth."""
    parsed = urllib.parse.urlsplit(url)
    base = parsed._replace(netloc=(parsed.hostname or "") + (f":{parsed.port}" if parsed.port else "")).geturl()
    target = urllib.parse.urljoin(base.rstrip("/") + "/", endpoint)
    data, content_type = (None, None)
    if files:
        data, content_type = _multipart(fields or {}, files)
    elif fields is not None:
        data, content_type = urllib.parse.urlencode(fields).encode(), "application/x-www-form-urlencoded"
    request = urllib.request.Request(target, data=data)
    if content_type:
        request.add_header("Content-Type", content_type)
    if parsed.username:
        token = base64.b64encode(f"{parsed.username}:{parsed.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        return {"status": "error", "message": f"HTTP {exc.code}: {exc.read()[:500]!r}"}


def deploy(url: str, project: str, version: str, egg: Path) -> dict[str, Any]:
    return scrapyd_call(
        url, "addversion.json", {"project": project, "version": version}, {"egg": (f"{project}.egg", egg.read_bytes())}
    )


def main(argv: list[str] | None = None) -> int:
    target = deploy_target()
    parser = argparse.ArgumentParser(prog="python -m ops.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=target["url"], help="Scrapyd's address (default: scrapy.cfg [deploy] url, %(default)s)")
    parser.add_argument("--project", default=target["project"], help="Scrapyd project name (default: %(default)s)")
    parser.add_argument("--version", default=None, help="egg version (default: the time, so the newest upload runs)")
    parser.add_argument("--build-egg", type=Path, metavar="FILE", help="only build the egg, into FILE")
    args = parser.parse_args(argv)
    try:
        if args.build_egg:
            print(f"egg: {build_egg(args.build_egg)}")
            return 0
        with tempfile.TemporaryDirectory() as work:
            egg = build_egg(Path(work) / f"{args.project}.egg")
            version = args.version or str(int(time.time()))
            answer = deploy(args.url, args.project, version, egg)
    except (RuntimeError, OSError) as exc:
        print(f"ops.deploy: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    if answer.get("status") != "ok":
        return 1
    print(f"deployed {args.project} version {version} to {args.url}: spiders {answer.get('spiders')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
