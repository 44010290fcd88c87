"""What the project's own commands (``crawler/commands/``) share.

It lives outside ``crawler/commands/`` on purpose: Scrapy registers every ``ScrapyCommand`` subclass
it finds in that package as a command named after its module.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from scrapy.commands import ScrapyCommand, ScrapyHelpFormatter
from scrapy.exceptions import UsageError

from core.output_lock import EXIT_LOCKED, OutputLock


class OfflineCommand(ScrapyCommand):
    """A command that works on the project's files (catalogue, pictures, models): no crawl, no reactor."""

    requires_project = True
    requires_crawler_process = False


class ActionsHelpFormatter(argparse.RawDescriptionHelpFormatter, ScrapyHelpFormatter):
    """Scrapy's headings, and the description's own line breaks (the list of actions)."""


def actions_help(actions: dict[str, tuple[list[str], str]]) -> str:
    """``--help``'s list of sub-actions, one wrapped paragraph per ``name: (operands, what it does)``."""
    width = max(len(" ".join([name, *operands])) for name, (operands, _) in actions.items())
    return "\n".join(
        textwrap.fill(what, 96, initial_indent=f"  {' '.join([name, *operands]):<{width}}  ",
                      subsequent_indent=" " * (width + 4))
        for name, (operands, what) in actions.items()
    )


def refuse_unknown_options(args: list[str]) -> None:
    """What argparse left among the operands and looks like an option is a typo: say so."""
    unknown = [a for a in args if a.startswith("-") and len(a) > 1]
    if unknown:
        raise UsageError(f"unknown option {unknown[0]}", print_help=False)


def split_action(args: list[str], actions: dict[str, tuple[list[str], str]]) -> tuple[str, list[str]]:
    """``ACTION OPERAND...`` → (action, operands), or a usage error naming the actions there are."""
    if not args or args[0] not in actions:
        given = f"unknown action {args[0]!r}: " if args else "say what to do: "
        raise UsageError(given + f"one of {', '.join(actions)}", print_help=False)
    return args[0], args[1:]


def take_output_lock(command: ScrapyCommand, what: str) -> OutputLock | None:
    """OUTPUT_DIR's lock (core/output_lock.py), or None after saying who holds it and setting
    the command's exit code to 75; the caller then returns without touching anything."""
    assert command.settings is not None
    lock = OutputLock.for_settings(command.settings)
    holder = lock.acquire(what)
    if holder is None:
        return lock
    print(f"{what}: another process holds {lock.path} ({holder}); not starting a second writer over "
          "the same OUTPUT_DIR", file=sys.stderr, flush=True)
    command.exitcode = EXIT_LOCKED
    return None
