"""Checks one rendered chart: custom resources against their CRD schemas, and the rules the chart
promises for every pod (pinned images, limits, read-only root, probes, no Secrets of its own).

    python validate.py RENDERED.yaml OUT_DIR

Writes OUT_DIR/core.yaml (the built-in kinds, for kubernetes-validate) and, when the chart
rendered a PrometheusRule, OUT_DIR/rules.yaml (its groups, for promtool). Exit 1 with one line
per problem.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parents[2] / "k8s" / "schemas"
CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrule_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobject_v1alpha1.json",
}
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling"}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}


def pod_problems(name: str, pod: dict) -> list[str]:
    problems = []
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: mounts a service account token")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        where = f"{name}/{c['name']}"
        image = c.get("image", "")
        if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
            problems.append(f"{where}: image {image!r} is not pinned to a version")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for key in ("cpu", "memory", "ephemeral-storage"):
                if key not in res.get(part, {}):
                    problems.append(f"{where}: no {part}.{key}")
        sc = c.get("securityContext", {})
        if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: root file system writable or privilege escalation allowed")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities not all dropped")
        if not sc.get("runAsNonRoot"):
            problems.append(f"{where}: may run as root")
    return problems


def main(rendered: Path, out: Path) -> int:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    problems: list[str] = []
    core: list[dict] = []
    rules = None
    for doc in docs:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        name = f"{kind}/{doc.get('metadata', {}).get('name')}"
        if kind == "Secret":
            problems.append(f"{name}: the chart must not make Secrets; the operator provides them")
        schema_file = CUSTOM.get((api, kind))
        if schema_file is not None:
            schema = json.loads((SCHEMAS / schema_file).read_text())
            validator = jsonschema.Draft7Validator(schema)
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in error.path) or "(root)"
                problems.append(f"{name}: {path}: {error.message}")
            unknown = set(doc) - set(schema["properties"])
            if unknown:
                problems.append(f"{name}: unknown top-level fields {sorted(unknown)}")
            if kind == "PrometheusRule":
                rules = {"groups": doc["spec"]["groups"]}
            continue
        group = api.split("/")[0] if "/" in api else ""
        if group not in BUILTIN_GROUPS and not group.endswith(".k8s.io"):
            problems.append(f"{name}: {api} has no schema here: add its CRD schema")
            continue
        core.append(doc)
        if kind in WORKLOADS:
            problems.extend(pod_problems(name, doc["spec"]["template"]["spec"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))
    if rules is not None:
        (out / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    for p in problems:
        print(f"{out.name}: {p}", file=sys.stderr)
    kinds = sorted({f"{d['kind']}" for d in docs})
    print(f"{out.name}: {len(docs)} objects ({', '.join(kinds)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
