#!/usr/bin/env bash
# `make demo`: Kafka (started here unless one already runs), then `sync-service demo` on a
# fresh SQLite store. Ctrl-C stops the demo and the broker it started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
port="${KAFKA_PORT:-9092}"
started=0
if ! scripts/kafka/kafka.sh reachable 2>/dev/null; then
  scripts/kafka/kafka.sh up
  started=1
fi
state="$(mktemp -d "${TMPDIR:-/tmp}/sync-service-demo.XXXXXX")"
cleanup() {
  rm -rf "$state"
  if [ "$started" = 1 ]; then scripts/kafka/kafka.sh down; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export SYNC_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$port"
export SYNC_DATABASE_URL="sqlite:///$state/demo.db"
export SYNC_CONFIG_FILE="${SYNC_CONFIG_FILE:-$root/examples/resources.yaml}"
export SYNC_EVENTS_TOPICS="${SYNC_EVENTS_TOPICS:-demo-model-changes}"
export SYNC_HTTP_PORT="${SYNC_HTTP_PORT:-8080}"
# The demo receiver listens on loopback, which destinations may not reach by default.
export SYNC_EGRESS_ALLOW="${SYNC_EGRESS_ALLOW:-127.0.0.1/32}"
# The service stops on SIGINT; the trap above then stops the broker.
.venv/bin/sync-service demo || true
