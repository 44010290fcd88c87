#!/usr/bin/env bash
# Create .venv at the repo root from the project's own files, installing any Debian packages first.
# Idempotent: a stamp file records the hash of pyproject.toml, so a second run is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=()   # none needed yet; the wiki browser path (issue 5) will add chromium

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
stamp=".venv/.installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v "is ignored" || true
.venv/bin/python -c "import scrapy, PIL, sqlite_utils, aiohttp, pytest" \
    || { echo "setup: the virtual environment is incomplete" >&2; exit 1; }
echo "$want" > "$stamp"
