#!/usr/bin/env bash
# The MCP default mix (../shared/workload/mcp_load.py) with `[cache] invalidation = "replication"`:
# every write through pgpilot, then every write straight to PostgreSQL (--write-port, as psql, a
# migration or an unproxied service would) with reads through pgpilot checked against
# --stale-bound-ms = max_staleness_ms; interleaved REPEAT times. Reports ops/s, the cache's hit
# ratio and stale reads (must be 0).
# Needs a PostgreSQL with both pgvector and test_decoding: PG_BIN=<its bin directory>. Debian's
# PostgreSQL 15 has test_decoding but no pgvector package; pgvector builds against it
# (postgresql-server-dev-15; docs/BENCHMARKS.md says how this was run).
# usage: PG_BIN=... bench/mcp_split_writers.sh   (env: DURATION=12 CLIENTS=10 REPEAT=2 BOUND_MS=500)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${PG_BIN:-}" ] || { echo "set PG_BIN to a PostgreSQL bin directory with pgvector and test_decoding" >&2; exit 2; }
source tests/harness.sh
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; stop_services' EXIT
cargo build --release --bin pgpilot
TEST_FILES="${FILES:-500}" TEST_CHUNKS="${CHUNKS_PER_FILE:-20}" TEST_ROOTS="${ROOTS:-200}" TEST_ENTITIES="${ENTITIES:-5000}" \
  start_postgres
psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$TEST_PG_PORT" -U postgres -d postgres -qtAX -v ON_ERROR_STOP=1)
"${psql[@]}" -c "ALTER SYSTEM SET wal_level = logical" -c "ALTER SYSTEM SET synchronous_commit = on" \
  -c "ALTER ROLE app REPLICATION"
as_postgres "$PG_BIN/pg_ctl" -D "$HARNESS_DIR/pgdata" -l "$HARNESS_DIR/postgres.log" -m fast -w restart >/dev/null
py="${PGPILOT_VENV:-$PWD/target/venv}/bin/python"
bound="${BOUND_MS:-500}"
cfg="$HARNESS_DIR/split.toml"; port="$(free_port)"; http="$(free_port)"
printf '[pool]\nmax_size = 10\n[cache]\ninvalidation = "replication"\nmax_staleness_ms = %s\n' "$bound" >"$cfg"
PGPILOT_LOG=error target/release/pgpilot --config "$cfg" --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http" \
  --upstream "postgres://app:app@127.0.0.1:$TEST_PG_PORT" &
pid="$!"
sleep 1
"$py" ../shared/workload/mcp_load.py --port "$TEST_PG_PORT" --clients "${CLIENTS:-10}" --duration 6 >/dev/null || true
counters() { curl -s "http://127.0.0.1:$http/health/status"; }
for rep in $(seq "${REPEAT:-2}"); do
  for how in proxied direct; do
    extra=()
    [ "$how" = direct ] && extra=(--write-port "$TEST_PG_PORT" --stale-bound-ms "$bound")
    before="$(counters)"
    out="$HARNESS_DIR/$how-$rep.json"
    "$py" ../shared/workload/mcp_load.py --port "$port" --clients "${CLIENTS:-10}" --duration "${DURATION:-12}" \
      --json "$out" "${extra[@]}" >/dev/null || true
    "$py" - "$out" "$before" "$(counters)" "writes $how, rep $rep" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
a, b = json.loads(sys.argv[2])["cache"], json.loads(sys.argv[3])["cache"]
hits, misses = b["hits"] - a["hits"], b["misses"] - a["misses"]
streams = {r["database"]: r["state"] for r in b.get("replication", [])}
print(f"{sys.argv[4]}: {s['ops_per_s']:.0f} ops/s, errors {s['errors']}, stale_reads {s['stale_reads']}, "
      f"hit ratio {hits / max(hits + misses, 1):.1%} ({hits} hits), streams {streams}")
PY
  done
done
