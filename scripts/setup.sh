#!/usr/bin/env bash
# Sets up a checkout. Idempotent.
#   setup.sh run   only what running the service needs: the package, and the dashboard's
#                  socket.io client from npm when npm is there;
#   setup.sh       (or `setup.sh test`) everything the tests need on a fresh machine: the
#                  package with its test tools, all Node packages, and the Debian packages below.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-test}

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
hash=$(cat pyproject.toml setup.py | sha1sum | cut -c1-12)
extras=""
[ "$MODE" = test ] && extras="[test]"
# A test install covers running too.
if [ ! -f ".venv/.installed-test-$hash" ] && [ ! -f ".venv/.installed-$MODE-$hash" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".$extras"
  rm -f .venv/.installed-*
  touch ".venv/.installed-$MODE-$hash"
fi

if [ "$MODE" = run ]; then
  # The dashboard's socket.io client. Without npm the service still runs (the installed wheel
  # carries the script; see docs/deployment.md).
  if [ ! -d node_modules/socket.io-client ]; then
    if command -v npm >/dev/null; then
      npm ci --omit=dev --silent --no-audit --no-fund
    else
      echo "npm not found: the service runs, but the dashboard's scripts are missing" >&2
    fi
  fi
  exit 0
fi

# The JavaScript client's tests and the browser driver (playwright-core) need the dev packages.
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  command -v npm >/dev/null || { echo "npm (Node 20+) is required for the tests" >&2; exit 1; }
  npm ci --silent --no-audit --no-fund
fi

# What the tests run besides Python and Node, from Debian's packages when missing: Chromium for
# the browser tests (playwright-core never downloads one), nginx in front of the cluster tests,
# redis-server and PostgreSQL for the Redis broker and PostgreSQL store tests.
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
