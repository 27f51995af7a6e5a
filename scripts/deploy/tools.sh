#!/usr/bin/env bash
# The deployment checkers at pinned versions, installed into .cache/tools/ on first use:
# helm and promtool built from the Go module proxy, kubernetes-validate from PyPI.
#
#   scripts/deploy/tools.sh helm|promtool|compose|kubernetes-validate|python   prints its path
#
# (python: the interpreter of the kubernetes-validate venv, which also has jsonschema and PyYAML.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="${TOOLS_DIR:-$root/.cache/tools}"

HELM_VERSION=v3.22.0
PROMETHEUS_VERSION=v0.316.0 # the Go module version of Prometheus 3.16.0
KUBERNETES_VALIDATE_VERSION=1.37.0
COMPOSE_VERSION=v2.40.3

say() { echo "tools: $*" >&2; }

go_tool() { # name version package [build flags...]
  local name=$1 version=$2 package=$3
  shift 3
  local dir="$tools/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    command -v go >/dev/null || { say "$name needs the Go toolchain"; exit 1; }
    say "building $name $version from the Go module proxy (once; cached in $dir)"
    mkdir -p "$dir"
    local flags=(-ldflags="-s -w")
    case "${1:-}" in -ldflags=*) flags=() ;; esac
    GOBIN="$dir" GOFLAGS=-trimpath CGO_ENABLED=0 go install "${flags[@]}" "$@" \
      "$package@$version" >&2
  fi
  echo "$dir/$name"
}

# Compose's go.mod has exclude directives, which `go install pkg@version` refuses: build it
# inside its own module, fetched from the module proxy.
compose() {
  local dir="$tools/docker-compose-$COMPOSE_VERSION"
  if [ ! -x "$dir/docker-compose" ]; then
    say "building docker compose $COMPOSE_VERSION from the Go module proxy (once; cached in $dir)"
    local src
    src="$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
    mkdir -p "$dir"
    (cd "$src" && GOFLAGS="-trimpath -mod=mod" CGO_ENABLED=0 go build -ldflags="-s -w \
      -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
      -o "$dir/docker-compose" ./cmd) >&2
  fi
  echo "$dir/docker-compose"
}

py_venv() {
  local dir="$tools/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
  if [ ! -x "$dir/bin/kubernetes-validate" ]; then
    say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (once; cached in $dir)"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "jsonschema>=4.18,<5" "PyYAML>=6,<7" >&2
  fi
  echo "$dir"
}

case "${1:-}" in
  # As helm's own release build: its version, and the Kubernetes version of the client-go it
  # is built with (1.37) as the default for `helm template` and lint.
  helm) go_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm -ldflags="-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" ;;
  # remove_all_sd: promtool without the service-discovery plugins it does not need here.
  promtool) go_tool promtool "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/promtool \
    -tags remove_all_sd ;;
  compose) compose ;;
  kubernetes-validate) echo "$(py_venv)/bin/kubernetes-validate" ;;
  python) echo "$(py_venv)/bin/python" ;;
  *) echo "usage: $0 helm|promtool|compose|kubernetes-validate|python" >&2; exit 2 ;;
esac
