#!/usr/bin/env bash
# Instructions per transaction, repeatable on a noisy machine: pgpilot under valgrind's callgrind
# while pgbench runs through it, once per protocol mode and configuration.
# usage: bench/callgrind.sh [MODES] [CONFIGS]   defaults: "simple extended prepared" "default cache-off"
#        (CONFIGS: default cache-off isolation-off static-pool strategy-off insights-off reuse-unnamed as-sent cache-as-sent; MODES may include "churn": a new connection per transaction, and "tpcb": pgbench's default
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
if [ -z "$BIN" ]; then
  cargo build --release --bin pgpilot >&2
  BIN=target/release/pgpilot
fi
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
    *) echo "unknown config $config" >&2; exit 2 ;;
  esac
  for mode in $modes; do
    file="$OUT/callgrind.$config.$mode.out"
    PGPILOT_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$file" \
      "$BIN" --config "$cfg" --listen 127.0.0.1:6499 --http-listen 127.0.0.1:9999 \
      --upstream "postgres://app:app@127.0.0.1:$PG_PORT" 2>"$OUT/valgrind.log" &
    pid=$!
    for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p 6499 && break; sleep 0.2; done
    # Mode "churn": a new connection (SCRAM login) per transaction, -M simple: instructions per connection.
    run() {
      local m="$mode" c=(-S)
      [ "$mode" = churn ] && m=simple c=(-S -C)
      [ "$mode" = tpcb ] && m=simple c=()
      [ "$mode" = rows ] && m=prepared c=(-f "$OUT/rows.sql")
      PGPASSWORD=app pgbench -n -M "$m" "${c[@]}" -c "${CLIENTS:-1}" -j 1 -t "$1" -h 127.0.0.1 -p 6499 -U app bench >/dev/null
    }
    run "$WARMUP"
    callgrind_control --zero "$pid" >/dev/null
    run "$TXNS"
    # Dumped before the shutdown, whose one-off cost (dropping the cache, the HTTP server) is no
    # transaction's.
    rm -f "$file".*
    callgrind_control --dump "$pid" >/dev/null
    kill -INT "$pid"; wait "$pid" || true
    mv "$(ls "$file".* | head -1)" "$file"
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$file")
    echo "$config $mode $total $((total / (${CLIENTS:-1} * TXNS)))"
  done
done
