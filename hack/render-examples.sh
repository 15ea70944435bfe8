#!/usr/bin/env bash
# examples/app.yaml's users and checkout Deployments are what the example app chart
# (charts/biometrics/examples/app-chart) renders: their agent sidecar, volumes, labels and
# annotation come from the chart's named templates. This writes them between the file's
# BEGIN/END markers; with --check it only fails when the file is not what the chart renders.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
helm="$root/.tools/bin/helm"
file="$root/examples/app.yaml"
check=false
[[ "${1:-}" == "--check" ]] && check=true

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HELM_CACHE_HOME="$work/helm" HELM_CONFIG_HOME="$work/helm" HELM_DATA_HOME="$work/helm"

# The app chart with the chart as its dependency, unpacked as `helm dependency build` would.
app="$work/app-chart"
cp -r "$root/charts/biometrics/examples/app-chart" "$app"
mkdir -p "$app/charts/biometrics"
(cd "$root/charts/biometrics" && tar --exclude=./examples -cf - .) | tar -xf - -C "$app/charts/biometrics"

render() {
  "$helm" template "$1" "$app" --namespace shop --set "image=$2" | sed '/^# Source:/d'
}

begin='# BEGIN rendered by hack/render-examples.sh'
end='# END rendered by hack/render-examples.sh'
grep -q "^$begin" "$file" && grep -q "^$end" "$file" || { echo "render-examples: $file lacks the BEGIN/END markers" >&2; exit 1; }
{
  # Through the BEGIN comment (up to the first line that is not a comment), then from END.
  awk -v b="$begin" -v e="$end" 'on && (!/^#/ || index($0, e) == 1) { exit } { print } index($0, b) == 1 { on = 1 }' "$file"
  render users registry.example.com/users:1.4.2
  render checkout registry.example.com/checkout:2.0.1
  awk -v m="$end" 'index($0, m) == 1 { on = 1 } on { print }' "$file"
} >"$work/app.yaml"

if $check; then
  diff -u "$file" "$work/app.yaml" >&2 ||
    { echo "render-examples: examples/app.yaml is not what the app chart renders: run bash hack/render-examples.sh" >&2; exit 1; }
else
  cp "$work/app.yaml" "$file"
fi
