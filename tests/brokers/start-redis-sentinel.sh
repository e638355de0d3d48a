#!/usr/bin/env bash
# Starts a private Redis Sentinel setup for the tests: a primary and a
# replica (127.0.0.1, ports ${PILLARBOX_REDIS_SENTINEL_PORT:-7201} and the
# next) watched by three sentinels (ports 27201-27203 by default) under the
# name `pillarbox`, down after 1 s, append-only, data under
# .pillarbox-test/redis-sentinel. Idempotent: what is up is kept; a node
# started again rejoins (the sentinels make it the current primary's
# replica). Installs redis-server like start-redis.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/lib/apt.sh
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
first="${PILLARBOX_REDIS_SENTINEL_PORT:-7201}"
second=$((first + 1))
root="$PWD/.pillarbox-test/redis-sentinel"
up() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]; }

# The node the sentinels last named primary (the first one before any failover).
primary=$(redis-cli -h 127.0.0.1 -p $((first + 20000)) sentinel get-master-addr-by-name pillarbox 2>/dev/null | sed -n 2p || true)
primary=${primary:-$first}
for port in $first $second; do
  up "$port" && continue
  mkdir -p "$root/$port"
  replica=()
  [ "$port" = "$primary" ] || replica=(--replicaof 127.0.0.1 "$primary")
  redis-server --bind 127.0.0.1 --port "$port" --dir "$root/$port" --daemonize yes \
    --pidfile "$root/$port/redis.pid" --logfile "$root/$port/redis.log" \
    --appendonly yes --appendfsync everysec --save "" --protected-mode yes "${replica[@]}"
done
for n in 0 1 2; do
  port=$((first + 20000 + n))
  up "$port" && continue
  mkdir -p "$root/s$port"
  conf="$root/s$port/sentinel.conf"
  # A sentinel rewrites its file as it learns: write it only the first time.
  [ -f "$conf" ] || cat >"$conf" <<CONF
bind 127.0.0.1
port $port
dir $root/s$port
sentinel monitor pillarbox 127.0.0.1 $first 2
sentinel down-after-milliseconds pillarbox 1000
sentinel failover-timeout pillarbox 5000
sentinel parallel-syncs pillarbox 1
CONF
  redis-server "$conf" --sentinel --daemonize yes --pidfile "$root/s$port/sentinel.pid" --logfile "$root/s$port/sentinel.log"
done
# Ready: every node answers, the sentinels agree on a primary that has its replica.
for _ in $(seq 1 600); do
  named=$(redis-cli -h 127.0.0.1 -p $((first + 20000)) sentinel get-master-addr-by-name pillarbox 2>/dev/null | sed -n 2p || true)
  if [ -n "$named" ] && up "$first" && up "$second" &&
    [ "$(redis-cli -h 127.0.0.1 -p "$named" info replication | tr -d '\r' | sed -n 's/^connected_slaves://p')" = "1" ]; then
    echo "redis sentinel: primary 127.0.0.1:$named, a replica, 3 sentinels on $((first + 20000))-$((first + 20002))"
    exit 0
  fi
  sleep 0.1
done
echo "the redis sentinel setup did not get ready" >&2
tail -5 "$root"/s*/sentinel.log >&2 || true
exit 1
