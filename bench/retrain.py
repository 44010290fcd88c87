"""Benchmark: one background retrain of the review page, with the feature cache against without it.

``scrapy review`` retrains after every REVIEW_RETRAIN_EVERY labels: it needs features of the labelled
pictures (to learn) and of every catalogued picture (to standardise and to sort them all again).
Without a cache (the naive way, and this project's way before issue 32's second round) each retrain
reads and embeds every picture again, so retrains get no cheaper as the person labels; with the cache
(``LABEL_FEATURES_CACHE``, models.label_learner.FeatureCache) a picture is embedded once and later
retrains only read its file to hash it and its vector back.

The bench crawls the local demo site (``--characters``, pictures of ``--image-size`` px) with faces
off, labels ``--labels`` pictures from the site's truth in the catalogue, and times the retrain's
feature and training work as jobs/review_learning.py does it (``embed_stored`` over every sortable
picture, then ``train_linear`` and the scores), three ways: no cache; the cache's first retrain (cold:
it embeds and stores every picture); a later retrain after ``--labels`` more labels (warm).

    .venv/bin/python bench/retrain.py [--works 120] [--image-size 768] [--labels 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from catalog.store import Catalog  # noqa: E402
from jobs.catalog_labels import embed_stored, sortable_pictures, train_linear  # noqa: E402
from mocksites.runner import LocalSite  # noqa: E402
from models.label_features import FeatureCache, Lite0Features  # noqa: E402
from stages.classify import Classify  # noqa: E402


def crawl(site: LocalSite, output: Path) -> None:
    command = [sys.executable, "-m", "scrapy", "crawl", "pixiv", "-a", "tag=原神", "-s", f"PIXIV_BASE_URL={site.api}",
               "-s", f"OUTPUT_DIR={output}", "-s", "LOG_LEVEL=WARNING", "-s", "FACES_ENABLED=False"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])


def label(catalog: Path, truth: dict[str, str | None], count: int) -> None:
    """``count`` more pictures decided by hand from the truth, in the catalogue's order."""
    store = Catalog(catalog)
    try:
        decided = {(a, p) for a, p in store.conn.execute("SELECT artwork_id, page FROM manual_decisions")}
        open_ones = [p for p in store.curatable_pictures() if p.still and (p.artwork_id, p.page) not in decided]
        with store.batch():
            for n, picture in enumerate(open_ones[:count]):
                decision = "keep" if truth.get(picture.artwork_id) == "mona" else "drop"
                store.set_manual_decision(picture.artwork_id, picture.page, decision, f"2026-12-07T10:{n // 60:02d}:{n % 60:02d}+00:00")
    finally:
        store.close()


def retrain(catalog: Path, root: Path, out: Path, cache: FeatureCache | None, embedded: list[int]) -> tuple[float, int, int]:
    """(seconds, pictures embedded, pictures scored) of one retrain's feature, training and scoring work."""
    embedded.clear()
    started = time.perf_counter()
    pool = embed_stored(root, sortable_pictures(catalog), cache)
    path, _card = train_linear(catalog, root, out, "mona", cache=cache, pool=pool)
    scores = Classify(path).results_from_features(pool.features)
    return time.perf_counter() - started, sum(embedded), len(scores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--works", type=int, default=120, help="works on the demo site (default 120)")
    parser.add_argument("--image-size", type=int, default=768, help="longest side of its pictures (default 768)")
    parser.add_argument("--labels", type=int, default=20, help="labels before each retrain (default 20)")
    args = parser.parse_args()

    embedded: list[int] = []
    real_call = Lite0Features.__call__

    def counting(self: Lite0Features, images: list) -> object:
        embedded.append(len(images))
        return real_call(self, images)

    Lite0Features.__call__ = counting  # type: ignore[method-assign,assignment]
    site_options = ("--size", str(args.works), "--image-size", str(args.image_size), "--characters",
                    "--broken-every", "0")
    with LocalSite("mocksites.pixiv", *site_options) as site, tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "output"
        started = time.perf_counter()
        crawl(site, output)
        truth = {work["id"]: work["character"] for work in site.truth()}
        catalog = output / "catalog.db"
        print(f"crawled {len(sortable_pictures(catalog))} pictures in {time.perf_counter() - started:.0f} s", flush=True)
        label(catalog, truth, args.labels)
        rows = [("no cache (every retrain)", *retrain(catalog, output, Path(tmp) / "m0", None, embedded))]
        cache = FeatureCache(Path(tmp) / "features.sqlite")
        rows.append(("cache, first retrain", *retrain(catalog, output, Path(tmp) / "m1", cache, embedded)))
        label(catalog, truth, args.labels)
        rows.append((f"cache, after {args.labels} more labels", *retrain(catalog, output, Path(tmp) / "m2", cache, embedded)))
        cache.close()
        size = (Path(tmp) / "features.sqlite").stat().st_size
    print()
    print(f"one retrain's features, training and scores; demo site {args.works} works at {args.image_size} px; "
          f"cache file {size / 1e6:.1f} MB")
    header = f"{'way':<32} {'seconds':>8} {'embedded':>9} {'scored':>7}"
    print(header)
    print("-" * len(header))
    for name, seconds, count, scored in rows:
        print(f"{name:<32} {seconds:>8.1f} {count:>9} {scored:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
