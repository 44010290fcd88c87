"""The one base of every error the project raises on purpose, and what a command does with it.

An error a person can act on (a bad rule, a model file that is not one, an unsafe export folder)
is a ``ProjectError``: its message is one line saying what and why, ``hint`` an optional second
line saying what to do, and ``exit_code`` what the command ends with. The commands catch it in one
place (``crawler/command_base.py``, and ``scrapy crawl`` in ``crawler/commands/crawl.py``) and print
it without a traceback; anything else is a bug and keeps its traceback.

Exit codes follow the BSD sysexits spirit that the rest of the project uses: 2 is a usage or
configuration error (Scrapy's own code for a bad command line), 1 a run that failed on its data.
"""

from __future__ import annotations

EXIT_FAILED = 1  # the run failed on its data: a model that cannot load, a picture that cannot be read
EXIT_USAGE = 2  # the command line, a setting or a file the user gave is wrong (Scrapy's UsageError code)


class ProjectError(Exception):
    """An error with a one-line message for the user; ``hint`` says what to do about it."""

    exit_code = EXIT_USAGE  # a subclass sets its own
    hint = ""

    def one_line(self) -> str:
        """The message on one line (a multi-line one is joined), then the hint, if any."""
        text = " ".join(str(self).split("\n")).strip() or type(self).__name__
        return f"{text} ({self.hint})" if self.hint else text


class ArgumentError(ProjectError, ValueError):
    """An argument the user gave (a spider's ``-a NAME=VALUE``) that cannot be used; the message says which."""


class DataError(ProjectError):
    """The command line was right but the data cannot give what it asked for (a selection that matched
    nothing, too few labels to train on): one line and exit code 1, no usage banner."""

    exit_code = EXIT_FAILED


class SettingError(ProjectError, ValueError):
    """A setting whose value cannot be used (a model path that is no model); the message names it."""
