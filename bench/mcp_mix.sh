#!/usr/bin/env bash
# The MCP default mix (../shared/workload/mcp_load.py, no --mix) through pgpilot with the result cache
# on and off, interleaved, on a throwaway cluster with the full seed; then what the cache did per
# statement (from /queries: calls and cache hits per fingerprint) and its counters (/health/status).
# usage: bench/mcp_mix.sh   (env: DURATION=12 CLIENTS=10 POOL=10 REPEAT=2)
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/harness.sh
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; stop_services' EXIT
cargo build --release --bin pgpilot
TEST_FILES="${FILES:-500}" TEST_CHUNKS="${CHUNKS_PER_FILE:-20}" TEST_ROOTS="${ROOTS:-200}" TEST_ENTITIES="${ENTITIES:-5000}" \
  start_postgres
py="${PGPILOT_VENV:-$PWD/target/venv}/bin/python"
declare -A port http
for name in on off; do
  cfg="$HARNESS_DIR/$name.toml"; port[$name]="$(free_port)"; http[$name]="$(free_port)"
  printf '[pool]\nmax_size = %s\n[cache]\nenabled = %s\n' "${POOL:-10}" "$([ $name = on ] && echo true || echo false)" >"$cfg"
  PGPILOT_LOG=error target/release/pgpilot --config "$cfg" --listen "127.0.0.1:${port[$name]}" \
    --http-listen "127.0.0.1:${http[$name]}" --upstream "postgres://app:app@127.0.0.1:$TEST_PG_PORT" &
  pids+=("$!")
done
sleep 1
# Warm the buffer cache and the HNSW index first (the first run after a start is several times slower).
"$py" ../shared/workload/mcp_load.py --port "$TEST_PG_PORT" --clients "${CLIENTS:-10}" --duration 6 >/dev/null || true
for rep in $(seq "${REPEAT:-2}"); do
  for name in off on; do
    out="$HARNESS_DIR/$name-$rep.json"
    "$py" ../shared/workload/mcp_load.py --port "${port[$name]}" --clients "${CLIENTS:-10}" \
      --duration "${DURATION:-12}" --json "$out" >/dev/null || true
    "$py" - "$out" "cache $name, rep $rep" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
line = "  ".join(f"{r['op']} {r['p50_ms'] or 0:.1f}" for r in s["ops"])
print(f"{sys.argv[2]}: {s['ops_per_s']:.0f} ops/s, errors {s['errors']}, stale_reads {s['stale_reads']}; p50 ms: {line}")
PY
  done
done
echo "== cache on: counters"
curl -s "http://127.0.0.1:${http[on]}/health/status" | "$py" -c '
import json, sys
c = json.load(sys.stdin)["cache"]
print({k: c[k] for k in ("hits", "misses", "skipped", "hit_ratio", "stores", "invalidations",
                         "fills_discarded_by_commit", "too_large", "coalesced")})'
echo "== cache on: per statement (calls, cache hits)"
curl -s "http://127.0.0.1:${http[on]}/queries?sort=calls&limit=20" | "$py" -c '
import json, sys
for r in json.load(sys.stdin):
    if r["kind"] != "read" and not r["cache_hits"]:
        continue
    print("%7d calls %7d hits (%3.0f%%) %6.2f ms mean  %s" % (r["calls"], r["cache_hits"],
          100.0 * r["cache_hits"] / max(r["calls"], 1), r["mean_ms"], " ".join(r["query"].split())[:90]))'
