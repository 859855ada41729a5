#!/usr/bin/env bash
# test/clients/node.sh -- the tests of clients/node (node_test.mjs).
# Run by test/run while its cluster is up (env PGHOST, PGPORT, PGUSER,
# TJ_SCRATCH); exit 0 = every case passed.  Copies clients/node into
# $TJ_SCRATCH/node-tree (never installing into the repository tree),
# installs its locked dependencies there with `npm ci`, type-checks the
# JSDoc types with tsc, then runs the cases.  About 40 s.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$HERE/../..
# The layout of the repository, as far as the tests need it: clients/node
# (with node_modules), its tests in clients/node/test, examples/.
DEST=${TJ_SCRATCH:?TJ_SCRATCH must name a scratch directory}/node-tree
rm -rf "$DEST"
mkdir -p "$DEST/clients/node/test" "$DEST/examples"
cp -R "$REPO"/clients/node/package.json "$REPO"/clients/node/package-lock.json \
    "$REPO"/clients/node/tsconfig.json "$REPO"/clients/node/src "$DEST/clients/node/"
cp "$HERE"/node_test.mjs "$HERE"/node_worker.mjs "$DEST/clients/node/test/"
cp "$REPO"/examples/node_worker.js "$REPO"/examples/package.json "$DEST/examples/"
cd "$DEST/clients/node"
export npm_config_cache=$TJ_SCRATCH/npm-cache npm_config_update_notifier=false
timeout 120 npm ci --no-audit --no-fund --loglevel=error
timeout 60 npx --no-install tsc -p .
echo "tsc: the JSDoc types check"
exec timeout 170 node test/node_test.mjs "$@"
