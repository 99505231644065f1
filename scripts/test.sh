#!/usr/bin/env bash
# Sets up (if needed) and runs the whole test suite: Python tests (which also run the
# JavaScript client tests and examples under Node), then ruff.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check notifier tests benchmarks client_examples
exec .venv/bin/pytest "$@"
