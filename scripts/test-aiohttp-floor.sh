#!/usr/bin/env bash
# The wire layer leans on private parts of aiohttp (notifier/wire/aiohttp_adapter.py); the main
# suite runs on the newest aiohttp the range in pyproject.toml allows, and this runs the wire
# layer's own tests and the protocol tests again on the lowest (its own venv, made once).
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOR=$(sed -n 's/.*"aiohttp>=\([0-9.]*\),.*/\1/p' pyproject.toml)
VENV=.venv-aiohttp-$FLOOR
PYTHON=${PYTHON:-python3}
hash=$(cat pyproject.toml setup.py | sha1sum | cut -c1-12)
if [ ! -f "$VENV/.installed-$hash" ]; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[test]" "aiohttp==$FLOOR"
  rm -f "$VENV"/.installed-*
  touch "$VENV/.installed-$hash"
fi
installed=$("$VENV/bin/python" -c "import aiohttp; print(aiohttp.__version__)")
[ "$installed" = "$FLOOR" ] || { echo "expected aiohttp $FLOOR, found $installed" >&2; exit 1; }
echo "wire layer on aiohttp $installed:"
exec "$VENV/bin/pytest" tests/test_wire_*.py tests/test_protocol.py tests/test_transports.py "$@"
