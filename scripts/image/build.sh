#!/usr/bin/env bash
# `make image`: build the sync-service image with a real engine, tagged with the project version.
#
#   scripts/image/build.sh        prints the image reference it built
#
# The base is the Dockerfile's pinned BASE_IMAGE when the engine has it or can pull it; otherwise
# an equivalent base built from Debian packages (scripts/image/base.sh), and this says so.
# BASE_IMAGE=... chooses a base; IMAGE=name:tag names the result.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

say() { echo "image: $*" >&2; }

host="$(scripts/image/engine.sh up)"
[ -n "$host" ] && export DOCKER_HOST="$host"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)"
image="${IMAGE:-sync-service:$version}"
pinned="$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)"
base="${BASE_IMAGE:-}"
if [ -z "$base" ]; then
  if docker image inspect "$pinned" >/dev/null 2>&1 \
      || timeout "${PULL_TIMEOUT:-30}" docker pull -q "$pinned" >/dev/null 2>&1; then
    base="$pinned"
  else
    say "cannot pull $pinned: building FROM an equivalent base made from Debian packages"
    base="$(scripts/image/base.sh)"
  fi
fi
# The build's Python packages, fetched here with the host's pip (and its trust store, which may
# hold a proxy's CA the base image lacks): the image build then needs no network of its own.
pip="$root/.venv/bin/pip"
[ -x "$pip" ] || pip="python3 -m pip"
rm -rf .wheelhouse
mkdir -p .wheelhouse
python3 - >"$root/.cache/image-requirements.txt" <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(project["project"]["dependencies"] + project["build-system"]["requires"]))
PY
$pip download -q --disable-pip-version-check -d .wheelhouse --only-binary=:all: \
  --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
  --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -r "$root/.cache/image-requirements.txt" >&2
say "building $image FROM $base"
# The legacy builder: it needs no BuildKit frontend image and no buildx plugin. Host network,
# since the daemon may run without a bridge; the build stage installs dependencies from PyPI.
DOCKER_BUILDKIT=0 docker build -q --network host --build-arg "BASE_IMAGE=$base" \
  --build-arg PIP_NO_INDEX=1 -t "$image" . >"$root/.cache/image-build.log" 2>&1 \
  || { tail -30 "$root/.cache/image-build.log" >&2; exit 1; }
say "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1e6}'))"
echo "$image"
