"""The main job on its embedded defaults: train a tiny "Mona or not" classifier on pictures the
bundled Pixiv-style site labels itself, start that site on loopback, crawl a tag from it into
``output/`` with the real spider, settings and curation rules (faces found on the way), export the
kept heads for a kohya LoRA with the real ``scrapy export``, and print what was kept, what was dropped
and why, how well that matches the site's truth, and where each output is.

    python -m crawler.demo [--tag 原神] [--size 240] [--output output] [--keep-r18]

The classifier is trained only when ``OUTPUT/demo-training/model/classifier.keras`` is missing
(delete the folder to retrain), so a second run trains nothing and fetches nothing new.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from catalog.store import Catalog
from mocksites import images
from mocksites.pixiv import TARGET_TAG, SiteConfig
from mocksites.runner import REPO, LocalSite

TARGET = images.TARGET_CHARACTER
ALIASES = ["mona_(genshin_impact)", TARGET_TAG, "莫娜"]  # Danbooru, Pixiv (Japanese), Chinese
KEEP_SCORE = 0.8
TRIGGER_WORD = "mona"  # the kohya export's trigger word
# The demo's export: what docs/lora-recipe.md ends with, head crops for a kohya LoRA.
EXPORT_OPTIONS = ("--format", "kohya", "--crop", "head", "--size", "512", "--fit", "pad")
# Small enough to train in well under a minute on 2 CPU cores, large enough for ~95% accuracy.
TRAIN_PER_CLASS = 200
TRAIN_PICTURE_SIZE = 128  # px, longest side of the labelled pictures
TRAIN_IMAGE_SIZE = 48  # px, the classifier's input
TRAIN_EPOCHS = 12  # early stopping (patience 5) may end it sooner
EXAMPLES_PER_RULE = 1
RULE_NAME = re.compile(r"\((rule \d+|CURATE_DEFAULT)\)$")
# What TensorFlow writes to stderr on every start, before its log level applies; nothing to act on.
TF_START_UP = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} [\d:.]+ +\d+ "
    r"(cudart_stub|cuda_platform|cuda_executor|cpu_feature_guard|port)\.cc)"
)

R18_RULE = """\
- action: drop          # R-18 works (run the demo with --keep-r18 to judge them like the rest)
  if: r18
"""
RULES = f"""\
- action: keep          # the classifier is sure enough that it is her
  if: classifier
  min: {KEEP_SCORE}
- action: keep          # the artist tagged her (any of these, any case)
  if: tag
  any: [{", ".join(ALIASES)}]
- action: drop          # the classifier says it is not her
  if: classifier
  max: {KEEP_SCORE}
