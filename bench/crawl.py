"""Benchmark: the Scrapy crawl against a naive serial `requests` loop doing the same work.

Both crawl the bundled Pixiv-style site (throttling off, the site adds --latency-ms to every
response): search page → detail → pages / ugoira_meta → original image → JPEG/WebP file → a
SQLite row. Each side runs in its own process, so CPU time and peak memory (ru_maxrss) are its own.

The naive loop is serial, so its rate per artwork does not depend on how many it does: it runs on
the first --naive-artworks artworks (a full 2,000 at 50 ms would take minutes) and the table
compares rates. Memory flatness: the Scrapy crawl runs at --artworks and at --large-artworks.

Rates are given two ways: over the whole process ("wall": Python and Scrapy start-up included,
about 2 s) and over the crawl itself ("crawl": Scrapy's own elapsed_time_seconds, engine start to
finish). The naive loop starts in a fraction of a second, so for it the two agree. On a shared
virtual machine the same crawl varies by about 10% from run to run, so the Scrapy runs are repeated
(--repeat) and the median by wall time is shown. A "twisted" row runs the same crawl on Scrapy's
default Twisted download handler instead of the aiohttp one the project sets (DOWNLOAD_HANDLERS).

    .venv/bin/python bench/crawl.py [--artworks 2000] [--large-artworks 8000] [--latency-ms 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mocksites.runner import LocalSite  # noqa: E402


def measure(command: list[str]) -> dict:
    """Run a command in a fresh child, returning wall time, CPU seconds and peak RSS of that child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{done.stderr[-3000:]}")
    return {
        "wall": wall,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_mb": after.ru_maxrss / 1024,  # of the largest child so far: see run_isolated
        "stdout": done.stdout,
    }


