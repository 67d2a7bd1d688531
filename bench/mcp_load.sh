#!/usr/bin/env bash
# The MCP workload (../shared/workload/mcp_load.py, asyncpg with its default statement cache) run
# directly against PostgreSQL and through pgpilot, one after the other on a throwaway cluster
# with the full seed (10,000 chunks). usage: bench/mcp_load.sh   (env: DURATION=20 CLIENTS=20 POOL=10)
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/harness.sh
trap 'kill ${pilot:-} 2>/dev/null; stop_services' EXIT
cargo build --release --bin pgpilot
TEST_FILES="${FILES:-500}" TEST_CHUNKS="${CHUNKS_PER_FILE:-20}" TEST_ROOTS="${ROOTS:-200}" TEST_ENTITIES="${ENTITIES:-5000}" \
  start_postgres
port="$(free_port)"; http="$(free_port)"
# Cache off: this compares pooling with PgBouncer; bench/cache.sh measures the result cache.
cfg="$HARNESS_DIR/pgpilot.toml"; printf '[pool]\nmax_size = %s\n[cache]\nenabled = false\n' "${POOL:-10}" >"$cfg"
PGPILOT_LOG=warn target/release/pgpilot --config "$cfg" --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http" \
  --upstream "postgres://app:app@127.0.0.1:$TEST_PG_PORT" &
pilot=$!
# PgBouncer (apt) in front of the same cluster, transaction mode, same pool size.
bouncer_port="$(free_port)"; bdir="$HARNESS_DIR/pgbouncer"; mkdir -p "$bdir"
secret=$("$PG_BIN/psql" -h 127.0.0.1 -p "$TEST_PG_PORT" -U postgres -qtAX -c "SELECT rolpassword FROM pg_authid WHERE rolname='app'")
printf '"app" "%s"\n' "$secret" >"$bdir/userlist.txt"
printf '[databases]\n* = host=127.0.0.1 port=%s\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %s\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = %s/userlist.txt\npool_mode = transaction\ndefault_pool_size = %s\nmax_client_conn = 500\nlogfile = %s/pgbouncer.log\npidfile = %s/pgbouncer.pid\n' \
  "$TEST_PG_PORT" "$bouncer_port" "$bdir" "${POOL:-10}" "$bdir" "$bdir" >"$bdir/pgbouncer.ini"
chown -R postgres "$bdir" 2>/dev/null || true
runuser -u postgres -- pgbouncer -d "$bdir/pgbouncer.ini" || echo "pgbouncer did not start"
trap 'kill ${pilot:-} "$(cat "$bdir/pgbouncer.pid" 2>/dev/null)" 2>/dev/null; stop_services' EXIT
sleep 1
py="${PGPILOT_VENV:-$PWD/target/venv}/bin/python"
# name:port:statement-cache ("" = asyncpg's default, named statements; PgBouncer 1.18 cannot pool those)
for target in "direct:$TEST_PG_PORT:" "pgpilot:$port:" "direct-nocache:$TEST_PG_PORT:0" \
              "pgbouncer-nocache:$bouncer_port:0" "pgpilot-nocache:$port:0"; do
  IFS=: read -r name p cache <<<"$target"
  echo "== $name"
  "$py" ../shared/workload/mcp_load.py --port "$p" --clients "${CLIENTS:-20}" --duration "${DURATION:-20}" \
    ${cache:+--statement-cache "$cache"} --json "$HARNESS_DIR/$name.json" | tail -n 10 || true
done
echo "== pgpilot /queries (top 5 by total time)"
curl -s "http://127.0.0.1:$http/queries?sort=total_ms&limit=5" | "$py" -c '
import json, sys
for r in json.load(sys.stdin):
    print("%7d calls %8.2f ms mean %8.2f ms p95  %r" % (r["calls"], r["mean_ms"], r["p95_ms"], r["query"][:70]))'
