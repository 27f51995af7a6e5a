#!/usr/bin/env bash
# Change data capture for tests and the demo: a PostgreSQL server with logical replication on
# 127.0.0.1:${CDC_PG_PORT:-55440} (its own, never the tests' 55432 one), the broker (reused when
# one answers) and a Kafka Connect worker with the Debezium PostgreSQL connector.
#   scripts/connect/cdc.sh up|down|status
# `down` stops the worker and this PostgreSQL server, never the broker.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pg_port="${CDC_PG_PORT:-55440}"
pg_cache="${CDC_PG_CACHE_DIR:-$root/.cache/postgres}"

say() { echo "cdc: $*" >&2; }

pg() { PG_PORT="$pg_port" PG_CACHE_DIR="$pg_cache" "$root/scripts/postgres.sh" "$@"; }

# The role the connector logs in as streams changes: it needs REPLICATION.
grant_replication() {
  local data bin
  data="$(cat "$pg_cache/run-$pg_port/data-dir")"
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  local sql="ALTER ROLE sync WITH REPLICATION"
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u "${PG_SYSTEM_USER:-postgres}" -- "$bin/psql" -q -X -h "$data" \
      -p "$pg_port" -U postgres -d postgres -c "$sql") >/dev/null
  else
    "$bin/psql" -q -X -h "$data" -p "$pg_port" -U postgres -d postgres -c "$sql" >/dev/null
  fi
}

up() {
  local start=$SECONDS
  PG_SERVER_OPTIONS="-c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20" pg up
  grant_replication
  # A broker that answers is used as it is (its jars and cache are left alone).
  if ! (exec 3<>"/dev/tcp/127.0.0.1/${KAFKA_PORT:-9092}") 2>/dev/null; then
    "$root/scripts/kafka/kafka.sh" up
  fi
  "$root/scripts/connect/connect.sh" up
  say "up after $((SECONDS - start))s: postgresql://sync:sync@127.0.0.1:$pg_port/sync," \
    "Connect http://127.0.0.1:${CONNECT_PORT:-18083}"
}

down() {
  "$root/scripts/connect/connect.sh" down
  pg down
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) pg status && "$root/scripts/connect/connect.sh" status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
