#!/usr/bin/env bash
# Result cache benchmark, one run, same throwaway cluster (full seed: 10,000 chunks):
#  1. ../shared/workload/mcp_load.py --mix search=100, then the default mix: direct vs pgpilot with
#     the cache off vs pgpilot with the cache (local tier) vs pgpilot with the cache and Redis.
#  2. Cache-hit cost in the proxy: pgbench -M prepared, a 10-row read that is always a hit, with the
#     proxy's CPU per transaction from /proc; the same read with the cache off, and directly.
#  3. Miss overhead: pgbench -S -M prepared (random keys: nearly every read a miss and a fill).
#  4. Memory: cache bytes and pgpilot RSS after the runs.
#  5. The search query alone through pgbench (no Python client in the way): direct vs cached.
# usage: bench/cache.sh   (env: DURATION=20 CLIENTS=20 POOL=20 PGB_SECONDS=10; MCP=0 skips 1)
# The pool defaults to the client count, so pool queueing does not blur the comparison with direct.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/harness.sh
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; stop_services' EXIT
cargo build --release --bin pgpilot
TEST_FILES="${FILES:-500}" TEST_CHUNKS="${CHUNKS_PER_FILE:-20}" TEST_ROOTS="${ROOTS:-200}" TEST_ENTITIES="${ENTITIES:-5000}" \
  start_postgres
start_redis
py="${PGPILOT_VENV:-$PWD/target/venv}/bin/python"
declare -A port http pid
start_pilot() { # name, extra toml
  local name=$1 cfg="$HARNESS_DIR/$1.toml"
  port[$name]="$(free_port)"; http[$name]="$(free_port)"
  printf '[pool]\nmax_size = %s\n%b\n' "${POOL:-20}" "$2" >"$cfg"
  PGPILOT_LOG=error target/release/pgpilot --config "$cfg" --listen "127.0.0.1:${port[$name]}" \
    --http-listen "127.0.0.1:${http[$name]}" --upstream "postgres://app:app@127.0.0.1:$TEST_PG_PORT" &
  pid[$name]=$!; pids+=("$!")
}
start_pilot nocache '[cache]\nenabled = false'
start_pilot cache ''
start_pilot redis "[cache]\nredis_url = \"$TEST_REDIS_URL\""
sleep 1
cpu_us() { awk '{print ($14 + $15) * 10000}' "/proc/$1/stat"; }  # clock ticks (100 Hz) -> us
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

mcp() { # name, port, mix
  echo "== mcp_load $3 via $1"
  "$py" ../shared/workload/mcp_load.py --port "$2" --clients "${CLIENTS:-20}" --duration "${DURATION:-20}" \
    ${3:+--mix "$3"} --json "$HARNESS_DIR/$1.json" | tail -n 12 || true
}
# A short direct run first warms the buffer cache and the HNSW index (the first run after the
# cluster starts is several times slower, whoever runs it); direct runs again at the end.
"$py" ../shared/workload/mcp_load.py --port "$TEST_PG_PORT" --clients "${CLIENTS:-20}" --duration 8 >/dev/null || true
[ "${MCP:-1}" = 1 ] && for mix in search=100 ""; do
  mcp direct "$TEST_PG_PORT" "$mix"
  for name in nocache cache redis; do mcp "pgpilot-$name" "${port[$name]}" "$mix"; done
  mcp direct-again "$TEST_PG_PORT" "$mix"
done

echo "== latency at low concurrency: search=100 with 2 clients"
[ "${MCP:-1}" = 1 ] && for t in direct nocache cache; do
  p=${port[$t]:-$TEST_PG_PORT}
  CLIENTS=2 mcp "$t-2clients" "$p" search=100
done

echo "== hit cost: pgbench -M prepared -c 10, a 10-row read (pgbench_accounts aid 1..10)"
script="$HARNESS_DIR/ten.sql"
echo 'SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid BETWEEN 1 AND 10;' >"$script"
pgb() { # target name, port, pgbench args...
  local name=$1 p=$2; shift 2
  local before=0 after=0 out
  [ -n "${pid[$name]:-}" ] && before=$(cpu_us "${pid[$name]}")
  out=$(PGPASSWORD=app "$PG_BIN/pgbench" -h 127.0.0.1 -p "$p" -U app -n -j 2 -T "${PGB_SECONDS:-10}" "$@" bench 2>&1)
  [ -n "${pid[$name]:-}" ] && after=$(cpu_us "${pid[$name]}")
  local tx tps lat
  tx=$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out")
  tps=$(awk '/^tps/ {printf "%.0f", $3}' <<<"$out")
  lat=$(awk '/latency average/ {print $4}' <<<"$out")
  printf '%-16s tps %8s  latency %7s ms  proxy CPU %s us/txn\n' "$name" "$tps" "$lat" \
    "$( [ -n "${pid[$name]:-}" ] && awk -v a="$after" -v b="$before" -v t="$tx" 'BEGIN {printf "%.1f", (a - b) / t}' || echo -)"
}
compare() { # pgbench args, for direct, pgpilot-nocache and pgpilot-cache
  for t in direct nocache cache; do pgb "$t" "${port[$t]:-$TEST_PG_PORT}" "$@"; done
}
compare -M prepared -c 10 -f "$script"
echo "== miss overhead: pgbench -M prepared -c 10, every read a new key (a miss, a fill, an eviction later)"
miss="$HARNESS_DIR/miss.sql"
printf '\\set aid random(1, 200000)\n\\set r random(1, 1000000000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid AND :r > 0;\n' >"$miss"
compare -M prepared -c 10 -f "$miss"
echo "== the search query alone: pgbench -M prepared -c 2, one 768-d vector (cached after the first run)"
search="$HARNESS_DIR/search.sql"
vec=$("$py" -c 'import random; r = random.Random(7); print("[" + ",".join(f"{r.random() - 0.5:.4f}" for _ in range(768)) + "]")')
printf "SELECT code_chunks.id, code_chunks.content, code_files.relative_path, 1 - (code_chunks.embedding <=> '%s'::vector) AS similarity FROM code_chunks JOIN code_files ON code_chunks.code_file_id = code_files.id WHERE code_chunks.embedding IS NOT NULL AND code_files.is_deleted = false AND code_files.relative_path LIKE '%%.py' ORDER BY code_chunks.embedding <=> '%s'::vector LIMIT 10;\n" "$vec" "$vec" >"$search"
for t in direct cache; do
  p=${port[$t]:-$TEST_PG_PORT}
  out=$(PGPASSWORD=app "$PG_BIN/pgbench" -h 127.0.0.1 -p "$p" -U app -n -j 2 -c 2 -T "${PGB_SECONDS:-10}" -M prepared -f "$search" codebase 2>&1)
  printf '%-8s tps %8s  latency %8s ms\n' "$t" "$(awk '/^tps/ {printf "%.0f", $3}' <<<"$out")" "$(awk '/latency average/ {print $4}' <<<"$out")"
done
echo "== memory"
for name in nocache cache redis; do
  bytes=$(curl -s "http://127.0.0.1:${http[$name]}/health/status" | "$py" -c 'import json,sys; c=json.load(sys.stdin)["cache"]; print(c["bytes"], c["entries"], c["max_bytes"], c["hits"], c["misses"])')
  echo "pgpilot-$name: cache bytes/entries/max/hits/misses $bytes; RSS $(rss_mb "${pid[$name]}") MiB"
done
