#!/usr/bin/env bash
# What `[cache] invalidation = "replication"` costs per write that bypasses pgpilot: pgbench updates
# (one row by primary key per transaction) straight to a throwaway PostgreSQL 15 with
# wal_level=logical, first with no pgpilot, then with pgpilot streaming that database; the CPU of
# the walsender (test_decoding) and of pgpilot per write, from /proc, and the server's TPS with and
# without the stream. Interleaved REPEAT times.
# usage: bench/replication_cost.sh   (env: DURATION=10 CLIENTS=4 REPEAT=2)
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/harness.sh
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; stop_services' EXIT
cargo build --release --bin pgpilot
start_pgss_postgres
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
psql=("$bin/psql" -h 127.0.0.1 -p "$TEST_PGSS_PORT" -U postgres -d app -qtAX -v ON_ERROR_STOP=1)
"${psql[@]}" -c "ALTER ROLE app REPLICATION" \
  -c "CREATE TABLE rc (id int PRIMARY KEY, v int NOT NULL DEFAULT 0)" -c "ALTER TABLE rc OWNER TO app" \
  -c "INSERT INTO rc (id) SELECT generate_series(1, 10000)"
printf '\\set id random(1, 10000)\nUPDATE rc SET v = v + 1 WHERE id = :id;\n' >"$HARNESS_DIR/update.sql"
cfg="$HARNESS_DIR/repl.toml"; port="$(free_port)"; http="$(free_port)"
printf '[cache]\ninvalidation = "replication"\n' >"$cfg"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk="$(getconf CLK_TCK)"

run_pgbench() {  # -> transactions
  "$bin/pgbench" -h 127.0.0.1 -p "$TEST_PGSS_PORT" -U postgres -n -f "$HARNESS_DIR/update.sql" \
    -c "${CLIENTS:-4}" -j 2 -T "${DURATION:-10}" app 2>/dev/null | awk '/number of transactions actually processed/ {print $NF}' | cut -d/ -f1
}

for rep in $(seq "${REPEAT:-2}"); do
  n="$(run_pgbench)"
  echo "rep $rep, no stream:   $(( n / ${DURATION:-10} )) TPS"
  PGPILOT_LOG=error target/release/pgpilot --config "$cfg" --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http" \
    --upstream "postgres://app:app@127.0.0.1:$TEST_PGSS_PORT" &
  pid="$!"
  sleep 0.5
  PGPASSWORD=app "$bin/psql" -h 127.0.0.1 -p "$port" -U app -d app -qtAX -c "SELECT 1" >/dev/null  # starts the stream
  for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$http/health/status" | grep -q '"state":"live"' && break
    sleep 0.1
  done
  wal="$("${psql[@]}" -c "SELECT pid FROM pg_stat_replication LIMIT 1")"
  p0="$(cpu_ticks "$pid")"; w0="$(cpu_ticks "$wal")"
  n="$(run_pgbench)"
  p1="$(cpu_ticks "$pid")"; w1="$(cpu_ticks "$wal")"
  echo "rep $rep, with stream: $(( n / ${DURATION:-10} )) TPS; per write: walsender $(( (w1 - w0) * 1000000 / clk / n )) us CPU, pgpilot $(( (p1 - p0) * 1000000 / clk / n )) us CPU ($n writes)"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  sleep 0.5
done
