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
cfg="$HARNESS_DIR/pgpilot.toml"; printf '[pool]\nmax_size = %s\n' "${POOL:-10}" >"$cfg"
PGPILOT_LOG=warn target/release/pgpilot --config "$cfg" --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http" \
  --upstream "postgres://app:app@127.0.0.1:$TEST_PG_PORT" &
pilot=$!
sleep 1
py="${PGPILOT_VENV:-$PWD/target/venv}/bin/python"
for target in "direct:$TEST_PG_PORT" "pgpilot:$port"; do
  name="${target%%:*}"; p="${target##*:}"
  echo "== $name"
  "$py" ../shared/workload/mcp_load.py --port "$p" --clients "${CLIENTS:-20}" --duration "${DURATION:-20}" \
    --json "$HARNESS_DIR/$name.json" | tail -n 12 || true
done
echo "== pgpilot /queries (top 5 by total time)"
curl -s "http://127.0.0.1:$http/queries?sort=total_ms&limit=5" | "$py" -c \
  'import json,sys; [print(f"{r[\"calls\"]:>7} calls {r[\"mean_ms\"]:8.2f} ms mean {r[\"p95_ms\"]:8.2f} p95  {r[\"query\"][:70]!r}") for r in json.load(sys.stdin)]'
