#!/usr/bin/env bash
# Installs rabbitmq-server if missing (Debian package) and starts a private
# node for the tests on 127.0.0.1:${PILLARBOX_AMQP_PORT:-5673}, TLS on the
# next port with a private CA in .pillarbox-test/rabbitmq/tls (Erlang
# distribution and epmd on loopback too), data under .pillarbox-test/rabbitmq.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/lib/apt.sh
port="${PILLARBOX_AMQP_PORT:-5673}"
if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  echo "installing rabbitmq-server"
  # The package tries to start its own service; there may be no init system.
  apt_install rabbitmq-server || true
  command -v rabbitmqctl >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmqctl ] || { echo "rabbitmq-server did not install" >&2; exit 1; }
fi
# The scripts themselves, not /usr/sbin wrappers that switch to the rabbitmq user.
export PATH="/usr/lib/rabbitmq/bin:$PATH"
base="$PWD/.pillarbox-test/rabbitmq"
mkdir -p "$base"
export RABBITMQ_NODENAME="pillarbox@localhost"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$port"
export RABBITMQ_DIST_PORT="$((port + 20000))"
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_MNESIA_BASE="$base/mnesia"
export RABBITMQ_LOG_BASE="$base/log"
export RABBITMQ_PID_FILE="$base/rabbitmq.pid"
export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
export RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
export RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config"
# Quorum queues report their figures every 100 ms instead of 5 s.
echo "[{rabbit, [{quorum_tick_interval, 100}]}]." > "$base/advanced.config"
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
mgmt_port="${PILLARBOX_AMQP_MANAGEMENT_PORT:-15673}"
# The management plugin serves queue figures AMQP itself does not give
# (messages delivered and not yet acked).
echo "[rabbitmq_management]." > "$base/enabled_plugins"
# TLS on port+1 with a private CA, for the amqps:// test.
tls_port="$((port + 1))"
tls="$base/tls"
if [ ! -f "$tls/server.pem" ]; then
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=pillarbox-test-ca -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
    echo "subjectAltName=IP:127.0.0.1" > san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -extfile san.ext -out server.pem 2>/dev/null
  )
fi
# Loopback only; the guest user may only connect from loopback anyway.
cat > "$base/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
listeners.ssl.default = 127.0.0.1:$tls_port
ssl_options.cacertfile = $tls/ca.pem
ssl_options.certfile = $tls/server.pem
ssl_options.keyfile = $tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
loopback_users.guest = true
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt_port
# Queue figures (in flight) refreshed every 100 ms instead of 5 s.
collect_statistics_interval = 100
CONF
if rabbitmqctl -n "$RABBITMQ_NODENAME" status >/dev/null 2>&1; then
  echo "rabbitmq already running on 127.0.0.1:$port"
  exit 0
fi
rabbitmq-server -detached
started=""
for _ in $(seq 1 240); do
  # rabbitmqctl fails at once until the node has registered; keep asking.
  if rabbitmqctl -n "$RABBITMQ_NODENAME" await_startup >/dev/null 2>&1; then started=1; break; fi
  sleep 0.5
done
if [ -z "$started" ]; then
  echo "rabbitmq did not start; log:" >&2
  tail -30 "$base"/log/*.log >&2 || true
  exit 1
fi
for _ in $(seq 1 120); do
  (exec 3<>"/dev/tcp/127.0.0.1/$mgmt_port") 2>/dev/null && break
  sleep 0.5
done
echo "rabbitmq $(rabbitmqctl -n "$RABBITMQ_NODENAME" version 2>/dev/null) on 127.0.0.1:$port"
