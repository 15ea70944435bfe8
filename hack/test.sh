#!/usr/bin/env bash
# Every test binary of the workspace, TEST_LANES of them at a time, each with
# RUST_TEST_THREADS tests at once; then the doc tests. What `make unit` runs.
#
# `cargo test` runs its test binaries one after another, and holds the build directory's
# lock while it does, so two cannot share a target directory. Most of these binaries spend
# their time waiting (on captures of whole seconds, pods starting, Redis), and every test
# binds addresses of its own, so they can overlap. Binaries named in SOLO run alone first:
# the rollout verdicts compare CPU per request, and their noise bounds were measured on an
# otherwise quiet machine.
#
# Each binary's output is kept in target/test-logs/<package>-<binary>.log and printed when
# it fails. TEST_ARGS go to every test binary (a name filter, --nocapture).
set -euo pipefail
cd "$(dirname "$0")/.."
LANES=${TEST_LANES:-2}
# A binary still running after this long (seconds) is stopped and counted as failed.
TIMEOUT=${TEST_TIMEOUT:-1200}
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
# The longest first, so that the lanes end together; the rest follow in cargo's order.
LONGEST=(operator/e2e agent/cache operator/cache_e2e operator/signals_e2e ui/browser agent/capture
  tests/apiserver/kubectl crds/biometrics_crds operator/cluster_e2e operator/chart_e2e operator/rbac)
SOLO=(operator/rollout_e2e)
CARGO=${CARGO:-cargo}
LOGS=target/test-logs
rm -rf "$LOGS" && mkdir -p "$LOGS"

# "<package dir>/<target name>" and the executable, for every test binary.
"$CARGO" test --workspace --locked --no-run --message-format=json-render-diagnostics |
  jq -r --arg root "$(pwd -P)/" 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
    | (.manifest_path | ltrimstr($root) | rtrimstr("/Cargo.toml")) + "/" + .target.name + " " + .executable' \
  >"$LOGS/binaries"
[[ -s $LOGS/binaries ]] || { echo "no test binaries were built" >&2; exit 1; }

# Runs one binary from its package's directory, as cargo does; prints a line when it ends.
run_one() {
  local label=$1 exe=$2 log
  log="$LOGS/${label//\//-}.log"
  local start=$SECONDS status=0
  # shellcheck disable=SC2086 # TEST_ARGS is words
  (cd "${label%/*}" && CARGO_MANIFEST_DIR=$PWD timeout --kill-after=10 "$TIMEOUT" "$exe" ${TEST_ARGS:-}) \
    </dev/null >"$log" 2>&1 || status=$?
  if ((status == 124)); then echo "(stopped after ${TIMEOUT}s)" >>"$log"; fi
  local summary
  summary=$(grep -E '^test result:' "$log" | tail -1 || true)
  if ((status == 0)); then
    printf '  ok  %-34s %4ss  %s\n' "$label" $((SECONDS - start)) "${summary#test result: ok. }"
  else
    printf 'FAIL  %-34s %4ss  exit %s\n' "$label" $((SECONDS - start)) "$status"
    sed 's/^/    | /' "$log"
    echo "  $label: (cd ${label%/*} && $exe)" >"$LOGS/failed-${label//\//-}"
  fi
}
export -f run_one
# Each lane's tests take free ports from a part of the range of their own
# (biometrics_test_support::free_port), so two binaries never walk the same ports.
export LOGS TEST_ARGS TIMEOUT BIOMETRICS_TEST_LANES=$LANES

# The line of binary label $1 ("<label> <executable>"), if it was built.
binary() { grep -E "^$1 " "$LOGS/binaries" || true; }

ordered() {
  local name
  for name in "$@"; do binary "$name"; done
  grep -vE "^($(
    IFS='|'
    echo "${LONGEST[*]}|${SOLO[*]}"
  )) " "$LOGS/binaries" || true
}

started=$SECONDS
for name in "${SOLO[@]}"; do
  line=$(binary "$name")
  # shellcheck disable=SC2086 # label and executable
  if [[ -n $line ]]; then run_one $line; fi
done
# xargs hands the next binary to whichever lane frees first.
ordered "${LONGEST[@]}" |
  xargs -r -P "$LANES" --process-slot-var=BIOMETRICS_TEST_LANE -L 1 bash -c 'run_one "$@"' _
echo "test binaries: $(wc -l <"$LOGS/binaries") in $((SECONDS - started))s, $LANES at a time"

failed=$(find "$LOGS" -name 'failed-*' | wc -l)
if ((failed > 0)); then
  echo "$failed test binaries failed; each runs alone (a test's name after it runs only that test) as"
  cat "$LOGS"/failed-*
  exit 1
fi
"$CARGO" test --workspace --locked --doc --quiet
