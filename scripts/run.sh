#!/usr/bin/env bash
# Sets up (if needed) and runs the service on its embedded defaults: one process, SQLite in
# ./notifier-data, development-mode JWT secret unless NOTIFIER_JWT_SECRET is set.
set -euo pipefail
cd "$(dirname "$0")/.."
NOTIFIER_SKIP_TEST_SERVICES=1 ./scripts/setup.sh  # browser and servers are for tests only
exec .venv/bin/notifier serve "$@"
