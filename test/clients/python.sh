#!/usr/bin/env bash
# test/clients/python.sh -- the tests of clients/python (python_test.py).
# Run by test/run while its cluster is up (env PGHOST, PGPORT, PGUSER,
# TJ_SCRATCH); exit 0 = every case passed.  About 30 s.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Debian's python3 holds python3-psycopg (psycopg 3); another python3 first
# in PATH may not have it.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec timeout 170 "$PY" "$HERE/python_test.py" "$@"
