#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS each, default 60) with cargo fuzz
# (libFuzzer). The toolchain is stable, so without a sanitizer: a panic, an overflow check
# or a timeout is what counts as a crash. A crash leaves its input under
# fuzz/artifacts/<target>/; fix it and add the input as a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
targets=(pprof_summary schedule_duration agent_requests)
cargo fuzz build --fuzz-dir fuzz -s none
for target in "${targets[@]}"; do
  corpus="target/fuzz-corpus/$target"
  log="target/fuzz-corpus/$target.log"
  mkdir -p "$corpus"
  echo "fuzz: $target for ${seconds}s (seeds in fuzz/seeds/$target)"
  if ! cargo fuzz run --fuzz-dir fuzz -s none "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target found a crash (its input is under fuzz/artifacts/$target/)"
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" | sed 's/^/  /'
done
echo "fuzz: no crash in ${#targets[@]} targets x ${seconds}s"
