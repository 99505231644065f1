#!/usr/bin/env bash
# Starts the servers the tests use when they do not answer: PostgreSQL on 127.0.0.1:5432 (the
# store tests create and drop databases of their own in it). The cluster tests start Redis,
# nginx and, for restarts, a PostgreSQL of their own.
set -euo pipefail

pg_ready() {
  if command -v pg_isready >/dev/null; then
    pg_isready -q -h 127.0.0.1 -p 5432
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

if ! pg_ready; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    echo "PostgreSQL is neither running nor installed (scripts/setup.sh installs it)" >&2
    exit 1
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 50); do pg_ready && break; sleep 0.2; done
  pg_ready || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
