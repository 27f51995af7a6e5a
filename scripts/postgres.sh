#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL server on 127.0.0.1:${PG_PORT:-55432} for the
# tests: a fresh cluster in a temporary folder, role `sync` (password `sync`) owning the
# database `sync`. The system's default cluster (5432) is never touched. PG_SERVER_OPTIONS adds
# server settings (`-c wal_level=logical` for change data capture).
#   scripts/postgres.sh up|down|status|kill|start
# `kill` ends the server and its backends with SIGKILL and keeps the data; `start` starts it
# again on that data (crash recovery).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
port="${PG_PORT:-55432}"
cache="${PG_CACHE_DIR:-$root/.cache/postgres}"
run="$cache/run-$port"
logfile="${PG_LOG_FILE:-$run/postgres.log}"
timeout_s="${PG_START_TIMEOUT:-60}"
pg_user="${PG_SYSTEM_USER:-postgres}"

say() { echo "postgres: $*" >&2; }

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# The cluster runs as the `postgres` system user: initdb and the server refuse root.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u "$pg_user" -- "$@")
  else
    "$@"
  fi
}

ready() {
  local bin; bin="$(bindir)"
  local isready="${bin:+$bin/}pg_isready"
  command -v "$isready" >/dev/null || isready=pg_isready
  command -v "$isready" >/dev/null || return 1
  "$isready" -q -h 127.0.0.1 -p "$port" -t "${1:-1}" >/dev/null 2>&1
}

install_server() {
  if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then return; fi
  if [ "$(id -u)" -ne 0 ]; then
    say "PostgreSQL server binaries not found: install the Debian package postgresql"; exit 1
  fi
  say "installing the Debian package postgresql"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

data_dir() { [ -f "$run/data-dir" ] && cat "$run/data-dir"; }

up() {
  if ready 2; then say "a server already answers on 127.0.0.1:$port"; return 0; fi
  install_server
  local bin; bin="$(bindir)"
  local stale; stale="$(data_dir || true)"
  if [ -n "$stale" ]; then
    # A cluster of ours that is not answering: stop what is left of it and start afresh.
    as_pg "$bin/pg_ctl" -D "$stale" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$stale" "$run/data-dir"
  fi
  mkdir -p "$run"
  local data; data="$(mktemp -d "${TMPDIR:-/tmp}/sync-service-postgres-$port.XXXXXX")"
  echo "$data" > "$run/data-dir"
  if [ "$(id -u)" -eq 0 ]; then chown "$pg_user": "$data"; fi
  chmod 700 "$data"
  say "initdb in $data"
  as_pg "$bin/initdb" -D "$data/pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >>"$logfile" 2>&1 \
    || { say "initdb failed, see $logfile"; tail -20 "$logfile" >&2; exit 1; }
  say "starting on 127.0.0.1:$port (log: $logfile)"
  # The server's output goes to the log through pg_ctl's stdout, which this shell opens: the
  # postgres user need not be able to write under the project folder.
  as_pg "$bin/pg_ctl" -D "$data/pgdata" -w -t "$timeout_s" start \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$data -c fsync=off ${PG_SERVER_OPTIONS:-}" \
    >>"$logfile" 2>&1 \
    || { say "start failed, see $logfile"; tail -30 "$logfile" >&2; down; exit 1; }
  local start=$SECONDS
  until ready 2; do
    if (( SECONDS - start > timeout_s )); then
      say "not ready after ${timeout_s}s, see $logfile"; down; exit 1
    fi
    sleep 0.2
  done
  as_pg "$bin/psql" -q -X -v ON_ERROR_STOP=1 -h "$data" -p "$port" -U postgres -d postgres \
    >>"$logfile" 2>&1 <<'SQL' || { say "creating role and database failed, see $logfile"; exit 1; }
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sync') THEN
    CREATE ROLE sync LOGIN PASSWORD 'sync';
  END IF;
END $$;
SELECT 'CREATE DATABASE sync OWNER sync'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'sync') \gexec
SQL
  say "ready on 127.0.0.1:$port after $((SECONDS - start))s (postgresql://sync:***@127.0.0.1:$port/sync)"
}

down() {
  local data; data="$(data_dir || true)"
  if [ -z "$data" ]; then say "not running"; return 0; fi
  local bin; bin="$(bindir)"
  if [ -n "$bin" ] && [ -f "$data/pgdata/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$data/pgdata" -w -t 30 stop -m fast >/dev/null 2>&1 \
      || as_pg "$bin/pg_ctl" -D "$data/pgdata" stop -m immediate >/dev/null 2>&1 || true
    say "stopped"
  else
    say "not running"
  fi
  rm -rf "$data" "$run/data-dir"
}

# SIGKILL to the postmaster and every backend, as when the machine dies; the data stays.
crash() {
  local data; data="$(data_dir || true)"
  local pidfile="$data/pgdata/postmaster.pid"
  if [ -z "$data" ] || [ ! -f "$pidfile" ]; then say "not running"; return 0; fi
  local pid; pid="$(head -1 "$pidfile")"
  local pids; pids="$pid $(ps -o pid= --ppid "$pid" | tr '\n' ' ')"
  # shellcheck disable=SC2086
  kill -9 $pids 2>/dev/null || true
  for p in $pids; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  say "killed (pid $pid and its backends)"
}

# Starts the server again on the data of the last `up`.
start() {
  if ready 2; then say "a server already answers on 127.0.0.1:$port"; return 0; fi
  local data; data="$(data_dir || true)"
  if [ -z "$data" ] || [ ! -d "$data/pgdata" ]; then say "no data to start on: use up"; exit 1; fi
  local bin; bin="$(bindir)"
  as_pg "$bin/pg_ctl" -D "$data/pgdata" -w -t "$timeout_s" start \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$data -c fsync=off ${PG_SERVER_OPTIONS:-}" \
    >>"$logfile" 2>&1 || { say "start failed, see $logfile"; tail -30 "$logfile" >&2; exit 1; }
  until ready 2; do sleep 0.2; done
  say "started again on 127.0.0.1:$port"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  kill) crash ;;
  start) start ;;
  status) if ready 2; then say "up on 127.0.0.1:$port"; else say "down"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status|kill|start" >&2; exit 2 ;;
esac
