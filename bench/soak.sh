#!/usr/bin/env bash
# Soak: ../shared/workload/mcp_load.py (the MCP default mix, asyncpg's default statement cache, the result cache
# on) through pgpilot for MINUTES, in one-minute runs back to back, with pgpilot's RSS sampled every 10 s.
# Memory must be flat after warm-up: the script prints the RSS curve and the growth over the second half of the
# run (the first half is warm-up: caches, statistics and the allocator's arenas fill), and exits non-zero on any
# error, stale read, or growth above 5% in that half.
# usage: bench/soak.sh   (env: MINUTES=10 CLIENTS=20 POOL=10)
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/harness.sh
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; stop_services' EXIT
cargo build --release --bin pgpilot
start_postgres
py="${PGPILOT_VENV:-$PWD/target/venv}/bin/python"
port="$(free_port)" http="$(free_port)"
printf '[pool]\nmax_size = %s\n' "${POOL:-10}" >"$HARNESS_DIR/soak.toml"
PGPILOT_LOG=warn target/release/pgpilot --config "$HARNESS_DIR/soak.toml" --listen "127.0.0.1:$port" \
  --http-listen "127.0.0.1:$http" --upstream "postgres://app:app@127.0.0.1:$TEST_PG_PORT" 2>"$HARNESS_DIR/soak.log" &
pid=$!
pids+=("$pid")
sleep 1
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
( while kill -0 "$pid" 2>/dev/null; do echo "$(date +%s) $(rss)"; sleep 10; done ) >"$HARNESS_DIR/rss.txt" &
pids+=("$!")
minutes="${MINUTES:-10}"
for m in $(seq "$minutes"); do
  "$py" ../shared/workload/mcp_load.py --port "$port" --clients "${CLIENTS:-20}" --duration 60 \
    --seed "$m" --json "$HARNESS_DIR/m$m.json" >/dev/null
  "$py" - "$HARNESS_DIR/m$m.json" "$m" "$(rss)" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"minute {sys.argv[2]}: {s['ops_per_s']:.0f} ops/s, errors {s['errors']}, stale {s['stale_reads']}, RSS {sys.argv[3]} KB")
sys.exit(1 if s["errors"] or s["stale_reads"] else 0)
PY
done
"$py" - "$HARNESS_DIR/rss.txt" <<'PY'
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
t0 = rows[0][0]
print("RSS curve (s, KB):", " ".join(f"{t - t0}:{kb}" for t, kb in rows[::3]))
half = (rows[-1][0] - t0) / 2
warm = [kb for t, kb in rows if t - t0 >= half]
growth = (warm[-1] - warm[0]) / warm[0]
print(f"second half ({half / 60:.0f} min -> end): {warm[0]} -> {warm[-1]} KB, growth {growth * 100:.1f}%, "
      f"peak {max(kb for _, kb in rows)} KB")
sys.exit(1 if growth > 0.05 else 0)
PY
