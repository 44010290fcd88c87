"""The main job on its embedded defaults: start the bundled Pixiv-style site on loopback, crawl a
tag from it into ``output/`` with the real spider and settings, and print a short summary.

    python -m crawler.demo [--tag 原神] [--size 240] [--output output]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from crawler.catalog import Catalog
from mocksites.runner import REPO, LocalSite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="原神", help="tag to search (default: %(default)s)")
    parser.add_argument("--size", type=int, default=240, help="artworks on the demo site (default: %(default)s)")
    parser.add_argument("--output", default="output", help="OUTPUT_DIR (default: %(default)s)")
    args = parser.parse_args(argv)

    output = Path(args.output).resolve()
    site_options = ["--size", str(args.size), "--broken-every", "40", "--ads", "--image-size", "480"]
    with LocalSite("mocksites.pixiv", *site_options) as site:
        print(f"Demo Pixiv-style site: API {site.api}, images {site.images}")
        command = [
            sys.executable, "-m", "scrapy", "crawl", "pixiv", "-a", f"tag={args.tag}",
            "-s", f"PIXIV_BASE_URL={site.api}", "-s", f"OUTPUT_DIR={output}",
            "-s", "LOG_FILE=" + str(output / "last-crawl.log"),
        ]
        print("Running:", " ".join(command[2:]))
        output.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "PIXIV_PHPSESSID"}
        code = subprocess.call(command, cwd=REPO, env=env)
        elapsed = time.monotonic() - started

    catalog = Catalog(output / "catalog.db")
    summary = catalog.summary()
    crawl = catalog.conn.execute(
        "SELECT id, status, artworks_seen, artworks_fetched FROM crawls ORDER BY id DESC LIMIT 1"
    ).fetchone()
    reasons = catalog.conn.execute(
        "SELECT reason, count(*) FROM images WHERE status = 'failed' GROUP BY reason ORDER BY 2 DESC"
    ).fetchall()
    statuses = catalog.conn.execute("SELECT status, count(*) FROM artworks GROUP BY status").fetchall()
    catalog.close()
    print()
    print(f"Crawl {crawl[0]} {crawl[1]} in {elapsed:.1f} s (exit code {code})")
    print(f"  artworks in search : {crawl[2]} seen, {crawl[3]} fetched this run")
    print(f"  artworks catalogued: {summary['artworks']} ({', '.join(f'{s} {n}' for s, n in statuses)})")
    print(f"  images stored      : {summary['images_kept']} in {output / 'images'}")
    print(f"  images failed      : {summary['images_failed']}")
    for reason, n in reasons:
        print(f"      {n} x {reason}")
    print(f"  catalogue          : {summary['catalog']}")
    print(f"  log                : {output / 'last-crawl.log'}")
    print("Run it again: it fetches nothing new and stops after the first page.")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
