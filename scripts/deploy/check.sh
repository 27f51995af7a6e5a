#!/usr/bin/env bash
# `make deploy-check`: the Helm chart, offline. For each values example: helm lint --strict, helm
# template, the output validated by kubernetes-validate --strict for the oldest and newest
# Kubernetes versions supported, the custom resources against their CRD schemas
# (k8s/schemas/), the pod rules (scripts/deploy/validate.py); the alert rules by promtool
# (check rules, and the unit tests in k8s/tests/); values the chart must refuse; and
# docker-compose.yml against the Compose schema (and by `docker compose config` where the
# compose plugin is installed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
started=$SECONDS
chart=k8s/helm/sync-service
out="${DEPLOY_CHECK_DIR:-$root/.cache/deploy-check}"
# Kubernetes versions the rendered objects must be valid for: the oldest supported, the newest
# kubernetes-validate carries.
k8s_versions=(1.29.0 1.37.0)

helm="$(scripts/deploy/tools.sh helm)"
promtool="$(scripts/deploy/tools.sh promtool)"
kv="$(scripts/deploy/tools.sh kubernetes-validate)"
python="$(scripts/deploy/tools.sh python)"
export HELM_CACHE_HOME="$out/helm/cache" HELM_CONFIG_HOME="$out/helm/config" \
  HELM_DATA_HOME="$out/helm/data"

rm -rf "$out/rendered"
mkdir -p "$out/rendered"
failed=0
fail() { echo "deploy-check: FAIL: $*" >&2; failed=1; }

for values in k8s/examples/values-*.yaml; do
  example="$(basename "$values" .yaml)"
  dir="$out/rendered/$example"
  mkdir -p "$dir"
  "$helm" lint --strict "$chart" -f "$values" --namespace sync \
    --kube-version "${k8s_versions[0]}" >"$dir/lint.log" 2>&1 \
    || { cat "$dir/lint.log" >&2; fail "helm lint $example"; continue; }
  "$helm" template sync-service "$chart" -f "$values" --namespace sync \
    --kube-version "v${k8s_versions[0]}" >"$dir/all.yaml" \
    || { fail "helm template $example"; continue; }
  "$python" scripts/deploy/validate.py "$dir/all.yaml" "$dir" || fail "objects of $example"
  for version in "${k8s_versions[@]}"; do
    "$kv" --strict --quiet -k "$version" "$dir/core.yaml" \
      || fail "kubernetes-validate $version $example"
  done
  if [ -f "$dir/rules.yaml" ]; then
    "$promtool" check rules "$dir/rules.yaml" >/dev/null || fail "promtool check rules $example"
    cp k8s/tests/alerts_test.yaml "$dir/"
    (cd "$dir" && "$promtool" test rules alerts_test.yaml) >"$dir/promtool-test.log" 2>&1 \
      || { cat "$dir/promtool-test.log" >&2; fail "promtool test rules ($example)"; }
    grep -q SUCCESS "$dir/promtool-test.log" && echo "$example: alert rule tests passed"
  fi
done
[ -f "$out/rendered/values-postgresql/rules.yaml" ] || fail "no example renders the alert rules"

# The other autoscaler: an HPA on CPU instead of KEDA.
dir="$out/rendered/values-postgresql-hpa"
mkdir -p "$dir"
if "$helm" template sync-service "$chart" -f k8s/examples/values-postgresql.yaml \
    --namespace sync --kube-version "v${k8s_versions[0]}" --set autoscaling.kind=hpa \
    >"$dir/all.yaml" && "$python" scripts/deploy/validate.py "$dir/all.yaml" "$dir" \
    && grep -q '^kind: HorizontalPodAutoscaler' "$dir/all.yaml"; then
  for version in "${k8s_versions[@]}"; do
    "$kv" --strict --quiet -k "$version" "$dir/core.yaml" || fail "kubernetes-validate $version HPA"
  done
else
  fail "the HPA variant"
fi

# Values that must be refused with a message naming the value.
refuse() { # expected-message helm-args...
  local expected=$1
  shift
  local got
  if got="$("$helm" template sync-service "$chart" --namespace sync \
    --kube-version "v${k8s_versions[0]}" "$@" 2>&1)"; then
    fail "the chart accepted $*"
  elif ! grep -qF "$expected" <<<"$got"; then
    fail "for $*, expected '$expected', got: $got"
  fi
}
base=(-f k8s/examples/values-sqlite.yaml)
refuse "apiTokens.existingSecret" "${base[@]}" --set apiTokens.existingSecret=
refuse "image.tag: name a version, not latest" "${base[@]}" --set image.tag=latest
refuse "replicas: the SQLite store runs one replica" "${base[@]}" --set replicas=3
refuse "store.postgresql.existingSecret" "${base[@]}" --set store.type=postgresql
refuse "kafka.sasl.existingSecret" "${base[@]}" --set kafka.securityProtocol=SASL_SSL
refuse "image.digest" "${base[@]}" --set image.digest=sha256:abc
refuse "autoscaling: needs store.type=postgresql" "${base[@]}" --set autoscaling.enabled=true

"$python" scripts/deploy/compose_check.py docker-compose.yml || fail "docker-compose.yml"
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif built="$(ls .cache/tools/docker-compose-*/docker-compose 2>/dev/null | head -1)" \
    && [ -n "$built" ]; then
  compose=("$built") # built by `scripts/deploy/tools.sh compose` for make compose-test
fi
if [ ${#compose[@]} -gt 0 ]; then
  for profile in "" demo; do
    SYNC_API_TOKENS=check-only-token=1 COMPOSE_PROFILES="$profile" \
      "${compose[@]}" -f docker-compose.yml config -q || fail "docker compose config ($profile)"
  done
  # No API token, no service: compose must refuse.
  if SYNC_API_TOKENS= "${compose[@]}" -f docker-compose.yml config -q 2>/dev/null; then
    fail "docker compose accepted an empty SYNC_API_TOKENS"
  fi
  echo "docker-compose.yml: docker compose config passed"
fi

if [ "$failed" != 0 ]; then
  echo "deploy-check: failed" >&2
  exit 1
fi
echo "deploy-check: passed in $((SECONDS - started)) s"
