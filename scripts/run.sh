#!/usr/bin/env bash
# Sets up (if needed) and runs the service on its embedded defaults: one process, SQLite in
# ./notifier-data, development-mode JWT secret unless NOTIFIER_JWT_SECRET is set.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh run  # only what running needs: no test tools, browser or servers
exec .venv/bin/notifier serve "$@"
