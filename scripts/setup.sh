#!/usr/bin/env bash
# Create .venv at the repo root from the project's own files, installing any Debian packages first.
# Idempotent: a stamp file records the hash of pyproject.toml, so a second run is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server: distributed crawls (SCHEDULER_BACKEND=redis) and their test start one on loopback.
APT_PACKAGES=(redis-server chromium)   # chromium: the report's browser test and `isaac_wiki -a render=browser`

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

# nagadomi's lbpcascade_animeface.xml (MIT) ships in no package: fetch it where the network allows,
# check its sha256, and otherwise leave it to ../shared/models/ (tests) or a message at crawl start.
CASCADE=models/weights/lbpcascade_animeface.xml
CASCADE_URL=https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/4433ab1ae1166ea75acfe99eb0f18709dac329a0/lbpcascade_animeface.xml
CASCADE_SHA256=9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30
if [ ! -f "$CASCADE" ] && command -v curl >/dev/null; then
    mkdir -p models/weights
    if curl -fsSL --connect-timeout 5 --max-time 20 -o "$CASCADE.part" "$CASCADE_URL" 2>/dev/null \
        && echo "$CASCADE_SHA256  $CASCADE.part" | sha256sum -c --quiet - 2>/dev/null; then
        mv "$CASCADE.part" "$CASCADE"
    else
        rm -f "$CASCADE.part"
        echo "setup: could not fetch $CASCADE (no network?); the face stage uses ../shared/models/ or animeface alone" >&2
    fi
fi

PYTHON="${PYTHON:-python3}"
stamp=".venv/.installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,ops,review,browser]' 2>&1 \
    | grep -v "is ignored" || true
.venv/bin/python -c "import scrapy, PIL, sqlite_utils, aiohttp, pytest, scrapyd, scrapy_redis, redis, playwright, scrapy_playwright, datasette, onnxruntime, sklearn, onnx, ruff, mypy" \
    || { echo "setup: the virtual environment is incomplete" >&2; exit 1; }
echo "$want" > "$stamp"
