#!/usr/bin/env bash
# Installs redis-server if missing (Debian package) and starts a private
# instance for the tests on 127.0.0.1:${PILLARBOX_REDIS_PORT:-6390}, with
# append-only persistence, data under .pillarbox-test/redis. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/lib/apt.sh
port="${PILLARBOX_REDIS_PORT:-6390}"
# openssl makes the certificates of the TLS test.
command -v openssl >/dev/null 2>&1 || apt_install openssl
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server"
  apt_install redis-server
fi
dir="$PWD/.pillarbox-test/redis"
mkdir -p "$dir"
# Ready means PONG: while it loads its append-only file, a restarted
# server answers PING with a LOADING error (and every command with one).
ready() { [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]; }
if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
  for _ in $(seq 1 600); do
    ready && { echo "redis already running on 127.0.0.1:$port"; exit 0; }
    sleep 0.1
  done
  echo "redis on 127.0.0.1:$port does not answer PONG" >&2
  exit 1
fi
redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
  --appendonly yes --appendfsync everysec --save "" --protected-mode yes
for _ in $(seq 1 600); do
  if ready; then
    echo "redis $(redis-server --version | awk '{print $3}') on 127.0.0.1:$port"
    exit 0
  fi
  sleep 0.1
done
echo "redis did not start; log:" >&2
tail -20 "$dir/redis.log" >&2
exit 1
