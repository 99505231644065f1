#!/usr/bin/env bash
# Sets up everything notifier needs on a fresh machine: a virtualenv with the package and its
# test tools, and the Node packages the JavaScript client and its tests use. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The dashboard's socket.io client script and the JavaScript tests come from these packages.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  if ! command -v npm >/dev/null; then
    echo "npm (Node 20+) is required: the dashboard serves socket.io-client from node_modules" >&2
    exit 1
  fi
  npm ci --silent --no-audit --no-fund
fi

# The dashboard's browser test drives Debian's Chromium (playwright-core never downloads one).
if [ "${NOTIFIER_SKIP_BROWSER:-0}" != 1 ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is needed for the browser test: apt-get install chromium" >&2
    exit 1
  fi
fi
