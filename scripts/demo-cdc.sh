#!/usr/bin/env bash
# `make demo-cdc`: PostgreSQL with logical replication, Kafka (reused when one runs) and Kafka
# Connect with the Debezium PostgreSQL connector; then rows change in a table and each change is
# sent by the service to a webhook receiver, which prints what it gets. What this started, it
# stops at the end (CDC_KEEP=1 keeps it running). DEMO_ARGS=--follow keeps going until Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
started=0
if ! scripts/connect/cdc.sh status 2>/dev/null; then
  scripts/connect/cdc.sh up
  started=1
fi
cleanup() {
  if [ "$started" = 1 ] && [ "${CDC_KEEP:-0}" != 1 ]; then scripts/connect/cdc.sh down; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
PYTHONPATH="$root" .venv/bin/python scripts/connect/demo_cdc.py ${DEMO_ARGS:-}
