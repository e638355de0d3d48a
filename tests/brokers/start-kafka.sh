#!/usr/bin/env bash
# A real Apache Kafka (3.9.1, KRaft, one combined broker and controller) from
# Maven Central's jars and Java 17, on 127.0.0.1:${PILLARBOX_KAFKA_PORT:-19092}.
# Up in about 5 s. Topics are created by the backend (auto-creation is off,
# so a typo is an error rather than a new topic).
set -euo pipefail
here="$(cd "$(dirname "$0")/kafka" && pwd)"
root="$(cd "$here/../../.." && pwd)"
source "$root/tests/lib/apt.sh"
port="${PILLARBOX_KAFKA_PORT:-19092}"
base="$root/.pillarbox-test/kafka"
mkdir -p "$base"
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || apt_install maven
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "kafka already running on 127.0.0.1:$port"
  exit 0
fi
if [ ! -f "$base/lib/.complete" ]; then
  # The published POM carries no logging binding; ours adds slf4j-reload4j.
  (cd "$here" && mvn -q -B dependency:copy-dependencies -DoutputDirectory="$base/lib" -DincludeScope=runtime)
  touch "$base/lib/.complete"
fi
cat > "$base/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((port + 1))
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1)),SASL_PLAINTEXT://127.0.0.1:$((port + 2))
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$((port + 2))
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
# An authenticated listener for the SASL test (test-only credentials).
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-test" user_admin="admin-test" user_alice="alice-test" user_carol="p+ss&w=rd";
log.dirs=$base/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# Many small topics in the test suite: keep per-partition files small.
log.segment.bytes=16777216
log.index.size.max.bytes=1048576
auto.create.topics.enable=false
PROPS
# 1 GiB of heap: with 512 MiB the node ran out of memory after a day of
# test runs and benchmarks on one start (thousands of topics and partitions).
java_opts=(-Xmx1g "-Dlog4j.configuration=file:$here/log4j.properties" -cp "$base/lib/*")
# A fresh log every start: test topics never pile up across runs.
rm -rf "$base/data"
id="$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid | tail -1)"
java "${java_opts[@]}" kafka.tools.StorageTool format -t "$id" -c "$base/server.properties" >/dev/null
nohup java "${java_opts[@]}" kafka.Kafka "$base/server.properties" > "$base/kafka.log" 2>&1 &
echo $! > "$base/kafka.pid"
for _ in $(seq 1 120); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "kafka 3.9.1 on 127.0.0.1:$port (SASL/PLAIN on $((port + 2)))"
    exit 0
  fi
  sleep 0.5
done
echo "kafka did not start; log:" >&2
tail -30 "$base/kafka.log" >&2
exit 1
