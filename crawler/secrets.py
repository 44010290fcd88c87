"""Secret settings: which settings are secrets, and how a crawl started by another process gets them.

A setting passed as ``-s NAME=VALUE`` is on the crawl's command line, which ``ps`` and
``/proc/PID/cmdline`` show to every user of the machine; a process's environment only its owner
(and root) can read. So a process that starts crawls (``ops/scheduled.py``) passes every secret
setting in one environment variable, ``CRAWL_SECRET_SETTINGS`` (JSON: name -> value), and the
``SecretSettings`` add-on (``ADDONS``) of the crawl reads it, applies it as if given on the command
line, and removes it from the environment, so the crawl's own worker processes never see it.

A secret is a setting whose name says it holds a credential (``PIXIV_PHPSESSID``, ``..._PASSWORD``,
``..._TOKEN``, ``..._COOKIE(S)``, ``..._SECRET``, ``..._API_KEY``), or one whose value is a URL with
a password in it (``REDIS_URL = "redis://:pw@host"``). The crawl never logs them, nor writes them to
the catalogue (``crawls.arguments`` records only whether a login was set).
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from core.errors import SettingError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

SECRETS_ENV = "CRAWL_SECRET_SETTINGS"
CREDENTIAL_NAME = re.compile(r"(PASSWORD|PASSWD|TOKEN|COOKIES?|SESSID|SECRET|API_KEY)$|^(PASSWORD|TOKEN|SECRET)_")


def is_secret(name: str, value: Any) -> bool:
    """Whether the setting ``name`` = ``value`` must not be put on a command line."""
    if CREDENTIAL_NAME.search(name.upper()):
        return True
    if isinstance(value, str) and "://" in value:
        try:
            return urlsplit(value).password is not None
        except ValueError:
            return False
    return False


def split_secrets(settings: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(the settings that may go on a command line, the secret ones)."""
    plain = {k: v for k, v in settings.items() if not is_secret(k, v)}
    return plain, {k: v for k, v in settings.items() if k not in plain}


def child_environment(environ: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """A crawl's environment: ``environ`` with ``secrets`` in ``CRAWL_SECRET_SETTINGS``. A variable of
    the same name as a secret (``PIXIV_PHPSESSID``, which the crawl reads too) is left out, so the
    value given here is the one the crawl uses."""
    env = {k: v for k, v in environ.items() if k not in secrets and k != SECRETS_ENV}
    return env | ({SECRETS_ENV: json.dumps(secrets)} if secrets else {})


class SecretSettings:
    """Add-on (``ADDONS``): the secret settings a parent process passed in ``CRAWL_SECRET_SETTINGS``."""

    def update_settings(self, settings: BaseSettings) -> None:
        text = os.environ.pop(SECRETS_ENV, None)
        if not text:
            return
        try:
            secrets = json.loads(text)
        except ValueError:
            secrets = None
        if not isinstance(secrets, dict):
            raise SettingError(f"{SECRETS_ENV} must hold a JSON object of setting names and values")
        for name, value in secrets.items():
            settings.set(str(name), value, priority="cmdline")
