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

if [ "${NOTIFIER_SKIP_NODE:-0}" != 1 ] && [ -f client_examples/package.json ]; then
  if ! command -v npm >/dev/null; then
    echo "npm is required for the JavaScript client and its tests" >&2
    exit 1
  fi
  (cd client_examples && npm ci --silent --no-audit --no-fund)
fi
