#!/usr/bin/env bash
# Cross-language: a task published with Python's .delay() runs in a Node
# worker and the other way round, on the embedded backend and on Redis, with
# the idempotency key honoured across languages. Uses the packages the
# Python and Node suites installed (tests/run.sh runs them first).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
python="$root/.pillarbox-test/python-venv/bin/python"
export NODE_PATH="${NODE_PATH:-$root/.pillarbox-test/node-app/node_modules}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for url in "sqlite://$work/tasks.db" "${PILLARBOX_REDIS_URL:-redis://127.0.0.1:6390}"; do
  topic="xlang.$RANDOM$RANDOM"
  out="$work/out-$topic"
  echo "on $url: Python publishes, Node works"
  "$python" tests/cross-language/python_side.py publish "$url" "$topic"
  node tests/cross-language/node_side.js work "$url" "$topic" "$out" 2
  echo "on $url: Node publishes, Python works"
  node tests/cross-language/node_side.js publish "$url" "$topic"
  "$python" tests/cross-language/python_side.py work "$url" "$topic" "$out" 2
  expected=$'node says hello from python?\npython says hello from node.'
  if [ "$(cat "$out")" != "$expected" ]; then
    echo "cross-language: expected"; echo "$expected"; echo "got"; cat "$out"
    exit 1
  fi
done
echo "cross-language: passed"
