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
from scrapy.utils.log import configure_logging

from core.errors import EXIT_USAGE, ProjectError
from core.output_lock import EXIT_LOCKED, OutputLock


class OfflineCommand(ScrapyCommand):
    """A command that works on the project's files (catalogue, pictures, models): no crawl, no reactor.

    A subclass defines ``perform``. Every error the project raises on purpose (``core.errors.ProjectError``)
    is caught here, once, for all of them: a usage or setting error (exit code 2) is Scrapy's
    ``UsageError`` (``usage: ...`` and ``scrapy NAME: error: ...``), any other is one
    ``scrapy NAME: error: ...`` line and its exit code. No traceback either way.
    """

    requires_project = True
    requires_crawler_process = False
    name = ""  # as typed after ``scrapy``; empty: the module's name (crawler/commands/NAME.py)

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.formatter_class = ProjectHelpFormatter

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        try:
            self.perform(args, opts)
        except ProjectError as error:
            self.exitcode = fail(self.command_name(), error)

    def perform(self, args: list[str], opts: argparse.Namespace) -> None:
        raise NotImplementedError

    def command_name(self) -> str:
        return self.name or type(self).__module__.rsplit(".", 1)[-1]


def fail(command: str, error: ProjectError, usage: bool = True) -> int:
    """Say what went wrong, on one line; returns the exit code. A usage error (exit 2) goes through
    Scrapy's ``UsageError`` (the usage line, then the message) unless ``usage`` is False."""
    if error.exit_code == EXIT_USAGE and usage:
        raise UsageError(error.one_line(), print_help=False) from None
    print(f"scrapy {command}: error: {error.one_line()}", file=sys.stderr, flush=True)
    return error.exit_code


class ProjectHelpFormatter(ScrapyHelpFormatter):
    """Scrapy's help layout, with headings found only where argparse puts them.

    Scrapy's formatter takes every part of the help that ends in ``":\n"`` for a section heading and
    title-cases and underlines it, so an option whose wrapped help ends a line with a colon came out
    as a garbled heading.
    """

    def format_part_strings(self, part_strings: list[str]) -> list[str]:
        held = [i for i, part in enumerate(part_strings) if part.endswith(":\n") and not _is_heading(part_strings, i)]
        for i in held:
            part_strings[i] = part_strings[i][:-2] + _COLON_HELD
        parts = super().format_part_strings(part_strings)
        return [part.replace(_COLON_HELD, ":\n") for part in parts]


_COLON_HELD = "\x00:\n\x00"  # a colon at a line's end, hidden from the heading test for a moment


def _is_heading(parts: list[str], i: int) -> bool:
    """argparse writes a section as the parts ``"\n"``, ``"heading:\n"``, items: unindented, after a
    blank line. A help line is indented, or follows its option's name on the same line."""
    return not parts[i][:1].isspace() and (i == 0 or parts[i - 1] == "\n")


class ActionsHelpFormatter(argparse.RawDescriptionHelpFormatter, ProjectHelpFormatter):
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


class ActionCommand(OfflineCommand):
    """A command with sub-actions, ``scrapy NAME ACTION OPERAND...``, under one ``--help``.

    A subclass sets ``name``, ``actions`` (action: (operands, what it does), in --help's order),
    ``about`` and ``examples`` for the help, ``variadic`` (the actions whose last operand may repeat),
    and defines ``act``. ``run`` refuses an unknown option or action and a wrong operand count with a
    usage error (exit code 2) before anything heavy is imported, sets up Scrapy's logging (unless
    ``sets_up_logging`` is False) and calls ``act(action, operands, opts)``.
    """

    name = ""
    actions: dict[str, tuple[list[str], str]] = {}
    about = ""
    examples: tuple[str, ...] = ()
    variadic: frozenset[str] = frozenset()
    sets_up_logging = True

    def syntax(self) -> str:
        return "[options] ACTION [ARGUMENT ...]"

    def long_desc(self) -> str:
        examples = "\n\nExamples:\n" + "\n".join(f"  {line}" for line in self.examples) if self.examples else ""
        return f"{self.about}\n\nActions:\n{actions_help(self.actions)}{examples}"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.formatter_class = ActionsHelpFormatter

    def perform(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        refuse_unknown_options(args)
        action, operands = split_action(args, self.actions)
        wanted = self.operands_wanted(action, opts)
        if len(operands) != len(wanted) and not (action in self.variadic and len(operands) > len(wanted)):
            raise UsageError(f"usage: scrapy {self.name} {' '.join([action, *wanted])}", print_help=False)
        if self.sets_up_logging:
            configure_logging(self.settings)
        self.act(action, operands, opts)

    def operands_wanted(self, action: str, opts: argparse.Namespace) -> list[str]:
        """The operands ``action`` takes (an option may change them: ``classifier train --from-catalog``)."""
        return self.actions[action][0]

    def act(self, action: str, operands: list[str], opts: argparse.Namespace) -> None:
        raise NotImplementedError


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
