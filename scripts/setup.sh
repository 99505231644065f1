#!/usr/bin/env bash
# Sets up everything notifier's tests need on a fresh machine: a virtualenv with the package
# and its test tools, the Node packages the JavaScript client and its tests use, and the Debian
# packages below. Idempotent.
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

# What the tests run besides Python and Node, from Debian's packages when missing: Chromium for
# the dashboard's browser test (playwright-core never downloads one), nginx in front of the
# cluster tests, redis-server and PostgreSQL for the Redis broker and PostgreSQL store tests.
if [ "${NOTIFIER_SKIP_TEST_SERVICES:-0}" != 1 ]; then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v redis-server >/dev/null || missing+=(redis-server)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    elif command -v sudo >/dev/null; then
      sudo apt-get update -qq
      sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "the tests need these Debian packages: apt-get install ${missing[*]}" >&2
      exit 1
    fi
  fi
fi
