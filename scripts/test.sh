#!/usr/bin/env bash
# Sets up (if needed) and runs the whole test suite: ruff, then the Python tests (which also
# run the JavaScript client tests and examples under Node, Chromium, nginx, Redis and
# PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/services.sh
.venv/bin/ruff check notifier tests benchmarks client_examples
exec .venv/bin/pytest "$@"
