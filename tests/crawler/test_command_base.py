"""The one dispatch every action command shares (crawler/command_base.ActionCommand), run as users
run it: ``scrapy NAME ACTION OPERAND... [options]`` in a subprocess, from the project's root."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from scrapy.exceptions import UsageError

from crawler.command_base import actions_help, split_action
from mocksites.runner import REPO

# Runs scrapy's command line, then says on stderr whether torch got imported: a refused command
# line must be refused before any model library loads.
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
    "from scrapy.cmdline import execute\n"
    "execute(['scrapy', *sys.argv[1:]])\n"
)
ACTION_COMMANDS = ("classifier", "faces", "gan", "isaac", "segment", "tags")


def scrapy(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", PROBE, *args, "-s", f"OUTPUT_DIR={tmp_path}", "--nolog"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ACTION_COMMANDS)
def test_help_lists_every_action_and_no_action_is_refused(tmp_path, command):
    shown = scrapy(tmp_path, command, "-h")
    assert shown.returncode == 0, shown.stderr
    assert "Actions:" in shown.stdout and "Examples:" in shown.stdout
    refused = scrapy(tmp_path, command)
    assert refused.returncode == 2
    assert "say what to do: one of" in refused.stderr
    assert "torch imported: False" in refused.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("isaac", "frobnicate"), "unknown action 'frobnicate': one of train, evaluate, identify, locate, preview"),
    (("isaac", "preview"), "usage: scrapy isaac preview PNG"),
    (("isaac", "preview", "a.png", "b.png"), "usage: scrapy isaac preview PNG"),
    (("isaac", "identify"), "usage: scrapy isaac identify IMAGE..."),
    (("isaac", "train", "--stpes", "5"), "unknown option --stpes"),
    (("faces", "train", "only-one"), "usage: scrapy faces train LABELLED_DIR OUT"),
    (("segment", "predict", "ckpt.pt"), "usage: scrapy segment predict CKPT IMAGE..."),
])
def test_a_wrong_command_line_exits_2_before_any_model_loads(tmp_path, args, message):
    done = scrapy(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "torch imported: False" in done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("isaac", "evaluate", "--split", "train"), "evaluate --split takes test or val"),
    (("isaac", "evaluate", "--scenes"), "evaluate --scenes takes a number of scenes"),
    (("isaac", "preview", "grid.png", "--scenes", "3"), "preview takes a bare --scenes"),
])
def test_isaac_options_shared_by_two_actions_are_checked_per_action(tmp_path, args, message):
    done = scrapy(tmp_path, *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_split_action_and_the_help_text():
    actions = {"train": (["DATA", "OUT"], "train it"), "predict": (["MODEL", "PATH..."], "use it " * 30)}
    assert split_action(["predict", "m", "a", "b"], actions) == ("predict", ["m", "a", "b"])
    with pytest.raises(UsageError, match="unknown action 'trian': one of train, predict"):
        split_action(["trian"], actions)
    text = actions_help(actions).splitlines()
    assert text[0] == "  train DATA OUT" + " " * 9 + "train it"  # one column for every description
    assert text[1].startswith("  predict MODEL PATH...  use it")
    assert all(len(line) <= 96 for line in text) and len(text) > 3  # long descriptions wrap, indented
    assert text[2].startswith(" " * 25) and not text[2].startswith(" " * 26)
