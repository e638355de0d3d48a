#!/usr/bin/env bash
# The Node package, as a user gets it: `npm install ./bindings-node` into a
# fresh folder (its install script builds the addon with cargo), `require`
# and `import` both, the typed example checked by tsc and run, then the
# package's tests (node --test) against the brokers tests/run.sh started.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

if ! command -v node >/dev/null 2>&1; then
  source tests/lib/apt.sh
  apt_install nodejs npm
fi
node --version

app=.pillarbox-test/node-app
rm -rf "$app"
mkdir -p "$app"
cd "$app"
npm init -y >/dev/null
# The dev profile with every backend, as `cargo test --all-features` built
# the core: cargo reuses that build instead of compiling a release one.
started=$(date +%s)
PILLARBOX_NODE_PROFILE=dev npm install --no-audit --no-fund --loglevel=error "$root/bindings-node" typescript@5.9.3 @types/node@20
echo "npm install ./bindings-node: $(( $(date +%s) - started ))s"

echo "require and import"
node -e "const p = require('pillarbox'); if (typeof p.connect !== 'function') process.exit(1)"
node --input-type=module -e "import { connect, Worker } from 'pillarbox'; if (typeof connect !== 'function' || typeof Worker !== 'function') process.exit(1)"

echo "npx pillarbox (the command, from the package)"
npx --no-install pillarbox --version

echo "tsc (the typed example) and the example itself"
cp "$root/examples/node/quickstart.ts" .
npx tsc --strict --module nodenext --moduleResolution nodenext --target es2022 --types node --outDir out quickstart.ts
node out/quickstart.js >/dev/null

cd "$root/bindings-node"
node --test --test-concurrency=1 test/*.test.js
