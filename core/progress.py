"""Progress bars on stderr: tqdm's, the one every long job here (curate, export, report, training,
masks) draws.

tqdm gives the rate and an ETA, redraws at most ten times a second however often it is updated, and
stays silent when stderr is not a terminal (a cron job's mail, a log file), where a bar is noise.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


def progress_bar(label: str, total: int, enabled: bool = True, stream: TextIO | None = None) -> tqdm:
    """A bar of ``total`` steps named ``label`` on ``stream`` (stderr); ``update(n)`` counts, ``close()``
    ends the line. Silent when not ``enabled`` (``--no-progress``), when there is nothing to count, or
    off a terminal."""
    return tqdm(total=total, desc=label, file=stream or sys.stderr, disable=None if enabled and total else True,
                dynamic_ncols=True, leave=True)
