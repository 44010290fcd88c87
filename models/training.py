"""The training shell every trainer shares: the split, the data hash, the epoch and step loops, the
checkpoints kept, the card and the plots.

The trainers (models/classifier.py, segment.py, gan.py, isaac/train.py, face_heatmap.py) differ in
their nets and losses, not in how a run is framed, so these parts live once here:

* ``split_value``: where a sample falls in [0, 1), from its name alone (sha256), so adding samples
  never moves the ones already split, and a re-run splits the same way.
* ``data_hash``: which data a model saw, as a sha256 over one tab-separated line per sample (its
  name and file sizes); the card records it.
* ``run_epoch``: one epoch of steps under a progress bar, timed; its row is the mean of each
  number the steps return, plus images/s and seconds.
* ``run_steps``: a run counted in steps rather than epochs (resumable from any step), one batch a
  step under a progress bar, with ``Every`` hooks (log, validate, checkpoint) after the steps they
  name, and a ``StepTiming`` of the seconds spent waiting for batches and computing steps; the time
  the hooks take is left out.
* ``CheckpointKeeper``: writes the last checkpoint every epoch and the best one when the score rises.
* ``write_card``: the JSON card beside the weights, written atomically, stamped with its time.
* ``plot_panels``: the training curves as a PNG (matplotlib's Agg figure; no display needed).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np

from core.progress import progress_bar
from core.storage import atomic_write


def split_value(key: str) -> float:
    """Where a sample falls in [0, 1): the split depends on nothing but its name (a relative path, a stem)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def data_hash(rows: Iterable[Sequence[object]]) -> str:
    """sha256 over one line per sample: its fields (name, file sizes) joined by tabs, in the given order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(("\t".join(str(value) for value in row) + "\n").encode("utf-8"))
    return digest.hexdigest()


def created_now() -> str:
    """The card's ``created`` stamp: UTC, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def write_card(path: str | Path, card: dict[str, Any], *, ensure_ascii: bool = True) -> None:
    """The card as indented JSON, written atomically (a killed run never leaves half a card)."""
    atomic_write(Path(path), (json.dumps(card, indent=2, ensure_ascii=ensure_ascii) + "\n").encode("utf-8"))


def run_epoch(label: str, steps: int, step: Callable[[int], dict[str, float]], images_per_step: int,
              progress: bool) -> dict[str, float]:
    """Run ``step(0)`` .. ``step(steps - 1)`` under a progress bar; the mean of each number they
    return, ``images_per_second`` and ``seconds``."""
    started, rows = time.monotonic(), []
    bar = progress_bar(label, steps, progress)
    for index in range(steps):
        rows.append(step(index))
        bar.update(1)
    bar.close()
    seconds = time.monotonic() - started
    means = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]} if rows else {}
    return {**means, "images_per_second": round(steps * images_per_step / seconds, 2), "seconds": round(seconds, 2)}


Batch = TypeVar("Batch")


@dataclass
class StepTiming:
    """Seconds a step loop spent: ``loader_wait`` for its batches, ``compute`` in its steps, and
    ``spent`` in both. A checkpoint carries them, so a resumed run adds to them."""

    spent: float = 0.0
    loader_wait: float = 0.0
    compute: float = 0.0


@dataclass(frozen=True)
class Every:
    """A hook of ``run_steps``: ``action(step)`` after each step number that is a multiple of
    ``steps``, counted from step 0 (a resumed run keeps the rhythm); with ``at_last`` also after the
    call's last step (a stopped run keeps its tail), and never after step ``not_at``."""

    steps: int
    action: Callable[[int], None]
    at_last: bool = False
    not_at: int | None = None

    def due(self, step: int, last: int) -> bool:
        if step == self.not_at:
            return False
        return step % self.steps == 0 or (self.at_last and step == last)


def run_steps(batches: Iterable[Batch], step: Callable[[Batch], None], first: int, last: int, label: str,
              progress: bool, hooks: Sequence[Every] = (), timing: StepTiming | None = None) -> int:
    """Take a run from step ``first`` to step ``last`` under a progress bar: ``step(batch)`` once per
    batch, then the hooks that are due, in order. Steps are numbered by how many are done once they
    have run (``first + 1`` .. ``last``), as a checkpoint counts them; returns the last one reached.

    ``batches`` may end early (so does the loop) or go on (no batch is drawn past ``last``); a step
    that draws its own data can take ``itertools.repeat(None)``. The seconds go into ``timing``
    (pass a resumed one to add to it): waiting for a batch counts as ``loader_wait``, the step as
    ``compute``; hooks (validation, checkpoints) count as neither, so the figures describe training.
    """
    timing = timing if timing is not None else StepTiming()
    done = first
    bar = progress_bar(label, last - first, progress)
    mark = time.monotonic()
    for done, batch in zip(range(first + 1, last + 1), batches):  # range first: no batch drawn past ``last``
        fetched = time.monotonic()
        step(batch)
        finished = time.monotonic()
        timing.loader_wait += fetched - mark
        timing.compute += finished - fetched
        timing.spent += finished - mark
        mark = finished
        bar.update(1)
        for hook in hooks:
            if hook.due(done, last):
                hook.action(done)
                mark = time.monotonic()
    bar.close()
    return done


@dataclass
class CheckpointKeeper:
    """The last checkpoint after every epoch, and the best by a score (higher is better)."""

    last_path: Path
    best_path: Path | None = None
    save: Callable[[Path, Any], None] | None = None
    best_score: float = -math.inf
    best_epoch: int | None = None

    def keep(self, checkpoint: Any, epoch: int, score: float) -> bool:
        """Write the checkpoint as the last one, and as the best one when ``score`` beats the best so
        far; True when it did."""
        saver = self.save or _save_torch
        saver(self.last_path, checkpoint)
        if self.best_path is None or not score > self.best_score:
            return False
        self.best_score, self.best_epoch = score, epoch
        saver(self.best_path, checkpoint)
        return True


def _save_torch(path: Path, checkpoint: Any) -> None:
    from models.torch_common import save_checkpoint

    save_checkpoint(path, checkpoint)


@dataclass
class Line:
    x: Sequence[float] | np.ndarray
    y: Sequence[float | None] | np.ndarray
    label: str | None = None
    style: dict[str, Any] = field(default_factory=dict)  # matplotlib's plot keywords (marker, color, alpha...)


@dataclass
class Panel:
    title: str
    lines: list[Line]
    xlabel: str = "epoch"
    ylim: tuple[float, float] | None = None
    legend: bool = False


def plot_panels(path: str | Path, panels: Sequence[Panel], size: tuple[float, float] = (10, 4)) -> None:
    """One row of line plots, saved as a PNG at ``path``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    axes = figure.subplots(1, len(panels))
    for axis, panel in zip(np.atleast_1d(axes), panels):
        for line in panel.lines:
            axis.plot(line.x, line.y, label=line.label, **line.style)
        axis.set_title(panel.title)
        axis.set_xlabel(panel.xlabel)
        if panel.ylim:
            axis.set_ylim(*panel.ylim)
        axis.grid(alpha=0.3)
        if panel.legend:
            axis.legend()
    figure.tight_layout()
    figure.savefig(path)
