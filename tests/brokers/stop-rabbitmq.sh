#!/usr/bin/env bash
# Stops the test node started by start-rabbitmq.sh (data is kept).
set -euo pipefail
export PATH="/usr/lib/rabbitmq/bin:$PATH"
rabbitmqctl -n pillarbox@localhost stop >/dev/null 2>&1 || true
