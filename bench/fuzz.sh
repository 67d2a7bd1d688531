#!/usr/bin/env bash
# Fuzzes what pgpilot reads from the network and from clients' SQL (fuzz/fuzz_targets: frames, startup, sql) for
# SECONDS each, and prints the executions and time per target. A panic (or any crash) fails the run and leaves
# the input in fuzz/artifacts/TARGET/. CI runs it for 30 s per target; locally, longer:
#   SECONDS_PER_TARGET=600 bench/fuzz.sh [TARGETS]
# Needs cargo-fuzz (installed here when missing) and libFuzzer's -Z flags on the stable toolchain
# (RUSTC_BOOTSTRAP=1; no other toolchain can be fetched on these machines). --sanitizer none: Rust is memory-safe
# outside its few unsafe lines, and a panic is what is looked for; it also builds in a third of the time.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
targets="${1:-frames startup sql}"
secs="${SECONDS_PER_TARGET:-30}"
export PATH="$HOME/.cargo/bin:$PATH" RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cargo fuzz build --sanitizer none >/dev/null 2>&1 || cargo fuzz build --sanitizer none
for t in $targets; do
  mkdir -p "corpus/$t" && cp -n seeds/"$t"/* "corpus/$t"/ 2>/dev/null || true
  log="$(mktemp)"
  if ! cargo fuzz run --sanitizer none "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 \
      -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz $t: FAILED (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log")
  echo "fuzz $t: $runs executions in ${secs} s, no crash (corpus: $(ls "corpus/$t" | wc -l) inputs)"
  rm -f "$log"
done
