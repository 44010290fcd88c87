"""Benchmark: the Isaac recognizer's data and inference paths, each against the naive way, in one run.

* slicing: ``stages.sprites.build_sprites`` on the captured sheets (CSS parsed once per sheet,
  duplicates found, PNGs written) against the original workflow's way (open the sheet again for
  every item, crop at the scraped x/y, save);
* synthesis: camera-like crops per second in one process, and a training step fed by a loader
  process (ours) against synthesis in the training process (naive): how long each step waits for
  data and how long the model takes;
* inference: recognizer images per second in batches against one picture per call;
* locate: seconds per scene for ours (dense proposals + one template per proposal) against
  matching every icon's template at one integer scale (the cost of one scale is measured on a
  share of the icons and scaled up; a real search needs several scales).

Without ``--model`` the recognizer is untrained (timings only). Timings depend on what else runs
on the machine; ``os.cpu_count()`` and the load average are printed with them.

    .venv/bin/python bench/isaac.py [--model /tmp/isaac-model] [--steps 20] [--batch 128]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def bench_slicing(fixtures: Path) -> dict[str, float]:
    from jobs.isaac_icons import icons_from_fixtures

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        icons = icons_from_fixtures(fixtures, out)
        ours = time.perf_counter() - started
    mapping = json.loads((fixtures / "id_mapping_dict.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        count = 0
        for css_id, entry in mapping.items():
            if "x" not in entry:
                continue
            sheet_name = "Trinket_sprite.png" if entry.get("type") == "饰品" else "Collectibles_sprite.png"
            with Image.open(fixtures / sheet_name) as sheet:  # the original opened the sheet per item
                x, y = abs(int(entry["x"])), abs(int(entry["y"]))
                sheet.crop((x, y, x + 32, y + 32)).save(Path(out) / f"{css_id}.png")
            count += 1
        naive = time.perf_counter() - started
    return {"ours_per_s": len(icons) / ours, "ours_sprites": len(icons), "naive_per_s": count / naive, "naive_sprites": count}


def bench_synthesis(icons, batch: int, steps: int) -> dict[str, float]:
    from models.isaac.net import IconNet
    from models.isaac.synthesis import Backgrounds, SyntheticIcons
    from models.isaac.train import StepBatches

    backgrounds = Backgrounds.load()
    dataset = SyntheticIcons(icons, "train", seed=0, length=10**7, backgrounds=backgrounds, negative_every=20)
    started, cpu = time.perf_counter(), time.process_time()
    for index in range(400):
        dataset[index]
    one_process = 400 / (time.perf_counter() - started)
    cpu_ms = (time.process_time() - cpu) / 400 * 1000

    results = {"samples_per_s": one_process, "cpu_ms_per_sample": cpu_ms}
    for name, workers in (("naive", 0), ("ours", max(1, min((os.cpu_count() or 2) - 1, 6)))):
        torch.manual_seed(0)
        model = IconNet(len(icons) + 1).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=StepBatches(0, steps + 2, batch),
                                             num_workers=workers, prefetch_factor=4 if workers else None)
        wait = compute = 0.0
        mark = time.perf_counter()
        for step, (images, labels) in enumerate(loader):
            fetched = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(images.contiguous(memory_format=torch.channels_last)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done = time.perf_counter()
            if step >= 2:  # the first batches include starting the workers
                wait += fetched - mark
                compute += done - fetched
            mark = done
        results[f"{name}_wait_ms"] = wait / steps * 1000
        results[f"{name}_model_ms"] = compute / steps * 1000
        results[f"{name}_samples_per_s"] = steps * batch / (wait + compute)
        results[f"{name}_workers"] = workers
    return results


def bench_inference(recognizer, icons, count: int) -> dict[str, float]:
    from models.isaac.synthesis import Backgrounds, SyntheticIcons

    dataset = SyntheticIcons(icons, "test", seed=0, length=count, backgrounds=Backgrounds.load())
    pictures = [dataset.image(i) for i in range(count)]
    recognizer.probabilities(pictures[:8])  # warm-up
    started = time.perf_counter()
    recognizer.probabilities(pictures, batch_size=256)
    batched = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for picture in pictures[: count // 4]:
        recognizer.probabilities([picture], batch_size=1)
    single = (count // 4) / (time.perf_counter() - started)
    return {"batched_per_s": batched, "single_per_s": single}


def bench_locate(recognizer, icons, scenes: int) -> dict[str, float]:
    import torch.nn.functional as F

    from models.isaac.locate import Locator, match_detections, summarise
    from models.isaac.synthesis import Backgrounds, render_scene, scene_rng

    backgrounds = Backgrounds.load()
    locator = Locator(recognizer, icons.pixels)
    counts, seconds = [], 0.0
    rendered = [render_scene(icons.pixels, scene_rng(0, "test", i), backgrounds, "test") for i in range(scenes)]
    for scene in rendered:
        started = time.perf_counter()
        found = locator.locate(scene.image)
        seconds += time.perf_counter() - started
        counts.append(match_detections(found, scene.boxes, scene.labels))
    summary = summarise(counts)
    # Naive: correlate every icon (RGB, 32 px, one integer scale) with the first scene.
    share = 64
    templates = torch.from_numpy(icons.pixels[:share, :, :, :3].astype(np.float32)).permute(0, 3, 1, 2)
    picture = torch.from_numpy(rendered[0].image.astype(np.float32)).permute(2, 0, 1)[None]
    started = time.perf_counter()
    F.conv2d(picture, templates)
    one_scale = (time.perf_counter() - started) * len(icons) / share
    return {"ours_s_per_scene": seconds / scenes, **summary, "naive_s_per_scale": one_scale,
            "scene_pixels": float(np.mean([s.image.shape[0] * s.image.shape[1] for s in rendered]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained model folder (else an untrained net: timings only)")
    parser.add_argument("--fixtures", default=str(REPO.parent / "shared" / "fixtures" / "isaac"))
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per loader setting")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--images", type=int, default=1024, help="pictures for the inference timing")
    parser.add_argument("--scenes", type=int, default=5, help="scenes for the locate timing")
    args = parser.parse_args()

    from jobs.isaac_icons import icons_from_fixtures
    from models.isaac.identify import Recognizer
    from models.isaac.net import IconNet
    from models.isaac.train import NO_ITEM

    fixtures = Path(args.fixtures)
    if not fixtures.is_dir():
        sys.exit(f"{fixtures}: the captured Isaac wiki files are needed (../shared/fixtures/isaac)")
    print(f"cpu cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}", flush=True)
    slicing = bench_slicing(fixtures)
    icons = icons_from_fixtures(fixtures)
    synthesis = bench_synthesis(icons, args.batch, args.steps)
    torch.set_num_threads(os.cpu_count() or 1)
    if args.model:
        recognizer = Recognizer.load(args.model)
    else:
        model = IconNet(len(icons) + 1).eval().to(memory_format=torch.channels_last)
        card = {"input": {"size": 64}, "no_item_class": NO_ITEM}
        recognizer = Recognizer(model, card, icons.classes, 64, torch.device("cpu"))
    inference = bench_inference(recognizer, icons, args.images)
    locate = bench_locate(recognizer, icons, args.scenes)

    rows = [
        ("slicing sprites/s", f"{slicing['ours_per_s']:.0f} (build_sprites, {slicing['ours_sprites']} classes)",
         f"{slicing['naive_per_s']:.0f} (open sheet per item, {slicing['naive_sprites']} crops)"),
        ("synthesis samples/s, 1 process", f"{synthesis['samples_per_s']:.0f} ({synthesis['cpu_ms_per_sample']:.1f} ms CPU each)", ""),
        ("train step: loader wait / model, ms",
         f"{synthesis['ours_wait_ms']:.0f} / {synthesis['ours_model_ms']:.0f} ({synthesis['ours_workers']} worker)",
         f"{synthesis['naive_wait_ms']:.0f} / {synthesis['naive_model_ms']:.0f} (in-process)"),
        ("training samples/s", f"{synthesis['ours_samples_per_s']:.0f}", f"{synthesis['naive_samples_per_s']:.0f}"),
        ("inference images/s", f"{inference['batched_per_s']:.0f} (batches of 256)", f"{inference['single_per_s']:.0f} (one at a time)"),
        ("locate s/scene", f"{locate['ours_s_per_scene']:.2f} (P {locate['precision']:.2f} R {locate['recall']:.2f})",
         f"{locate['naive_s_per_scale']:.1f} per integer scale (907 templates)"),
    ]
    width = max(len(r[0]) for r in rows)
    second = max(len(r[1]) for r in rows)
    print(f"{'':<{width}}  {'ours':<{second}}  naive")
    for name, ours, naive in rows:
        print(f"{name:<{width}}  {ours:<{second}}  {naive}")
    buffer = io.StringIO()
    json.dump({"slicing": slicing, "synthesis": synthesis, "inference": inference, "locate": locate}, buffer)
    print(buffer.getvalue())


if __name__ == "__main__":
    main()
