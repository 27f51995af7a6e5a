#!/bin/bash
# KAFKA_* variables to server.properties (_ is ., __ is _, ___ is -), format once, run.
set -euo pipefail
props=/opt/kafka/config/server.properties
: >"$props"
while IFS='=' read -r name value; do
  case "$name" in KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_JVM_*) continue ;; esac
  key="${name#KAFKA_}"
  key="$(tr '[:upper:]' '[:lower:]' <<<"$key" | sed 's/___/-/g; s/__/\x01/g; s/_/./g; s/\x01/_/g')"
  echo "$key=$value" >>"$props"
done < <(env | grep '^KAFKA_')
dir="$(sed -n 's/^log\.dirs=//p' "$props")"
if [ ! -f "${dir:-/var/lib/kafka/data}/meta.properties" ]; then
  java -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format --cluster-id "$CLUSTER_ID" \
    --config "$props"
fi
exec java ${KAFKA_HEAP_OPTS:--Xmx512m} -cp '/opt/kafka/libs/*' kafka.Kafka "$props"