"""


def site_options(size: int) -> list[str]:
    """The demo site: some broken originals, ads in the results, and characters to curate."""
    return ["--size", str(size), "--broken-every", "40", "--ads", "--image-size", "480", "--characters"]


def ensure_classifier(training_dir: Path) -> dict[str, Any]:
    """The classifier's card; trains it first when there is no model (the only slow step).

    Trained by the real command line, as a user would, in a process of its own.
    """
    labelled, model_dir = training_dir / "labelled", training_dir / "model"
    model, card = model_dir / "classifier.keras", model_dir / "classifier.json"
    if model.is_file() and card.is_file():
        print(f"Classifier: reusing {model} (delete {training_dir} to retrain)")
        reused: dict[str, Any] = json.loads(card.read_text(encoding="utf-8"))
        return reused
    counts = images.write_labelled(labelled, TRAIN_PER_CLASS, image_size=TRAIN_PICTURE_SIZE)
    print(f"Classifier: {', '.join(f'{n} {name}' for name, n in counts.items())} pictures the site "
          f"labelled itself, in {labelled}")
    command = [
        sys.executable, "-m", "scrapy", "classifier", "train", str(labelled), str(model_dir),
        "--image-size", str(TRAIN_IMAGE_SIZE), "--epochs", str(TRAIN_EPOCHS),
    ]
    print("Running: scrapy", " ".join(command[3:]), flush=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=quiet_env(), capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-3000:] + done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"training the classifier failed (exit code {done.returncode})")
    print(f"Classifier: trained in {time.monotonic() - started:.1f} s")
    trained: dict[str, Any] = json.loads(card.read_text(encoding="utf-8"))
    return trained


def quiet_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no real Pixiv cookie, less TensorFlow start-up chatter."""
    env = {k: v for k, v in os.environ.items() if k != "PIXIV_PHPSESSID"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def run_filtered(command: list[str], env: dict[str, str]) -> int:
    """Run ``command``, passing its stderr on except the lines TensorFlow prints on every start."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if not TF_START_UP.match(line):
            sys.stderr.write(line)
    return process.wait()


def write_rules(path: Path, keep_r18: bool) -> None:
    """The demo's rules as a YAML file, the way a user would write them (CURATE_RULES_FILE)."""
    header = (
        "# Written by crawler/demo.py (`make demo`). First match decides; a picture no rule\n"
        "# matches gets CURATE_DEFAULT (drop, in the demo).\n"
    )
    path.write_text(header + ("" if keep_r18 else R18_RULE) + RULES, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="原神", help="tag to search (default: %(default)s)")
    parser.add_argument("--size", type=int, default=240, help="artworks on the demo site (default: %(default)s)")
    parser.add_argument("--output", default="output", help="OUTPUT_DIR (default: %(default)s)")
    parser.add_argument("--keep-r18", action="store_true", help="judge R-18 works like the rest, do not drop them")
    args = parser.parse_args(argv)

    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    card = ensure_classifier(output / "demo-training")
    model = output / "demo-training" / "model" / "classifier.keras"
    rules = output / "demo-rules.yaml"
    write_rules(rules, args.keep_r18)

    with LocalSite("mocksites.pixiv", *site_options(args.size)) as site:
        print(f"Demo Pixiv-style site: API {site.api}, images {site.images}")
        command = [
            sys.executable, "-m", "scrapy", "crawl", "pixiv", "-a", f"tag={args.tag}",
            "-s", f"PIXIV_BASE_URL={site.api}", "-s", f"OUTPUT_DIR={output}",
            "-s", "LOG_FILE=" + str(output / "last-crawl.log"),
            "-s", f"CLASSIFIER_MODEL={model}", "-s", f"CURATE_RULES_FILE={rules}", "-s", "CURATE_DEFAULT=drop",
        ]
        print("Running:", " ".join(command[2:]))
        started = time.monotonic()
        # The local site's own logged-in session (never a real cookie), so R-18 works are seen.
        code = run_filtered(command, quiet_env(PIXIV_PHPSESSID=SiteConfig.session))
        elapsed = time.monotonic() - started
        truth = {work["id"]: work["character"] for work in site.truth()}

    exported = run_export(output)
    catalog = Catalog(output / "catalog.db")
    summary = catalog.summary()
    faces = catalog.face_counts()
    crawl = catalog.last_crawl()
    reasons = catalog.failure_counts()
    statuses = catalog.artwork_status_counts()
    decided = catalog.decided_pictures()
    catalog.close()
    if crawl is None:
        raise SystemExit(f"the crawl recorded nothing (exit code {code}); see {output / 'last-crawl.log'}")
    print()
    print(f"Classifier {card['target']} vs {', '.join(c for c in card['classes'] if c != card['target'])}: "
          f"validation accuracy {card['metrics']['val_accuracy']:.3f} "
          f"({card['data']['val']} held-out pictures, {card['image_size']} px)")
    print(f"Crawl {crawl[0]} {crawl[1]} in {elapsed:.1f} s (exit code {code})")
    print(f"  artworks in search : {crawl[2]} seen, {crawl[3]} fetched this run")
    print(f"  artworks catalogued: {summary['artworks']} ({', '.join(f'{s} {n}' for s, n in statuses)})")
    print(f"  images kept        : {summary['images_kept']} in {output / 'images'}")
    print(f"  images dropped     : {summary['images_dropped']} in {output / 'dropped'}")
    print(f"  images failed      : {summary['images_failed']}")
    for reason, n in reasons:
        print(f"      {n} x {reason}")
    print(f"  faces              : {faces['faces']} on {faces['pictures_with_faces']} of {faces['pictures']} stored "
          f"pictures, crops in {output / 'faces'}")
    print_decisions(decided, rules)
    print_truth_match(decided, truth)
    undecided = sum(1 for _, _, reason in decided if not reason)
    if undecided:
        print(f"  note: {undecided} stored pictures come from a crawl without the rules (an older demo?); "
              "`make clean` and run again to see them all judged")
    print_export(exported)
    print(f"  catalogue          : {summary['catalog']}")
    print(f"  log                : {output / 'last-crawl.log'}")
    print("Run it again: it trains nothing, fetches nothing new and stops after the first page.")
    return code


def run_export(output: Path) -> dict[str, Any]:
    """Export the kept pictures' heads for a kohya LoRA, by the real command; what it wrote."""
    dest = output / "demo-lora"
    command = [sys.executable, "-m", "scrapy", "export", str(dest), *EXPORT_OPTIONS, "--force", "--no-progress",
               "-L", "WARNING", "-s", f"OUTPUT_DIR={output}", "-s", f"EXPORT_TRIGGER_WORD={TRIGGER_WORD}"]
    print("Running: scrapy", " ".join(command[3:]), flush=True)
    done = subprocess.run(command, cwd=REPO, env=quiet_env(), capture_output=True, text=True)
    if done.returncode != 0:
        return {"dest": dest, "error": (done.stderr.strip().splitlines() or ["(no message)"])[-1]}
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    captions = sorted(dest.rglob("*.txt"))
    tags = {tag for caption in captions for tag in caption.read_text(encoding="utf-8").split(", ")[1:]}
    example = max((c.read_text(encoding="utf-8") for c in captions), key=lambda text: (text.count(","), text), default="")
    return {"dest": dest, "manifest": manifest, "tags": len(tags), "example": example}


def print_export(exported: dict[str, Any]) -> None:
    """The export's line: head crops, where, the tags in their captions with one caption."""
    dest = exported["dest"]
    if "error" in exported:
        print(f"  kohya export       : none: {exported['error']}")
        return
    manifest = exported["manifest"]
    print(f"  kohya export       : {manifest['total']} head crops at 512 px in {dest / 'train'} "
          f"({len(manifest['skipped'])} kept pictures without a face skipped, {len(manifest['enlarged'])} enlarged)")
    print(f"      dataset.toml   : {dest / 'dataset.toml'} (sd-scripts: --dataset_config)")
    print(f"      captions       : {exported['tags']} distinct tags (Pixiv's; a tagger adds its own), e.g.")
    print(f"                       {exported['example'][:150]}")


def print_decisions(decided: list[tuple[str, str, str | None]], rules: Path) -> None:
    """Per decision and rule: how many pictures, and one reason as written to the catalogue."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for _, status, reason in decided:
        match = RULE_NAME.search(reason or "")
        groups[(status, match[1] if match else "not judged")].append(reason or "(none)")
    print(f"  decisions          : by the rules in {rules}")
    for (status, rule), reasons in sorted(groups.items(), key=lambda item: (item[0][0] != "kept", -len(item[1]))):
        for example in reasons[:EXAMPLES_PER_RULE]:
            print(f"      {status:7} {len(reasons):4} x {rule:14} e.g. {example}")


def truth_scores(decided: list[tuple[str, str, str | None]], truth: dict[str, str | None]) -> dict[str, float]:
    """Precision and recall of "kept" against the site's truth (is the target character drawn)."""
    counts = Counter((status == "kept", truth.get(artwork_id) == TARGET) for artwork_id, status, _ in decided)
    kept = counts[True, True] + counts[True, False]
    target = counts[True, True] + counts[False, True]
    return {
        "kept": kept,
        "target": target,
        "precision": counts[True, True] / kept if kept else 0.0,
        "recall": counts[True, True] / target if target else 0.0,
    }


def print_truth_match(decided: list[tuple[str, str, str | None]], truth: dict[str, str | None]) -> None:
    scores = truth_scores(decided, truth)
    print(f"  vs the site's truth: kept precision {scores['precision']:.3f}, recall {scores['recall']:.3f} "
          f"({scores['kept']} kept; {TARGET} is in {scores['target']} of {len(decided)} stored pictures)")


if __name__ == "__main__":
    raise SystemExit(main())
