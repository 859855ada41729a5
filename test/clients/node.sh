#!/usr/bin/env bash
# test/clients/node.sh -- the tests of clients/node (node_test.mjs).
# Run by test/run while its cluster is up (env PGHOST, PGPORT, PGUSER,
# TJ_SCRATCH); exit 0 = every case passed.  Copies clients/node into
# $TJ_SCRATCH/node-client (never installing into the repository tree),
# installs its locked dependencies there with `npm ci`, type-checks the
# JSDoc types with tsc, then runs the cases.  About 40 s.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRCDIR=$HERE/../../clients/node
DEST=${TJ_SCRATCH:?TJ_SCRATCH must name a scratch directory}/node-client
rm -rf "$DEST"
mkdir -p "$DEST/test"
cp -R "$SRCDIR/package.json" "$SRCDIR/package-lock.json" "$SRCDIR/tsconfig.json" "$SRCDIR/src" "$DEST/"
cp "$HERE"/node_test.mjs "$HERE"/node_worker.mjs "$DEST/test/"
cd "$DEST"
export npm_config_cache=$TJ_SCRATCH/npm-cache npm_config_update_notifier=false
timeout 120 npm ci --no-audit --no-fund --loglevel=error
timeout 60 npx --no-install tsc -p .
echo "tsc: the JSDoc types check"
exec timeout 170 node test/node_test.mjs "$@"
