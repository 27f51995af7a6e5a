#!/usr/bin/env bash
# The base image when the pinned Docker Hub base cannot be pulled: Debian bookworm (minbase) with
# Debian's python3 (3.11) and venv, made by debootstrap from Debian's packages and `docker import`ed.
# It stands in for python:3.11-slim-bookworm: same Debian release, same Python minor version; the
# interpreter is /usr/bin/python3 instead of /usr/local/bin/python3.
#
#   scripts/image/base.sh    prints the image reference to build FROM
#
# The root file system is cached as a tarball under .cache/image/ (delete it to rebuild), and the
# imported image is reused while its tag names the tarball's checksum.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${IMAGE_CACHE_DIR:-$root/.cache/image}"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=python3,python3-venv,ca-certificates,tzdata
tarball="$cache/base-$suite-python3.tar.gz"

say() { echo "base: $*" >&2; }

mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  # An engine that keeps its images (a CI run in a fresh clone on the same machine) still has
  # the base imported before.
  known="$(docker image ls --format '{{.Repository}}:{{.Tag}}' "sync-service-base" \
    | grep ":$suite-python3-" | head -1 || true)"
  if [ -n "$known" ]; then
    say "reusing $known (no $tarball)"
    echo "$known"
    exit 0
  fi
fi
if [ ! -s "$tarball" ]; then
  [ "$(id -u)" = 0 ] || { say "debootstrap needs root"; exit 1; }
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  work="$(mktemp -d "${TMPDIR:-/tmp}/sync-service-base.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  say "building a $suite base with Debian's python3 by debootstrap (cached in $tarball)"
  debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # What an image never needs: package lists, caches, docs, logs.
  rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/cache/apt/*.bin \
    "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/usr/share/doc/* \
    "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/info/* "$work/rootfs"/var/log/*.log
  "$work/rootfs/usr/bin/python3" -c 'import sys; assert sys.version_info >= (3, 11), sys.version'
  tar --numeric-owner -C "$work/rootfs" -czf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
sum="$(sha256sum "$tarball" | cut -c1-12)"
ref="sync-service-base:$suite-python3-$sum"
if ! docker image inspect "$ref" >/dev/null 2>&1; then
  say "importing $tarball as $ref"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$ref" >/dev/null
fi
echo "$ref"
