#!/usr/bin/env bash
# The tests' PostgreSQL servers listen on fixed ports (55432, the CDC one on 55440, the fault
# suite's on 55450) inside Linux's ephemeral range (32768-60999): reserve them, so that no
# client socket of a test run holds one when a server starts. Needs root; without it, nothing
# changes and the tests still run (a server start then fails if a client holds its port).
set -uo pipefail
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
[ -w "$reserved" ] || exit 0
current="$(cat "$reserved")"
missing=()
for port in 55432 55440 55450; do
  case ",$current," in *",$port,"*) ;; *) missing+=("$port") ;; esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
joined="$(IFS=,; echo "${missing[*]}")"
echo "${current:+$current,}$joined" > "$reserved" 2>/dev/null || true
exit 0
