#!/usr/bin/env bash
# rabbitmqctl against the test node started by start-rabbitmq.sh, for tests
# that change a node setting for their duration (and put it back):
#   bash tests/brokers/rabbitmqctl.sh eval 'application:get_env(rabbit, consumer_timeout).'
set -euo pipefail
export PATH="/usr/lib/rabbitmq/bin:$PATH"
exec rabbitmqctl -n "pillarbox@localhost" "$@"
