#!/usr/bin/env bash
# A container engine for the image scripts: the running one, or Debian's docker.io started here.
#
#   scripts/image/engine.sh up     a daemon answers `docker info` afterwards (prints how it got one)
#   scripts/image/engine.sh down   stops the daemon this script started, and nothing else
#
# The daemon started here leaves the host's network as it is: no bridge, no iptables rules, no
# IP forwarding. Containers and builds use the host network (`--network host`).
set -euo pipefail
# A short runtime directory: containerd's sockets under it must fit in 108 characters.
state="${DOCKER_ENGINE_DIR:-/run/sync-service-docker}"
pidfile="$state/dockerd.pid"
sock="$state/docker.sock"

say() { echo "engine: $*" >&2; }

answers() { timeout 10 docker "$@" info >/dev/null 2>&1; }

up() {
  if [ -z "${DOCKER_HOST:-}" ] && answers; then
    say "using the running engine"
    return 0
  fi
  if [ -S "$sock" ] && DOCKER_HOST="unix://$sock" answers; then
    say "using the daemon started earlier at $sock"
    echo "unix://$sock"
    return 0
  fi
  if ! command -v dockerd >/dev/null; then
    [ "$(id -u)" = 0 ] || { say "no engine and not root: install docker.io"; exit 1; }
    say "installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  command -v docker >/dev/null || { say "docker.io gave no docker client"; exit 1; }
  mkdir -p "$state"
  say "starting dockerd (no bridge, no iptables; log $state/dockerd.log)"
  # Its own socket, pid file and exec root, so that it never meets another daemon's.
  setsid dockerd \
    --host "unix://$sock" \
    --pidfile "$pidfile" \
    --exec-root "$state/exec" \
    --data-root "${DOCKER_DATA_ROOT:-/var/lib/docker}" \
    --bridge none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    >"$state/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    if DOCKER_HOST="unix://$sock" answers; then
      echo "unix://$sock"
      return 0
    fi
    sleep 1
  done
  say "dockerd did not answer in 60 s:"
  tail -20 "$state/dockerd.log" >&2
  exit 1
}

down() {
  if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    fi
    rm -f "$pidfile"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
