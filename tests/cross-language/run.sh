#!/usr/bin/env bash
# The cross-language matrix (matrix.py): Rust, Python and Node producers and
# consumers, every ordered pair, on the embedded backend, Redis, RabbitMQ and
# Kafka, in separate processes. Uses the packages the Python and Node suites
# installed (tests/run.sh runs them first) and the brokers it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
python="$root/.pillarbox-test/python-venv/bin/python"
export NODE_PATH="${NODE_PATH:-$root/.pillarbox-test/node-app/node_modules}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The Rust agent is an example of the core, built with the test command's features.
cargo build -q --workspace --all-features --example matrix-agent
target_dir=$(cargo metadata --format-version 1 --no-deps | "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

redis=${PILLARBOX_REDIS_URL:-redis://127.0.0.1:6390}
amqp=${PILLARBOX_AMQP_URL:-amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673&stats_delay_ms=5000}
kafka=${PILLARBOX_KAFKA_URL:-kafka://127.0.0.1:19092}

# Schedulers in three languages on every backend.
cargo build -q --workspace --all-features --bin pillarbox
"$python" tests/cross-language/schedules.py \
  --rust "$target_dir/debug/pillarbox" --python "$python" --node node \
  --logs "${PILLARBOX_MATRIX_LOGS:-$work/logs}" \
  "sqlite://$work/schedules.db" "$redis" "$amqp" "$kafka"

"$python" tests/cross-language/matrix.py \
  --rust "$target_dir/debug/examples/matrix-agent" --python "$python" --node node \
  --store "$redis" --logs "${PILLARBOX_MATRIX_LOGS:-$work/logs}" \
  "sqlite://$work/matrix.db" "$redis" "$amqp" "$kafka"
