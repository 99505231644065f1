#!/usr/bin/env bash
# Builds the wheel into $1 (default ./dist): the Python package with everything the service
# serves, the dashboard's scripts included (setup.py copies them in). Node and npm are needed
# here only; the wheel installs and runs without them. deploy/Dockerfile runs this script, and
# tests/test_packaging.py runs it the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist}")
PYTHON=${PYTHON:-python3}
if [ ! -d node_modules/socket.io-client ]; then
  npm ci --omit=dev --silent --no-audit --no-fund
fi
rm -rf build
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$out" .
rm -rf build
ls "$out"/notifier-*.whl
