#!/usr/bin/env bash
# Checks the release binaries that `make release` built, and that the images build them
# the same way (the Dockerfiles' cargo command is this one).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
fail() { echo "release-check: $*" >&2; exit 1; }

for crate in operator agent; do
  grep -q "cargo build --release --locked -p biometrics-$crate" "$crate/Dockerfile" \
    || fail "$crate/Dockerfile does not build with: cargo build --release --locked -p biometrics-$crate"
  grep -q '^USER 65532:65532' "$crate/Dockerfile" || fail "$crate/Dockerfile does not run as non-root"
  "$bin/biometrics-$crate" --version | grep -q "biometrics-$crate" || fail "biometrics-$crate --version"
done

# Refusals of bad configuration, with the reason.
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
printf 'performance:\n  profiling:\n    max_podz: 3\n' >"$dir/bad.yaml"
out="$("$bin/biometrics-operator" --config "$dir/bad.yaml" 2>&1 || true)"
grep -q max_podz <<<"$out" || fail "the operator did not name the unknown config key: $out"
out="$("$bin/biometrics-agent" --target-host 10.0.0.1 --pod-name p --pod-namespace n --profiles-dir "$dir/p" 2>&1 || true)"
grep -q "not a loopback address" <<<"$out" || fail "the agent accepted a non-loopback target: $out"
setup_speedscope=$(sed -n 's/^speedscope_version=//p' hack/setup.sh)
grep -q "speedscope@$setup_speedscope " operator/Dockerfile \
  || fail "operator/Dockerfile does not vendor speedscope $setup_speedscope as hack/setup.sh does"
echo "release-check: binaries $(du -h "$bin/biometrics-operator" | cut -f1) (operator), $(du -h "$bin/biometrics-agent" | cut -f1) (agent); Dockerfiles build them the same way"
