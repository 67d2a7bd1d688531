#!/usr/bin/env bash
# Instructions per transaction, repeatable on a noisy machine: pgpilot under valgrind's callgrind
# while pgbench runs through it, once per protocol mode and configuration.
# usage: bench/callgrind.sh [MODES] [CONFIGS]   defaults: "simple extended prepared" "default cache-off"
#        (CONFIGS: default cache-off isolation-off static-pool strategy-off insights-off reuse-unnamed as-sent cache-as-sent,
#        and pgbouncer: PgBouncer from PGBOUNCER_DIR (built from its repository) measured the same way; MODES may include "churn": a new connection per transaction, and "tpcb": pgbench's default
#        TPC-B-like script (7 statements, writes), -M simple; TXNS=500 WARMUP=100 suit both; and "rows":
#        a read of 50 rows of pgbench_accounts by range, -M prepared, what a search result looks like;
#        pgbench sets :scale to 1 for a custom script: the ranges fall in the first 100,000 rows)
# env: BIN (a pgpilot binary to measure instead of building this checkout's, e.g. a copy built at
# another commit for a before/after), PG_PORT (5432), CLIENTS (1: two clients make the count depend on how their wake-ups interleave), TXNS (4000), WARMUP (1000), OUT (/tmp/pgpilot-callgrind)
# Counts only the measured run (dumped before shutdown): start-up, logins, the pool's first connections, the first parse of
# each statement and the cache's first decisions happen in a warm-up run, after which the counters
# are zeroed. Prints "config mode instructions per_txn"; the callgrind.out files stay in $OUT for
# callgrind_annotate. Needs the bench database (bench/pgbench.sh creates it, scale 10).
set -euo pipefail
cd "$(dirname "$0")/.."
modes="${1:-simple extended prepared}"
configs="${2:-default cache-off}"
PG_PORT="${PG_PORT:-5432}" TXNS="${TXNS:-4000}" WARMUP="${WARMUP:-1000}" OUT="${OUT:-/tmp/pgpilot-callgrind}"
mkdir -p "$OUT"
printf '\\set aid random(1, 100000 * :scale - 50)\nSELECT aid, abalance, filler FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 49;\n' >"$OUT/rows.sql"
BIN="${BIN:-}"
if [ -z "$BIN" ] && [ "$configs" != pgbouncer ]; then
  cargo build --release --bin pgpilot >&2
  BIN=target/release/pgpilot
