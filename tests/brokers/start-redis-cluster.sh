#!/usr/bin/env bash
# Starts a private Redis Cluster for the tests: three primaries and three
# replicas on 127.0.0.1, ports ${PILLARBOX_REDIS_CLUSTER_PORT:-7101} and the
# five after it, append-only, a 2 s node timeout (a dead primary's replica
# takes over within seconds), data under .pillarbox-test/redis-cluster.
# Idempotent: nodes already up are kept, and a cluster already made is not
# made again. Installs redis-server like start-redis.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/lib/apt.sh
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
first="${PILLARBOX_REDIS_CLUSTER_PORT:-7101}"
ports=$(seq "$first" $((first + 5)))
root="$PWD/.pillarbox-test/redis-cluster"
up() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]; }
state() { redis-cli -h 127.0.0.1 -p "$first" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p'; }

for port in $ports; do
  up "$port" && continue
  mkdir -p "$root/$port"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$root/$port" --daemonize yes \
    --pidfile "$root/$port/redis.pid" --logfile "$root/$port/redis.log" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --appendonly yes --appendfsync everysec --save "" --protected-mode yes
done
for port in $ports; do
  for _ in $(seq 1 300); do up "$port" && break; sleep 0.1; done
  up "$port" || { echo "redis cluster node $port did not start" >&2; tail -20 "$root/$port/redis.log" >&2; exit 1; }
done

# A node that knows no other has not joined a cluster yet: make it.
known=$(redis-cli -h 127.0.0.1 -p "$first" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
if [ "$known" = "1" ]; then
  nodes=$(for port in $ports; do printf '127.0.0.1:%s ' "$port"; done)
  # shellcheck disable=SC2086
  redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$root/create.log" 2>&1 ||
    { cat "$root/create.log" >&2; exit 1; }
fi
for _ in $(seq 1 600); do
  if [ "$(state)" = "ok" ]; then
    echo "redis cluster (3 primaries, 3 replicas) on 127.0.0.1:$first-$((first + 5))"
    exit 0
  fi
  sleep 0.1
done
echo "the redis cluster did not reach state ok: $(redis-cli -h 127.0.0.1 -p "$first" cluster info | head -3)" >&2
exit 1
