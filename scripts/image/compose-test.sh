#!/usr/bin/env bash
# `make compose-test`: `docker compose --profile demo up --wait` with a real engine, then checks
# that the service is ready and the demo receiver gets rows; `docker compose down -v` after.
#
# Where apache/kafka and postgres cannot be pulled, equivalent local images are built
# (scripts/image/compose/: the project's Kafka jars on Debian's OpenJDK, Debian's PostgreSQL 15),
# and this says so. Needs the compose plugin or `scripts/deploy/tools.sh compose`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
started=$SECONDS
say() { echo "compose-test: $*" >&2; }
fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }

image="$(scripts/image/build.sh)"
host="$(scripts/image/engine.sh up 2>/dev/null)"
[ -n "$host" ] && export DOCKER_HOST="$host"

pull() { docker image inspect "$1" >/dev/null 2>&1 || timeout 30 docker pull -q "$1" >/dev/null 2>&1; }
kafka_image=apache/kafka:4.1.1
postgres_image=postgres:16-bookworm
if ! pull "$kafka_image" || ! pull "$postgres_image"; then
  base="$(scripts/image/base.sh)"
  ctx="$root/.cache/compose-images"
  rm -rf "$ctx" && mkdir -p "$ctx/lib" "$ctx/ready"
  scripts/kafka/kafka.sh reachable >/dev/null 2>&1 || true # resolves the jars
  lib="${KAFKA_CACHE_DIR:-$root/.cache/kafka}/lib"
  cp "$lib"/*.jar "$ctx/lib/"
  if ! command -v javac >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
  fi
  # The health check's client, compiled here: the image has a JRE only.
  javac -nowarn -cp "$lib/*" -d "$ctx/ready" scripts/kafka/Ready.java
  cp scripts/image/compose/*.sh "$ctx/"
  kafka_image=sync-service-kafka:4.1.1-local
  postgres_image=sync-service-postgres:15-local
  say "cannot pull apache/kafka and postgres: building $kafka_image and $postgres_image"
  for kind in kafka postgres; do
    ref="$kafka_image"
    [ "$kind" = postgres ] && ref="$postgres_image"
    DOCKER_BUILDKIT=0 docker build -q --network host --build-arg "BASE_IMAGE=$base" \
      -f "scripts/image/compose/$kind.Dockerfile" -t "$ref" "$ctx" >/dev/null
  done
fi

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  compose=("$(scripts/deploy/tools.sh compose)")
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export KAFKA_IMAGE="$kafka_image" POSTGRES_IMAGE="$postgres_image"
export SYNC_HOST_PORT="$(free_port)" KAFKA_HOST_PORT="$(free_port)"
export SYNC_API_TOKENS="compose-test-$(python3 -c 'import uuid; print(uuid.uuid4().hex)')=1"
project=sync-compose-test
dc() { "${compose[@]}" -p "$project" -f docker-compose.yml --profile demo "$@"; }
cleanup() {
  if [ "${status:-1}" != 0 ]; then dc ps -a >&2 || true; dc logs --tail 30 >&2 || true; fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "docker compose --profile demo up --wait ($image, $kafka_image, $postgres_image)"
dc up --wait --wait-timeout 240 --no-build --quiet-pull >&2 || fail "compose up --wait"
# `up --wait` can return while the service's health is still `starting`: ask /readyz until it
# answers 200 (the consumer has joined its group), for a minute at most.
code=000
for _ in $(seq 1 60); do
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SYNC_HOST_PORT/readyz" || true)"
  [ "$code" = 200 ] && break
  sleep 1
done
[ "$code" = 200 ] || fail "/readyz answered $code"
received() { [[ "$(dc logs demo-receiver 2>/dev/null)" == *"receiver <-"* ]]; }
for _ in $(seq 1 60); do
  received && break
  sleep 1
done
received || fail "the demo receiver got no rows in 60 s"
say "healthy; the demo receiver got rows from the service on PostgreSQL"
status=0
say "passed in $((SECONDS - started)) s"