fi
# PgBouncer in front of the same PostgreSQL, set up as bench/pgbench.sh's (transaction pooling,
# pool 20, max_prepared_statements 200, SCRAM) with server TLS off as pgpilot's here. It refuses
# to run as root: valgrind runs as postgres, in a directory it may write.
start_pgbouncer() {
  local dir="$OUT/pgbouncer" secret
  mkdir -p "$dir" && chmod 777 "$dir"
  secret=$(psql "host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres" -qtAX \
    -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
  printf '"app" "%s"\n' "$secret" >"$dir/userlist.txt"
  printf '[databases]\n* = host=127.0.0.1 port=%s\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 6499
unix_socket_dir =\nauth_type = scram-sha-256\nauth_file = %s/userlist.txt\npool_mode = transaction
default_pool_size = 20\nmax_client_conn = 2000\nmax_prepared_statements = 200\nserver_tls_sslmode = disable
logfile = %s/pgbouncer.log\n' "$PG_PORT" "$dir" "$dir" >"$dir/pgbouncer.ini"
  chown -R postgres "$dir"
  out="$dir/callgrind.out"
  su postgres -s /bin/sh -c "exec valgrind --tool=callgrind --callgrind-out-file=$out \
    $PGBOUNCER_DIR/pgbouncer $dir/pgbouncer.ini" 2>"$OUT/valgrind.log" &
  pid=$! vg=
  for _ in $(seq 100); do
    vg=$(pgrep -u postgres -f "callgrind-out-file=$out" | head -1) && break
    sleep 0.1
  done
}

# callgrind_control for the process measured (as its user: PgBouncer's is postgres).
ctl() {
  if [ "$config" = pgbouncer ]; then
    su postgres -s /bin/sh -c "callgrind_control $1 $vg" >/dev/null
  else
    callgrind_control "$1" "$vg" >/dev/null
  fi
}

for config in $configs; do
  cfg="$OUT/$config.toml"
  case "$config" in
    default) printf '[pool]\nmax_size = 20\n' >"$cfg" ;;
    cache-off) printf '[pool]\nmax_size = 20\n[cache]\nenabled = false\n' >"$cfg" ;;
    static-pool) printf '[pool]\nmax_size = 20\nadaptive = false\n' >"$cfg" ;;
    strategy-off) printf '[pool]\nmax_size = 20\n[strategy]\nenabled = false\n' >"$cfg" ;;
    # Session isolation's check of the table list per statement off (cache off): its cost.
    isolation-off) printf '[pool]\nmax_size = 20\nisolate_attached_code = false\n[cache]\nenabled = false\n' >"$cfg" ;;
    insights-off) printf '[pool]\nmax_size = 20\n[cache]\nenabled = false\n[insights]\nenabled = false\n' >"$cfg" ;;
    # The server-prepared strategy's choice depends on timing: these two pin either side of it.
    reuse-unnamed) printf '[pool]\nmax_size = 20\n[cache]\nenabled = false\n[prepared]\nreuse_unnamed = true\n' >"$cfg" ;;
    as-sent) printf '[pool]\nmax_size = 20\n[cache]\nenabled = false\n[strategy]\nserver_prepared = false\n' >"$cfg" ;;
    # The defaults with that choice pinned to as-sent: against as-sent, the cache's own miss cost.
    cache-as-sent) printf '[pool]\nmax_size = 20\n[strategy]\nserver_prepared = false\n' >"$cfg" ;;
    pgbouncer) [ -x "${PGBOUNCER_DIR:-}/pgbouncer" ] || { echo "config pgbouncer needs PGBOUNCER_DIR" >&2; exit 2; } ;;
    *) echo "unknown config $config" >&2; exit 2 ;;
  esac
  for mode in $modes; do
    file="$OUT/callgrind.$config.$mode.out" out="$OUT/callgrind.$config.$mode.out"
    if [ "$config" = pgbouncer ]; then
      start_pgbouncer
    else
      PGPILOT_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$BIN" --config "$cfg" --listen 127.0.0.1:6499 --http-listen 127.0.0.1:9999 \
        --upstream "postgres://app:app@127.0.0.1:$PG_PORT" 2>"$OUT/valgrind.log" &
      pid=$! vg=$!
    fi
    for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p 6499 && break; sleep 0.2; done
    # Mode "churn": a new connection (SCRAM login) per transaction, -M simple: instructions per connection.
    run() {
      local m="$mode" c=(-S)
      [ "$mode" = churn ] && m=simple c=(-S -C)
      [ "$mode" = tpcb ] && m=simple c=()
      [ "$mode" = rows ] && m=prepared c=(-f "$OUT/rows.sql")
      # (Seeded, the warm-up and the measured run differently: each run reads the same keys, and
      # the measured run's are not the warm-up's, which the cache would answer. tpcb-like still
      # varies by about +-200 between runs: paths that depend on time, as write rates.)
      PGPASSWORD=app pgbench -n -M "$m" "${c[@]}" -c "${CLIENTS:-1}" -j 1 -t "$1" --random-seed="$2" \
        -h 127.0.0.1 -p 6499 -U app bench >/dev/null 2> >(grep -v 'setting random seed' >&2)
    }
    run "$WARMUP" 1
    ctl --zero
    run "$TXNS" 2
    # Dumped before the shutdown, whose one-off cost (dropping the cache, the HTTP server) is no
    # transaction's.
    rm -f "$out".*
    ctl --dump
    kill -INT "$vg"; wait "$pid" || true
    mv "$(ls "$out".* | head -1)" "$file"
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$file")
    echo "$config $mode $total $((total / (${CLIENTS:-1} * TXNS)))"
  done
done
