"""Measure a trained recognizer on held-out synthetic images: crops, and whole scenes for ``locate``.

The test crops are ``SyntheticIcons(split="test")`` with the card's seed and camera: backgrounds
no training or validation image used, ``per_class`` crops of every class, so accuracy is over all
classes equally. Reported: top-1/top-5 overall and per kind (items only, "none" left out of the
ranking, as the target is stated), how often an item was called "no item", how often a crop with
no item centred was called "no item", the worst confused pairs with both names, the weakest
classes, and (with ``scenes``) locate's precision and recall at IoU 0.5 on test scenes of 3-8 items.
Writes ``evaluation.json``, ``per_class.png`` and ``confusions.png``, and adds the test metrics to
the card.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ProjectError
from core.progress import progress_bar
from models.isaac.icons import IconSet
from models.isaac.identify import Recognizer
from models.isaac.synthesis import Backgrounds, SyntheticIcons, render_scene, scene_rng
from models.isaac.train import CARD_NAME, config_from_card

REPORT_NAME = "evaluation.json"


class EvaluationError(ProjectError, RuntimeError):
    """The icons at hand are not the ones the model was trained on, or the model folder is unusable."""


def check_icons(recognizer: Recognizer, icons: IconSet) -> None:
    keys = [item.key for item in recognizer.classes]
    if keys != [item.key for item in icons.classes]:
        raise EvaluationError(f"the icons ({icons.source}) are not the model's {len(keys)} classes")
    trained_on = recognizer.card.get("data", {}).get("icons_sha256")
    if trained_on and trained_on != icons.digest():
        raise EvaluationError(f"the icons ({icons.source}) differ in pixels from those the model was trained on")


def crop_metrics(recognizer: Recognizer, icons: IconSet, *, split: str = "test", per_class: int = 10,
                 negatives: int = 500, seed: int | None = None, progress: bool = True,
                 backgrounds: Backgrounds | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Top-1/top-5 and the confusions on ``per_class`` held-out crops a class (plus negatives)."""
    config = config_from_card(recognizer.card)
    seed = config.seed if seed is None else seed
    backgrounds = backgrounds if backgrounds is not None else Backgrounds.load()
    items = SyntheticIcons(icons, split, seed=seed, length=len(icons) * per_class, size=recognizer.image_size,
                           backgrounds=backgrounds, camera=config.camera)
    empty = SyntheticIcons(icons, split, seed=seed + 1, length=negatives, size=recognizer.image_size,
                           backgrounds=backgrounds, camera=config.camera, negative_every=1)
    classes = len(icons)
    bar = progress_bar(f"evaluating on {split}", len(items) + len(empty), progress)
    synthesis_seconds = model_seconds = 0.0
    rows: dict[str, list[np.ndarray]] = {"items": [], "empty": []}
    for name, dataset in (("items", items), ("empty", empty)):
        for start in range(0, len(dataset), batch_size):
            began = time.perf_counter()
            pictures = [dataset.image(i) for i in range(start, min(start + batch_size, len(dataset)))]
            synthesised = time.perf_counter()
            rows[name].append(recognizer.probabilities(pictures, batch_size))
            model_seconds += time.perf_counter() - synthesised
            synthesis_seconds += synthesised - began
            bar.update(len(pictures))
    bar.close()
    probabilities = np.concatenate(rows["items"])
    labels = np.array([items.label(i) for i in range(len(items))])
    ranked = np.argsort(-probabilities[:, :classes], axis=1)[:, :5]
    top1 = ranked[:, 0] == labels
    top5 = (ranked == labels[:, None]).any(axis=1)
    called_none = probabilities.argmax(axis=1) == classes
    empty_probabilities = np.concatenate(rows["empty"]) if rows["empty"] else np.zeros((0, classes + 1))

    per_kind = {}
    kinds = np.array([item.kind for item in icons.classes])[labels]
    for kind in sorted(set(kinds)):
        chosen = kinds == kind
        per_kind[kind] = {"images": int(chosen.sum()), "top1": float(top1[chosen].mean()), "top5": float(top5[chosen].mean())}
    per_class_accuracy = np.array([top1[labels == c].mean() for c in range(classes)])
    pairs = Counter((int(t), int(p)) for t, p in zip(labels[~top1], ranked[~top1, 0]))

    def named(index: int) -> dict[str, Any]:
        item = icons.classes[index]
        return {"key": item.key, "name_en": item.name_en, "name_zh": item.name_zh}

    return {
        "split": split,
        "seed": seed,
        "images": int(len(labels)),
        "per_class": per_class,
        "top1": float(top1.mean()),
        "top5": float(top5.mean()),
        "per_kind": per_kind,
        "items_called_none": float(called_none.mean()),
        "empty_crops": int(len(empty_probabilities)),
        "empty_called_none": float((empty_probabilities.argmax(axis=1) == classes).mean()) if len(empty_probabilities) else None,
        "worst_pairs": [{"true": named(t), "predicted": named(p), "count": n, "of": per_class}
                        for (t, p), n in pairs.most_common(25)],
        "weakest_classes": [{**named(int(c)), "top1": float(per_class_accuracy[c])}
                            for c in np.argsort(per_class_accuracy, kind="stable")[:25]],
        "classes_below_90": int((per_class_accuracy < 0.9).sum()),
        "per_class_top1": {icons.classes[c].key: float(per_class_accuracy[c]) for c in range(classes)},
        "seconds": {"synthesis": round(synthesis_seconds, 2), "model": round(model_seconds, 2)},
        "images_per_second_model": round(len(labels) / model_seconds, 1) if model_seconds else None,
    }


