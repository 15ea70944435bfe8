#!/usr/bin/env bash
# Checks the Helm chart charts/biometrics without a cluster: its CRDs are the generated ones,
# it lints strictly, and what it renders (default values, every example values file, and an
# app chart that adds the agent sidecar with the chart's named templates) is valid
# Kubernetes for the oldest and newest versions it supports, with least-privilege RBAC and
# Pod Security "restricted" containers. Needs `make setup` (helm, and kubernetes-validate in
# .tools/venv). operator/tests/rbac.rs checks the RBAC against what the operator really does.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
chart="$root/charts/biometrics"
helm="$root/.tools/bin/helm"
python="$root/.tools/venv/bin/python"
# The chart's kubeVersion floor and kubernetes-validate's newest schemas.
kube_versions=(1.30.0 1.37.0)

say() { printf 'chart-check: %s\n' "$*"; }
fail() {
  printf 'chart-check: FAIL: %s\n' "$*" >&2
  exit 1
}

[[ -x $helm ]] || fail "no $helm: run make setup"
"$python" -c 'import kubernetes_validate' 2>/dev/null || fail "kubernetes-validate is not in .tools/venv: run make setup"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Keep helm's caches and settings out of the home directory.
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"

# --- The CRDs are the generated ones, byte for byte --------------------------------------
# crds/tests/examples.rs admits every examples/*.yaml custom resource through crds/yaml and
# crd_drift.rs keeps crds/yaml equal to the Rust types, so equal copies are admitted alike.
generated=$(cd "$root/crds/yaml" && ls -- *.yaml)
copied=$(cd "$chart/crds" && ls -- *.yaml)
[[ $generated == "$copied" ]] || fail "charts/biometrics/crds/ has [$(echo $copied)], crds/yaml/ has [$(echo $generated)]: run make crds"
for file in $generated; do
  cmp -s "$root/crds/yaml/$file" "$chart/crds/$file" || fail "charts/biometrics/crds/$file differs from crds/yaml/$file: run make crds"
done
say "CRDs: charts/biometrics/crds/ equals crds/yaml/ ($(echo $generated))"

