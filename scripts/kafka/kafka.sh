#!/usr/bin/env bash
# Starts and stops a single-node Apache Kafka broker (KRaft, broker+controller in one
# process) on 127.0.0.1:${KAFKA_PORT:-9092}, from jars that Maven resolves per pom.xml.
#   scripts/kafka/kafka.sh up|down|status|kill|start
# `kill` ends the broker with SIGKILL and keeps its data; `start` starts it again on that
# data (a crash and a restart). KAFKA_RUN_DIR puts the run folder elsewhere than the cache.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
cache="${KAFKA_CACHE_DIR:-$root/.cache/kafka}"
lib="$cache/lib"
run="${KAFKA_RUN_DIR:-$cache/run-$port}"
pidfile="$run/kafka.pid"
logfile="${KAFKA_LOG_FILE:-$run/kafka.log}"
timeout_s="${KAFKA_START_TIMEOUT:-90}"

java_opts=(-Xms256m -Xmx"${KAFKA_HEAP:-768m}" -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$here/log4j2.xml" -Dkafka.log.file="$logfile")

say() { echo "kafka: $*" >&2; }

reachable() {
  # A metadata round trip through the broker's own client, not only an open port.
  local wait_s="${1:-1}"
  port_open || [ "$wait_s" -gt 1 ] || return 1
  java -cp "$lib/*" -Dlog4j2.configurationFile="$here/log4j2-quiet.xml" \
    "$here/Ready.java" "127.0.0.1:$port" "$wait_s" >/dev/null 2>&1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

resolve() {
  if [ -f "$lib/.resolved" ] && [ "$lib/.resolved" -nt "$here/pom.xml" ]; then return; fi
  command -v mvn >/dev/null || { say "mvn not found: install Maven (apt-get install maven)"; exit 1; }
  say "resolving the broker from Maven Central (pom: scripts/kafka/pom.xml)"
  rm -rf "$lib"
  mvn -q -B -f "$here/pom.xml" -Dmaven.repo.local="$cache/m2" \
    dependency:copy-dependencies -DoutputDirectory="$lib" -DincludeScope=runtime
  touch "$lib/.resolved"
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

up() {
  resolve
  if running_pid >/dev/null; then
    say "already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; return 0
  fi
  if port_open; then
    if reachable 5; then say "a broker already answers on 127.0.0.1:$port"; return 0; fi
    say "127.0.0.1:$port is taken by something that is not a Kafka broker; set KAFKA_PORT"; exit 1
  fi
  mkdir -p "$run"
  local data; data="$(mktemp -d "${TMPDIR:-/tmp}/sync-service-kafka-$port.XXXXXX")"
  echo "$data" > "$run/data-dir"
  write_properties "$data"
  say "formatting KRaft storage in $data"
  java "${java_opts[@]}" -cp "$lib/*" kafka.tools.StorageTool format --standalone \
    --cluster-id "$(java -cp "$lib/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
    --config "$run/server.properties" >>"$logfile" 2>&1 \
    || { say "format failed, see $logfile"; tail -20 "$logfile" >&2; exit 1; }
  launch
}

write_properties() {
  local data="$1"
  cat > "$run/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=${KAFKA_NUM_PARTITIONS:-1}
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=${KAFKA_OFFSETS_PARTITIONS:-4}
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
PROPS
}

launch() {
  say "starting broker on 127.0.0.1:$port (log: $logfile)"
  nohup java "${java_opts[@]}" -cp "$lib/*" kafka.Kafka "$run/server.properties" \
    >>"$logfile" 2>&1 </dev/null &
  echo $! > "$pidfile"
  local start=$SECONDS
  until reachable 10; do
    if ! running_pid >/dev/null; then say "broker exited, see $logfile"; tail -30 "$logfile" >&2; exit 1; fi
    if (( SECONDS - start > timeout_s )); then say "broker not ready after ${timeout_s}s, see $logfile"; down; exit 1; fi
  done
  say "ready on 127.0.0.1:$port after $((SECONDS - start))s"
}

down() {
  local pid
  if pid="$(running_pid)"; then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped (pid $pid)"
  else
    say "not running"
  fi
  rm -f "$pidfile"
  if [ -f "$run/data-dir" ]; then rm -rf "$(cat "$run/data-dir")" "$run/data-dir"; fi
}

# SIGKILL, as when the machine or the JVM dies; the data stays for `start`.
crash() {
  local pid
  if pid="$(running_pid)"; then
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    say "killed (pid $pid)"
  else
    say "not running"
  fi
  rm -f "$pidfile"
}

# Starts the broker again on the data of the last `up`.
start() {
  resolve
  if running_pid >/dev/null; then say "already running (pid $(cat "$pidfile"))"; return 0; fi
  local data; data="$(cat "$run/data-dir" 2>/dev/null || true)"
  if [ -z "$data" ] || [ ! -d "$data" ]; then say "no data to start on: use up"; exit 1; fi
  write_properties "$data"
  launch
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  kill) crash ;;
  start) start ;;
  status) resolve; if reachable; then say "up on 127.0.0.1:$port"; else say "down"; exit 1; fi ;;
  reachable) resolve; reachable ;;
  *) echo "usage: $0 up|down|status|kill|start" >&2; exit 2 ;;
esac
