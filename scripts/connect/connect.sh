#!/usr/bin/env bash
# Starts and stops a Kafka Connect standalone worker with the Debezium PostgreSQL connector on
# its classpath, REST API on 127.0.0.1:${CONNECT_PORT:-18083}, against the broker at
# ${KAFKA_BOOTSTRAP:-127.0.0.1:${KAFKA_PORT:-9092}}. Jars come from Maven per pom.xml.
# Connectors are added and removed through the REST API (PUT /connectors/NAME/config), so one
# worker serves every connector of a test session.
#   scripts/connect/connect.sh up|down|status
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${CONNECT_PORT:-18083}"
bootstrap="${KAFKA_BOOTSTRAP:-127.0.0.1:${KAFKA_PORT:-9092}}"
cache="${CONNECT_CACHE_DIR:-$root/.cache/connect}"
lib="$cache/lib"
run="$cache/run-$port"
pidfile="$run/connect.pid"
logfile="${CONNECT_LOG_FILE:-$run/connect.log}"
timeout_s="${CONNECT_START_TIMEOUT:-120}"
url="http://127.0.0.1:$port"

# shellcheck source=scripts/lib/maven.sh
. "$root/scripts/lib/maven.sh"

say() { echo "connect: $*" >&2; }

resolve() {
  resolve_jars "Kafka Connect and Debezium"
}

# Ready means the worker answers and has found the Debezium connector class.
ready() {
  curl -fsS -m 2 "$url/connector-plugins" 2>/dev/null | grep -q 'PostgresConnector'
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

up() {
  resolve
  if running_pid >/dev/null && ready; then
    say "already running on $url (pid $(cat "$pidfile"))"; return 0
  fi
  if ready; then say "a worker already answers on $url"; return 0; fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    say "127.0.0.1:$port is taken by something that is not this worker; set CONNECT_PORT"; exit 1
  fi
  mkdir -p "$run"
  cat > "$run/worker.properties" <<PROPS
bootstrap.servers=$bootstrap
listeners=http://127.0.0.1:$port
rest.advertised.host.name=127.0.0.1
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
offset.storage.file.filename=$run/offsets.dat
offset.flush.interval.ms=1000
plugin.discovery=only_scan
PROPS
  local java_opts=(-Xms128m -Xmx${CONNECT_HEAP:-512m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/log4j2.xml"
    -Dconnect.log.file="$logfile")
  say "starting worker on $url against $bootstrap (log: $logfile)"
  nohup java "${java_opts[@]}" -cp "$lib/*" org.apache.kafka.connect.cli.ConnectStandalone \
    "$run/worker.properties" >>"$logfile" 2>&1 </dev/null &
  echo $! > "$pidfile"
  local start=$SECONDS
  until ready; do
    if ! running_pid >/dev/null; then say "worker exited, see $logfile"; tail -30 "$logfile" >&2; exit 1; fi
    if (( SECONDS - start > timeout_s )); then say "not ready after ${timeout_s}s, see $logfile"; down; exit 1; fi
    sleep 0.5
  done
  say "ready on $url after $((SECONDS - start))s"
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
  # Source offsets go with the worker: the next one starts every connector afresh.
  rm -f "$pidfile" "$run/offsets.dat"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if ready; then say "up on $url"; else say "down"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