# --- The agent image defaults to the chart's release, like the operator's ---------------
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart/Chart.yaml")
agent_tag=$(sed -n '/^agent:/,/^[^ #]/s/^    tag: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart/values.yaml")
[[ -n $app_version && $agent_tag == "$app_version" ]] ||
  fail "values.yaml agent.image.tag is \"$agent_tag\", Chart.yaml appVersion is \"$app_version\""
say "agent.image.tag equals appVersion ($app_version)"

# --- Lint and render ---------------------------------------------------------------------
# name|values file|what it shows
renders=(
  "default||default values"
  "full|$chart/examples/values-full.yaml|every optional feature"
  "rwx-pvc|$chart/examples/values-rwx-pvc.yaml|a ReadWriteMany profiles claim"
)
rendered=()
for entry in "${renders[@]}"; do
  IFS='|' read -r name values what <<<"$entry"
  args=()
  [[ -z $values ]] || args=(--values "$values")
  "$helm" lint --strict --quiet "$chart" "${args[@]}" >"$work/lint-$name.txt" 2>&1 ||
    fail "helm lint --strict ($what): $(cat "$work/lint-$name.txt")"
  "$helm" template biometrics "$chart" --namespace biometrics-system "${args[@]}" >"$work/$name.yaml" ||
    fail "helm template ($what)"
  rendered+=("$work/$name.yaml")
  say "helm lint --strict and helm template: $what${values:+ (${values#"$root"/})}"
done

# An app's chart adding the sidecar through the named templates, with this chart as its
# dependency (unpacked in charts/, as `helm dependency build` would leave it).
app="$work/app-chart"
cp -r "$chart/examples/app-chart" "$app"
mkdir -p "$app/charts/biometrics"
(cd "$chart" && tar --exclude=./examples -cf - .) | tar -xf - -C "$app/charts/biometrics"
"$helm" lint --strict --quiet "$app" >"$work/lint-app.txt" 2>&1 || fail "helm lint --strict (app chart): $(cat "$work/lint-app.txt")"
"$helm" template users "$app" --namespace shop >"$work/app.yaml" || fail "helm template (app chart)"
# The other branches of the templates: TLS, an emptyDir for profiles, extra flags.
"$helm" template users "$app" --namespace shop >"$work/app-tls.yaml" \
  --set biometrics.agent.tls.enabled=true,biometrics.agent.tls.secretName=users-agent-tls \
  --set biometrics.profiles.claimName=,biometrics.agent.extraArgs[0]=--sample-interval=5s ||
  fail "helm template (app chart with agent TLS)"
# The agent as a native sidecar, under initContainers.
"$helm" lint --strict --quiet "$app" --set agentAsNativeSidecar=true >"$work/lint-app-native.txt" 2>&1 ||
  fail "helm lint --strict (app chart, native sidecar): $(cat "$work/lint-app-native.txt")"
"$helm" template users "$app" --namespace shop --set agentAsNativeSidecar=true >"$work/app-native.yaml" ||
  fail "helm template (app chart with the agent as a native sidecar)"
rendered+=("$work/app.yaml" "$work/app-tls.yaml" "$work/app-native.yaml")
say "helm lint --strict and helm template: examples/app-chart, the agent sidecar from the named templates (plain, TLS and native)"
bash "$root/hack/render-examples.sh" --check || fail "examples/app.yaml's apps differ from the app chart's render"
say "examples/app.yaml's users and checkout are what examples/app-chart renders"

# --- Validate what was rendered ----------------------------------------------------------
"$python" - "${kube_versions[*]}" "$root" "$work/app" "${rendered[@]}" "$root"/examples/*.yaml <<'PY'
"""Validates built-in kinds with kubernetes-validate --strict; checks RBAC, Pod Security
and the agent sidecar. Custom resources have no schema here and are skipped by name."""
import os
import sys

import kubernetes_validate.utils as kv
import yaml

versions = sys.argv[1].split()
root = sys.argv[2]
app_prefix = sys.argv[3]  # the app chart's renders start with it
files = sys.argv[4:]
# Kinds a cluster gets from CRDs: ours (admitted by crds/tests/examples.rs) and
# prometheus-operator's; the CRD objects themselves are the drift-checked copies.
custom_groups = {"biometrics.io", "monitoring.coreos.com", "apiextensions.k8s.io"}
problems = []


def short(path):
    if path.startswith(root + "/"):
        return os.path.relpath(path, root)
    return "rendered " + os.path.basename(path)


def check_rbac(doc, where):
    for rule in doc.get("rules", []):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            if "*" in rule.get(field, []):
                problems.append(f"{where}: wildcard in {field}")
        if "secrets" in rule.get("resources", []) and {"list", "watch"} & set(rule["verbs"]):
            problems.append(f"{where}: Secrets may be listed or watched")


def check_restricted(doc, where):
    """Pod Security "restricted", plus a read-only root filesystem, for every container."""
    pod = doc["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext", {})
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        name = f"{where} container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: the root filesystem is writable")


def check_agent(doc, where, native):
    """What the operator relies on in a pod with the agent; `native`: rendered as a native
    sidecar."""
    template = doc["spec"]["template"]
    # Beside the app, or a native sidecar: an init container that keeps running.
    agents = [c for c in template["spec"]["containers"] if c["name"] == "biometrics-agent"] + [
        c
        for c in template["spec"].get("initContainers", [])
        if c["name"] == "biometrics-agent" and c.get("restartPolicy") == "Always"
    ]
    if len(agents) != 1:
        problems.append(f"{where}: not one container named exactly biometrics-agent (or native sidecar of that name)")
        return
    if native != (agents[0].get("restartPolicy") == "Always"):
        problems.append(f"{where}: the agent is {'not ' if native else ''}a native sidecar")
    port = template["metadata"].get("annotations", {}).get("biometrics.io/agent-port")
    ports = {p.get("name"): p["containerPort"] for p in agents[0].get("ports", [])}
    if port is None or ports.get("biometrics") != int(port):
        problems.append(f"{where}: annotation biometrics.io/agent-port {port} is not the port named biometrics {ports}")


counts = {}
for path in files:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    is_app = path.startswith(app_prefix)
    if is_app and [d["kind"] for d in docs] != ["Deployment"]:
        problems.append(f"{short(path)}: the app chart rendered {[d['kind'] for d in docs]}, not just its Deployment")
    for doc in docs:
        kind = doc["kind"]
        where = f"{short(path)}: {kind} {doc['metadata']['name']}"
        if doc["apiVersion"].split("/")[0] in custom_groups:
            counts.setdefault("skipped (custom resource kinds)", set()).add(kind)
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                problems.append(f"{where} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
            except kv.SchemaNotFoundError as e:
                problems.append(f"{where}: {e.message}")
        counts.setdefault("valid", set()).add(kind)
        if kind in ("Role", "ClusterRole"):
            check_rbac(doc, where)
        # examples/app.yaml's Redis and load generator are plain samples (its apps are the
        # app chart's render, checked above).
        if kind in ("Deployment", "StatefulSet", "DaemonSet") and not path.startswith(root + "/"):
            check_restricted(doc, where)
        if is_app:
            check_agent(doc, where, os.path.basename(path) == "app-native.yaml")

if problems:
    print("\n".join(f"chart-check: FAIL: {p}" for p in problems), file=sys.stderr)
    sys.exit(1)
print(f"chart-check: kubernetes-validate --strict for Kubernetes {' and '.join(versions)}: "
      f"{len(files)} files valid ({', '.join(sorted(counts['valid']))}); "
      f"skipped custom resource kinds {', '.join(sorted(counts.get('skipped (custom resource kinds)', [])))}")
print("chart-check: RBAC without wildcards or Secret list/watch; containers Pod Security restricted "
      "with read-only root filesystems; the app chart's agent is named biometrics-agent on its annotated port")
PY
say "ok"