def scene_metrics(recognizer: Recognizer, icons: IconSet, *, scenes: int = 100, split: str = "test",
                  seed: int | None = None, progress: bool = True, backgrounds: Backgrounds | None = None,
                  options: Any = None) -> dict[str, Any]:
    """``locate`` precision and recall (IoU ≥ 0.5, class must match) on held-out scenes of 3-8 items."""
    from models.isaac.locate import LocateOptions, Locator, match_detections, summarise

    config = config_from_card(recognizer.card)
    seed = config.seed if seed is None else seed
    backgrounds = backgrounds if backgrounds is not None else Backgrounds.load()
    locator = Locator(recognizer, icons.pixels, options or LocateOptions())
    counts, seconds = [], 0.0
    bar = progress_bar(f"locating in {split} scenes", scenes, progress)
    for index in range(scenes):
        scene = render_scene(icons.pixels, scene_rng(seed, split, index), backgrounds, split)
        began = time.perf_counter()
        detections = locator.locate(scene.image)
        seconds += time.perf_counter() - began
        counts.append(match_detections(detections, scene.boxes, scene.labels))
        bar.update(1)
    bar.close()
    return {**summarise(counts), "split": split, "seed": seed, "seconds_per_scene": round(seconds / max(scenes, 1), 3),
            "options": locator.options.__dict__}


def plot_report(report: dict[str, Any], out_dir: Path) -> None:
    """Per-class top-1 histogram, and the most confused pairs as a bar chart."""
    from matplotlib.figure import Figure

    crops = report["crops"]
    figure = Figure(figsize=(7, 4), dpi=100)
    axis = figure.subplots()
    axis.hist(list(crops["per_class_top1"].values()), bins=np.linspace(0, 1, 21).tolist(), color="tab:blue")
    axis.set_xlabel(f"top-1 per class ({crops['per_class']} test crops each)")
    axis.set_ylabel("classes")
    axis.set_title(f"top-1 {crops['top1']:.4f}, top-5 {crops['top5']:.4f} over {crops['images']} test crops")
    axis.set_yscale("log")
    figure.tight_layout()
    figure.savefig(out_dir / "per_class.png")

    pairs = crops["worst_pairs"][:15]
    figure = Figure(figsize=(9, 0.4 * max(len(pairs), 1) + 1.5), dpi=100)
    axis = figure.subplots()
    labels = [f"{p['true']['name_en']} → {p['predicted']['name_en']}" for p in pairs][::-1]
    axis.barh(range(len(pairs)), [p["count"] for p in pairs][::-1], color="tab:red")
    axis.set_yticks(range(len(pairs)), labels)
    axis.set_xlabel(f"test crops (of {crops['per_class']} per class)")
    axis.set_title("most confused pairs (true → predicted)")
    figure.tight_layout()
    figure.savefig(out_dir / "confusions.png")


def evaluate(model_dir: str | Path, icons: IconSet, *, per_class: int = 10, negatives: int = 500, scenes: int = 0,
             split: str = "test", seed: int | None = None, out_dir: str | Path | None = None,
             progress: bool = True, device: str | None = None, update_card: bool = True) -> dict[str, Any]:
    """Measure the model in ``model_dir`` and write the report, plots and card metrics (see the module doc)."""
    model_dir = Path(model_dir)
    recognizer = Recognizer.load(model_dir, device)
    check_icons(recognizer, icons)
    backgrounds = Backgrounds.load()
    report: dict[str, Any] = {
        "model": str(model_dir),
        "crops": crop_metrics(recognizer, icons, split=split, per_class=per_class, negatives=negatives, seed=seed,
                              progress=progress, backgrounds=backgrounds),
    }
    if scenes:
        report["locate"] = scene_metrics(recognizer, icons, scenes=scenes, split=split, seed=seed, progress=progress,
                                         backgrounds=backgrounds)
    out = Path(out_dir) if out_dir else model_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_report(report, out)
    if update_card and split == "test":
        card_path = model_dir / CARD_NAME
        card = json.loads(card_path.read_text(encoding="utf-8"))
        crops = report["crops"]
        card["metrics"]["test"] = {k: crops[k] for k in ("images", "per_class", "top1", "top5", "per_kind",
                                                         "items_called_none", "empty_called_none", "seed")}
        if "locate" in report:
            card["metrics"]["locate"] = {k: report["locate"][k] for k in (
                "scenes", "items", "precision", "recall", "box_precision", "box_recall", "mean_iou", "seconds_per_scene")}
        card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report
