"""core/progress.py: tqdm's bar on a terminal, nothing in a log file or with --no-progress."""

from __future__ import annotations

import io

from core.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drawn(stream: io.StringIO, enabled: bool = True, total: int = 3) -> str:
    bar = progress_bar("curating", total, enabled, stream=stream)
    for _ in range(total):
        bar.update(1)
    bar.close()
    return stream.getvalue()


def test_a_terminal_gets_the_bar_with_its_count():
    shown = drawn(Terminal())
    assert "curating" in shown and "3/3" in shown and "100%" in shown


def test_a_log_file_no_progress_and_nothing_to_count_get_nothing():
    assert drawn(io.StringIO()) == ""
    assert drawn(Terminal(), enabled=False) == ""
    assert drawn(Terminal(), total=0) == ""
