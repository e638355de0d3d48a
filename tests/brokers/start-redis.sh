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
if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
  echo "redis already running on 127.0.0.1:$port"
  exit 0
fi
redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
  --appendonly yes --appendfsync everysec --save "" --protected-mode yes
for _ in $(seq 1 100); do
  if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
    echo "redis $(redis-server --version | awk '{print $3}') on 127.0.0.1:$port"
    exit 0
  fi
  sleep 0.1
done
echo "redis did not start; log:" >&2
tail -20 "$dir/redis.log" >&2
exit 1
