#!/usr/bin/env bash
# The Node benchmark: a release build of the package installed into a folder
# of its own with the peers (BullMQ, amqplib, kafkajs), the test brokers
# started, then benches/compare.js. Figures go to standard output.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bash tests/brokers/start-redis.sh
bash tests/brokers/start-rabbitmq.sh
bash tests/brokers/start-kafka.sh
bash tests/brokers/reset-rabbitmq.sh   # what the tests left would slow the node
app=.pillarbox-test/node-bench
mkdir -p "$app"
cd "$app"
[ -f package.json ] || npm init -y >/dev/null
npm install --no-audit --no-fund --loglevel=error "$root/bindings-node" bullmq@6.7.6 ioredis@5.9.3 amqplib@2.3.1 kafkajs@2.2.4
# The package is linked, not copied, and npm skips its install script when
# nothing changed: build the addon with the release profile (what users get)
# here, whatever the tests last built.
(cd "$root/bindings-node" && node scripts/build.js)
cp "$root/bindings-node/benches/compare.js" .
node compare.js
