"""Every command's ``--help``, as ``scrapy NAME --help`` builds it: headings only where argparse
puts a section, so a wrapped help line that ends in a colon is not turned into an underlined title."""

from __future__ import annotations

import re

import pytest
from scrapy.cmdline import ScrapyArgumentParser, _get_commands_dict
from scrapy.commands import ScrapyHelpFormatter
from scrapy.utils.project import get_project_settings

from crawler.command_base import ProjectHelpFormatter

UNDERLINE = re.compile(r"^(=+|-+)$")


def commands() -> dict:
    return _get_commands_dict(get_project_settings(), inproject=True)


def help_text(name: str, formatter: type | None = None) -> tuple[str, set[str]]:
    """The help text (with ``formatter`` in place of the command's own, if given), and the headings it
    should have: Usage and each section with options in it."""
    command = commands()[name]
    parser = ScrapyArgumentParser(formatter_class=ScrapyHelpFormatter, usage=f"scrapy {name} {command.syntax()}",
                                  conflict_handler="resolve", description=command.long_desc())
    command.settings = get_project_settings()
    command.add_options(parser)
    if formatter is not None:
        parser.formatter_class = formatter
    sections = {group.title.title() for group in parser._action_groups if group._group_actions and group.title}
    return parser.format_help(), {"Usage", *sections}


def headings(text: str) -> list[str]:
    lines = text.splitlines()
    return [above for above, line in zip(lines, lines[1:]) if UNDERLINE.match(line)]


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_heading_of_a_commands_help_is_a_section(name):
    text, sections = help_text(name)
    assert set(headings(text)) == sections, text
    assert "Options" in sections


def test_a_help_line_ending_in_a_colon_stays_as_written():
    text, _ = help_text("export")
    lines = text.splitlines()
    colons = [i for i, line in enumerate(lines) if line.endswith(":") and line.startswith("  ")]
    assert colons and not any(UNDERLINE.match(lines[i + 1]) for i in colons)  # wrapped help, not headings
    assert "kohya: num_repeats of every class folder" in text


def test_scrapys_own_formatter_is_the_one_that_garbles():
    """What the project's formatter fixes: with Scrapy's, the same help gets a made-up heading."""
    text, sections = help_text("export", ScrapyHelpFormatter)
    made_up = set(headings(text)) - sections
    assert made_up and all(heading.startswith("  --") for heading in made_up), made_up  # an option's own line
    assert issubclass(ProjectHelpFormatter, ScrapyHelpFormatter)
