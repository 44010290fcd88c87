"""What the project's own commands (``crawler/commands/``) share.

It lives outside ``crawler/commands/`` on purpose: Scrapy registers every ``ScrapyCommand`` subclass
it finds in that package as a command named after its module.
"""

from __future__ import annotations

import argparse
import textwrap

from scrapy.commands import ScrapyCommand, ScrapyHelpFormatter


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
