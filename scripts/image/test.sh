#!/usr/bin/env bash
# `make image-test`: build the image and run it as production does, against the local broker.
#
# The container runs with a read-only root file system, as uid 10001, with every capability
# dropped and no new privileges, on the host network. The test checks that /readyz answers 200,
# that one change event produced to Kafka reaches a webhook receiver, and that SIGTERM stops the
# container with exit code 0 within 10 s. Kafka: 127.0.0.1:$KAFKA_PORT, started if none answers.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
started=$SECONDS

fail() { echo "image-test: FAIL: $*" >&2; exit 1; }
say() { echo "image-test: $*" >&2; }

image="$(scripts/image/build.sh)"
host="$(scripts/image/engine.sh up 2>/dev/null)"
[ -n "$host" ] && export DOCKER_HOST="$host"

kafka="127.0.0.1:${KAFKA_PORT:-9092}"
scripts/kafka/kafka.sh reachable 2>/dev/null || scripts/kafka/kafka.sh up

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
uid="$(python3 -c 'import uuid; print(uuid.uuid4().hex[:10])')"
name="sync-image-test-$uid"
work="$(mktemp -d "${TMPDIR:-/tmp}/sync-image-test.XXXXXX")"
receiver_pid=""
cleanup() {
  if [ "${status:-1}" != 0 ] && docker inspect "$name" >/dev/null 2>&1; then
    echo "--- container log" >&2
    docker logs "$name" 2>&1 | tail -40 >&2
  fi
  docker rm -f "$name" >/dev/null 2>&1 || true
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

receiver_port="$(free_port)"
http_port="$(free_port)"
python3 scripts/image/receiver.py "$receiver_port" "$work/received.jsonl" &
receiver_pid=$!
chmod 0755 "$work"
cat >"$work/resources.yaml" <<YAML
models:
  - {id: "1", name: users, slug: users, primaryKey: id}
destinations:
  - id: "1"
    name: receiver
    slug: receiver
    type: webhook
    configuration: {url: "http://127.0.0.1:$receiver_port/hook"}
syncs:
  - id: "1"
    slug: users-to-receiver
    modelId: "1"
    destinationId: "1"
    schedule: {type: continuous, schedule: {lingerMs: 50}}
    configuration:
      mode: mirror
      mappings:
        - {from: id, to: id}
        - {from: email, to: email_address}
YAML
chmod 0644 "$work/resources.yaml"

say "running $image read-only, uid 10001, no capabilities, host network"
docker run -d --name "$name" \
  --network host \
  --read-only --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges \
  --tmpfs /tmp:size=16m \
  --tmpfs /var/lib/sync-service:size=64m,uid=10001,gid=10001,mode=0750 \
  -v "$work/resources.yaml:/etc/sync-service/resources.yaml:ro" \
  -e SYNC_KAFKA_BOOTSTRAP_SERVERS="$kafka" \
  -e SYNC_EVENTS_TOPICS="image-events-$uid" \
  -e SYNC_STATUS_TOPIC="image-status-$uid" \
  -e SYNC_DLQ_TOPIC="image-dlq-$uid" \
  -e SYNC_CONSUMER_GROUP="image-group-$uid" \
  -e SYNC_HTTP_PORT="$http_port" \
  -e SYNC_CONFIG_FILE=/etc/sync-service/resources.yaml \
  -e SYNC_API_TOKENS="image-test-$uid-token=1" \
  -e SYNC_EGRESS_ALLOW=127.0.0.1/32 \
  "$image" >/dev/null

[ "$(docker exec "$name" id -u)" = 10001 ] || fail "the service does not run as uid 10001"
if docker exec "$name" sh -c 'touch /opt/venv/probe' 2>/dev/null; then
  fail "the root file system is writable"
fi
grep -q '^CapEff:[[:space:]]*0\+$' <(docker exec "$name" cat /proc/1/status) \
  || fail "the service has capabilities"

ready=""
for _ in $(seq 1 120); do
  [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the container exited"
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/readyz" || true)"
  if [ "$code" = 200 ]; then ready=1; break; fi
  sleep 0.5
done
[ -n "$ready" ] || fail "/readyz did not answer 200 in 60 s (last: $code)"
say "/readyz 200"

# One change event, produced with the image's own Python and aiokafka.
docker exec -e TOPIC="image-events-$uid" -e KAFKA="$kafka" "$name" python -c '
import asyncio, json, os
from aiokafka import AIOKafkaProducer
async def main():
    p = AIOKafkaProducer(bootstrap_servers=os.environ["KAFKA"], acks="all")
    await p.start()
    event = {"modelId": "1", "op": "upsert", "emittedAt": "2026-01-01T00:00:00Z",
             "rows": [{"id": 7, "email": "ada@example.com"}]}
    await p.send_and_wait(os.environ["TOPIC"], json.dumps(event).encode(), key=b"1")
    await p.stop()
asyncio.run(main())'

delivered=""
for _ in $(seq 1 120); do
  if grep -q 'ada@example.com' "$work/received.jsonl" 2>/dev/null; then delivered=1; break; fi
  sleep 0.5
done
[ -n "$delivered" ] || fail "the change event did not reach the webhook in 60 s"
python3 - "$work/received.jsonl" <<'PY' || fail "the webhook got unexpected rows"
import json, sys
rows = [r for line in open(sys.argv[1]) for r in json.loads(line)["rows"]]
assert any(r["data"] == {"id": 7, "email_address": "ada@example.com"} for r in rows), rows
PY
say "the change event reached the webhook"

docker kill --signal TERM "$name" >/dev/null
stopped="$(timeout 10 docker wait "$name" || true)"
[ -n "$stopped" ] || fail "no exit within 10 s of SIGTERM"
[ "$stopped" = 0 ] || fail "exit code $stopped after SIGTERM"
say "SIGTERM: exit 0 within 10 s"
status=0
say "passed in $((SECONDS - started)) s"