def run_isolated(argv: list[str]) -> dict:
    """ru_maxrss of RUSAGE_CHILDREN is a maximum over every child ever reaped, so each measured
    run goes through a fresh wrapper process whose only child is that run."""
    wrapper = [sys.executable, __file__, "--measure-child", json.dumps(argv)]
    done = subprocess.run(wrapper, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def scrapy_run(site: LocalSite, output: Path, *settings: str) -> dict:
    command = [
        sys.executable, "-m", "scrapy", "crawl", "pixiv", "-a", "tag=原神",
        "-s", f"PIXIV_BASE_URL={site.api}", "-s", f"OUTPUT_DIR={output}", "-s", "LOG_LEVEL=WARNING",
        "-s", "FACES_ENABLED=False",  # the crawl's own machinery; face detection is bench/faces.py's
        *settings,
    ]
    result = run_isolated(command)
    with sqlite3.connect(output / "catalog.db") as conn:
        result["artworks"] = conn.execute("SELECT count(*) FROM artworks").fetchone()[0]
        result["images"] = conn.execute("SELECT count(*) FROM images WHERE status = 'kept'").fetchone()[0]
        stats = json.loads(conn.execute("SELECT stats FROM crawls ORDER BY id DESC LIMIT 1").fetchone()[0])
    result["crawl"] = float(stats["elapsed_time_seconds"])
    return result


def median_run(site: LocalSite, tmp: Path, name: str, repeat: int, *settings: str) -> dict:
    """The median (by wall time) of `repeat` fresh crawls of the same site into empty folders."""
    runs = []
    for n in range(repeat):
        site.reset_stats()
        runs.append(scrapy_run(site, tmp / f"{name}-{n}", *settings))
    runs.sort(key=lambda r: r["wall"])
    return runs[len(runs) // 2]


def naive_run(site: LocalSite, artworks: int, output: Path) -> dict:
    command = [sys.executable, __file__, "--naive-worker", site.api, str(artworks), str(output)]
    result = run_isolated(command)
    counts = json.loads(result.pop("stdout").strip().splitlines()[-1])
    return {**result, **counts, "crawl": counts["seconds"]}


def naive_worker(api: str, limit: int, output: Path) -> None:
    """What a first script does: one requests.Session, one thing at a time."""
    import requests

    from core.storage import atomic_write
    from stages.convert import BadImage, to_jpeg
    from stages.ugoira import ugoira_to_webp

    session = requests.Session()
    session.headers["User-Agent"] = "Mozilla/5.0 (naive benchmark loop)"
    referer = {"Referer": "https://www.pixiv.net/"}
    started = time.perf_counter()
    db = sqlite3.connect(output / "naive.db")
    db.execute("CREATE TABLE IF NOT EXISTS images (artwork_id TEXT, page INT, path TEXT, status TEXT)")
    done = images = 0
    page = 1
    while done < limit:
        search = session.get(f"{api}/ajax/search/artworks/原神", params={"word": "原神", "p": page, "order": "date_d"}).json()
        works = [w for w in search["body"]["illustManga"]["data"] if not w.get("isAdContainer")]
        if not works:
            break
        for work in works:
            if done >= limit:
                break
            done += 1
            detail = session.get(f"{api}/ajax/illust/{work['id']}")
            if detail.status_code != 200:
                continue
            body = detail.json()["body"]
            if not body["urls"]["original"]:
                continue
            frames = None
            if body["illustType"] == 2:
                meta = session.get(f"{api}/ajax/illust/{work['id']}/ugoira_meta").json()["body"]
                urls, frames = [meta["originalSrc"]], meta["frames"]
            elif body["pageCount"] > 1:
                urls = [p["urls"]["original"] for p in session.get(f"{api}/ajax/illust/{work['id']}/pages").json()["body"]]
            else:
                urls = [body["urls"]["original"]]
            for n, url in enumerate(urls):
                data = session.get(url, headers=referer).content
                try:
                    if frames is not None:
                        out, name = ugoira_to_webp(data, frames).data, f"{work['id']}_ugoira.webp"
                    else:
                        out, name = to_jpeg(data).data, f"{work['id']}_p{n}.jpg"
                except BadImage:
                    db.execute("INSERT INTO images VALUES (?, ?, NULL, 'failed')", (work["id"], n))
                    continue
                atomic_write(output / "images" / name, out)
                db.execute("INSERT INTO images VALUES (?, ?, ?, 'kept')", (work["id"], n, name))
                images += 1
            db.commit()
        page += 1
    print(json.dumps({"artworks": done, "images": images, "seconds": time.perf_counter() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artworks", type=int, default=2000)
    parser.add_argument("--large-artworks", type=int, default=8000, help="0 skips the memory-growth run")
    parser.add_argument("--naive-artworks", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="Scrapy runs per row; the median is shown")
    parser.add_argument("--no-twisted", action="store_true", help="skip the Twisted-handler comparison row")
    args = parser.parse_args()

    rows = []  # (latency, site size, way, result, naive result to compare with)
    for latency in (args.latency_ms, 0.0):
        sizes = [args.artworks] + ([args.large_artworks] if args.large_artworks and latency == args.latency_ms else [])
        for size in sizes:
            site_opts = ["--size", str(size), "--latency-ms", str(latency), "--image-size", str(args.image_size)]
            with LocalSite("mocksites.pixiv", *site_opts) as site, tempfile.TemporaryDirectory() as tmp:
                tmp_path = Path(tmp)
                main_size = size == args.artworks
                repeat = args.repeat if main_size else 1
                ours = median_run(site, tmp_path, "scrapy", repeat)
                naive = None
                if main_size:
                    (tmp_path / "naive" / "images").mkdir(parents=True)
                    naive = naive_run(site, args.naive_artworks, tmp_path / "naive")
                rows.append((latency, size, "scrapy", ours, naive))
                if main_size and latency == args.latency_ms and not args.no_twisted:
                    twisted = median_run(site, tmp_path, "twisted", repeat, "-s", "DOWNLOAD_HANDLERS={}")
                    rows.append((latency, size, "twisted", twisted, naive))
                if naive:
                    rows.append((latency, size, "naive", naive, None))

    print(f"\nPixiv-style crawl benchmark (image size {args.image_size} px, {os.cpu_count()} cores; "
          f"naive loop on the first {args.naive_artworks} artworks; Scrapy rows: median of {args.repeat} runs)\n")
    header = (f"{'latency':>8} {'site':>6} {'way':<8} {'artworks':>8} {'images':>7} {'wall s':>7} {'crawl s':>7} "
              f"{'artw/s':>7} {'img/s':>7} {'CPU ms/artw':>11} {'peak MB':>8} {'x wall':>7} {'x crawl':>7}")
    print(header)
    print("-" * len(header))
    for latency, size, way, r, naive in rows:
        wall_ratio = crawl_ratio = ""
        if naive:
            wall_ratio = f"{(r['artworks'] / r['wall']) / (naive['artworks'] / naive['wall']):6.1f}x"
            crawl_ratio = f"{(r['artworks'] / r['crawl']) / (naive['artworks'] / naive['crawl']):6.1f}x"
        print(f"{latency:>6.0f}ms {size:>6} {way:<8} {r['artworks']:>8} {r['images']:>7} {r['wall']:>7.1f} {r['crawl']:>7.1f} "
              f"{r['artworks'] / r['crawl']:>7.1f} {r['images'] / r['crawl']:>7.1f} "
              f"{1000 * r['cpu'] / r['artworks']:>11.1f} {r['peak_rss_mb']:>8.0f} {wall_ratio:>7} {crawl_ratio:>7}")
    print("\nartw/s and img/s are over the crawl time; 'x wall' compares whole-process rates "
          "(start-up included), 'x crawl' compares crawl rates.")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--measure-child":
        print(json.dumps(measure(json.loads(sys.argv[2]))))
    elif len(sys.argv) > 4 and sys.argv[1] == "--naive-worker":
        naive_worker(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
