#!/usr/bin/env bash
# Benchmark: direct PostgreSQL vs PgBouncer vs pgpilot in one interleaved run, with proxy CPU per
# transaction, using ../shared/bench/pgbench-matrix.sh. Targets the machine's PostgreSQL on 5432.
# usage: bench/pgbench.sh            (env: DURATION, REPEAT, TESTS, POOL, as in pgbench-matrix.sh)
#        PGBOUNCER_DIR=/path/to/dir   a directory holding a newer pgbouncer binary (built outside this
#                                     repo from its public repository; apt's 1.18 cannot run -M prepared)
#        UPSTREAM_SOCKET=/var/run/postgresql   PgBouncer and pgpilot reach PostgreSQL by its Unix-domain
#                                     socket in this directory instead of 127.0.0.1 (clients still use TCP)
# Targets: direct PostgreSQL, PgBouncer, pgpilot at its defaults (cache and insights on) and pgpilot
# with the result cache off.
# Results: bench-results-*/results.md; copy the summary into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="$(cd ../shared && pwd)"
POOL="${POOL:-20}"
psql_pg=(psql "host=127.0.0.1 port=5432 user=postgres dbname=postgres" -qtAX)
"${psql_pg[@]}" -c "DO \$\$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='app') THEN CREATE ROLE app LOGIN PASSWORD 'app'; END IF; END\$\$"
if [ -z "$("${psql_pg[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'bench'")" ]; then
  "${psql_pg[@]}" -c "CREATE DATABASE bench OWNER app"
  PGPASSWORD=app pgbench -i -q -s "${SCALE:-10}" -h 127.0.0.1 -p 5432 -U app bench
fi
cargo build --release --bin pgpilot
export PATH="${PGBOUNCER_DIR:+$PGBOUNCER_DIR:}$PATH"
[ -f /tmp/pgbouncer-bench/pgbouncer.pid ] && kill "$(cat /tmp/pgbouncer-bench/pgbouncer.pid)" 2>/dev/null || true
sleep 0.3
if ! PORT=6432 POOL="$POOL" bash "$shared/bench/start-pgbouncer.sh" >/dev/null 2>&1; then
  # Debian bookworm ships PgBouncer 1.18, which predates max_prepared_statements (1.21): same setup without it.
  sed -i '/^max_prepared_statements/d' /tmp/pgbouncer-bench/pgbouncer.ini
  su postgres -s /bin/sh -c "pgbouncer -d /tmp/pgbouncer-bench/pgbouncer.ini"
  sleep 0.5
fi
if [ -n "${UPSTREAM_SOCKET:-}" ]; then
  pid="$(cat /tmp/pgbouncer-bench/pgbouncer.pid)"; kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  sed -i "s|^\* = host=127.0.0.1 |* = host=$UPSTREAM_SOCKET |" /tmp/pgbouncer-bench/pgbouncer.ini
  grep -q "^\* = host=$UPSTREAM_SOCKET " /tmp/pgbouncer-bench/pgbouncer.ini || { echo "pgbouncer.ini: no socket host" >&2; exit 1; }
  su postgres -s /bin/sh -c "pgbouncer -d /tmp/pgbouncer-bench/pgbouncer.ini"; sleep 0.5
fi
upstream="postgres://app:app@127.0.0.1:5432"
[ -n "${UPSTREAM_SOCKET:-}" ] && upstream="postgres://app:app@${UPSTREAM_SOCKET//\//%2F}:5432"
echo "pgbouncer: $(pgbouncer --version | head -1); upstream $upstream" >&2
cfg="$(mktemp)"; cfg_off="$(mktemp)"
# pgpilot at its defaults, and with the result cache off (pooling alone, as PgBouncer has no cache);
# bench/cache.sh measures the cache's hits (hit cost, fill overhead, workload).
printf '[pool]\nmax_size = %s\n[server]\nmax_client_conn = 2000\n' "$POOL" >"$cfg"
printf '[pool]\nmax_size = %s\n[server]\nmax_client_conn = 2000\n[cache]\nenabled = false\n' "$POOL" >"$cfg_off"
# setsid: each proxy in its own session, as a service or a daemonized PgBouncer is. Started in this
# script's session, pgpilot shared pgbench's CPU share under the kernel's autogroup scheduling
# (kernel.sched_autogroup_enabled = 1 here) and its clients saw 100-600 ms stalls PgBouncer's did not.
PGPILOT_LOG=warn setsid target/release/pgpilot --config "$cfg" --listen 127.0.0.1:6433 --http-listen 127.0.0.1:9933 \
  --upstream "$upstream" &
pilot=$!
# The same proxy with the result cache off.
PGPILOT_LOG=warn setsid target/release/pgpilot --config "$cfg_off" --listen 127.0.0.1:6434 --http-listen 127.0.0.1:9934 \
  --upstream "$upstream" &
pilot_off=$!
trap 'kill $pilot $pilot_off 2>/dev/null; kill "$(cat /tmp/pgbouncer-bench/pgbouncer.pid)" 2>/dev/null; rm -f "$cfg" "$cfg_off"' EXIT
sleep 0.5
PGPASSWORD=app DURATION="${DURATION:-15}" REPEAT="${REPEAT:-2}" \
  TESTS="${TESTS:-sel-simple-10 sel-extended-10 sel-prepared-10 sel-simple-50 tpcb-10 churn-10}" \
  bash "$shared/bench/pgbench-matrix.sh" direct=5432 pgbouncer=6432 pgpilot=6433 pgpilot-nocache=6434
