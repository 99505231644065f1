#!/usr/bin/env bash
# Sets up (if needed) and runs the whole test suite: ruff (lint and format), mypy --strict,
# then the Python tests (which also run the JavaScript client tests and examples under Node,
# Chromium, nginx, Redis and PostgreSQL), then the wire layer's tests on the lowest aiohttp
# the package allows (scripts/test-aiohttp-floor.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/services.sh
.venv/bin/ruff check notifier tests benchmarks client_examples
.venv/bin/ruff format --check --quiet notifier tests benchmarks client_examples
.venv/bin/mypy
.venv/bin/pytest "$@"
./scripts/test-aiohttp-floor.sh "$@"
