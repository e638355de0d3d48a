#!/usr/bin/env bash
# Empties the test node started by start-rabbitmq.sh: every queue, exchange
# and user goes (guest comes back). A suite leaves thousands of quorum
# queues behind, and with the 100 ms ticks the tests need, a node holding
# them keeps most of a core busy, which the next suite and any benchmark
# would pay for. About 20 s.
set -euo pipefail
export PATH="/usr/lib/rabbitmq/bin:$PATH"
node="pillarbox@localhost"
rabbitmqctl -n "$node" status >/dev/null 2>&1 || exit 0
rabbitmqctl -n "$node" stop_app >/dev/null
rabbitmqctl -n "$node" reset >/dev/null
rabbitmqctl -n "$node" start_app >/dev/null
echo "rabbitmq reset"
