#!/usr/bin/env bash
# Sets up (if needed) and runs the service on its embedded defaults: one process, SQLite in
# ./notifier-data, development-mode JWT secret unless NOTIFIER_JWT_SECRET is set.
set -euo pipefail
cd "$(dirname "$0")/.."
NOTIFIER_SKIP_BROWSER=1 ./scripts/setup.sh  # the browser is for tests only
exec .venv/bin/notifier serve "$@"
