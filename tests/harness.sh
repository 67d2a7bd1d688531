#!/usr/bin/env bash
# Starts the throwaway services the test suite talks to and exports where they are.
# Sourced by tests/run.sh; also usable by hand: `source tests/harness.sh; start_services`.
#
# PostgreSQL: a private cluster (initdb from the installed PostgreSQL 15 + pgvector) on a free port, so that
# upstream auth methods can be tested (the machine's own server trusts everyone). Roles:
#   postgres (superuser, trust)   app/app (scram-sha-256)   md5user/md5pass (md5)
#   plainuser/plainpass (password: cleartext upstream)       trustuser (trust)
# Databases: app (owner app), codebase + workflow (../shared/workload, small sizes), bench (pgbench).
# Redis: a private redis-server on a free port.
set -euo pipefail

HARNESS_DIR="${HARNESS_DIR:-$(mktemp -d /tmp/pgpilot-test.XXXXXX)}"
chmod 755 "$HARNESS_DIR"
chown postgres: "$HARNESS_DIR" 2>/dev/null || true

# PostgreSQL binaries that have pgvector: the system's (postgresql-15-pgvector) when present, otherwise the
# PostgreSQL 16 + pgvector that the `pgserver` wheel ships (Debian bookworm has no pgvector package).
pick_pg_bin() {
  local sys
  sys="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -n "$sys" ] && ls /usr/share/postgresql/*/extension/vector.control >/dev/null 2>&1; then echo "$sys"; return; fi
  local py="${PGPILOT_VENV:-$PWD/target/venv}/bin/python"
  "$py" -c 'import os, pgserver; print(os.path.join(os.path.dirname(pgserver.__file__), "pginstall", "bin"))' 2>/dev/null \
    || echo "$sys"
}
PG_BIN="${PG_BIN:-$(pick_pg_bin)}"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The workload schema runs CREATE EXTENSION pgcrypto only for gen_random_uuid(), which is core since PostgreSQL 13.
# pgserver's build has no contrib: give it an empty pgcrypto so the shared schema loads unchanged.
shim_pgcrypto() {
  local ext
  ext="$("$PG_BIN/pg_config" --sharedir)/extension"
  [ -f "$ext/pgcrypto.control" ] && return 0
  printf "comment = 'test shim: gen_random_uuid() is core'\ndefault_version = '1.3'\nrelocatable = true\n" >"$ext/pgcrypto.control"
  echo "-- empty: gen_random_uuid() is built in" >"$ext/pgcrypto--1.3.sql"
}

start_postgres() {
  shim_pgcrypto
  local data="$HARNESS_DIR/pgdata"
  TEST_PG_PORT="$(free_port)"
  mkdir -p "$data" && chown postgres: "$data" 2>/dev/null || true
  as_postgres "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$HARNESS_DIR/initdb.log" 2>&1
  cat >"$data/pg_hba.conf" <<HBA
local all all trust
host all postgres 127.0.0.1/32 trust
host all trustuser 127.0.0.1/32 trust
host all md5user 127.0.0.1/32 md5
host all plainuser 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
HBA
  local preload=""
  [ -f "$("$PG_BIN/pg_config" --pkglibdir)/pg_stat_statements.so" ] && preload="-c shared_preload_libraries=pg_stat_statements"
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$HARNESS_DIR/postgres.log" -w start \
    -o "-p $TEST_PG_PORT -k $HARNESS_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 -c max_prepared_transactions=10 $preload -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
  local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$TEST_PG_PORT" -U postgres -qtAX -v ON_ERROR_STOP=1)
  "${psql[@]}" -d postgres <<SQL
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE ROLE trustuser LOGIN;
CREATE ROLE plainuser LOGIN PASSWORD 'plainpass';
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5pass';
CREATE DATABASE app OWNER app;
CREATE DATABASE bench OWNER app;
GRANT ALL ON DATABASE app TO md5user, plainuser, trustuser;
SQL
  "${psql[@]}" -d app -c "GRANT ALL ON SCHEMA public TO md5user, plainuser, trustuser"
  FILES="${TEST_FILES:-100}" CHUNKS_PER_FILE="${TEST_CHUNKS:-10}" ROOTS="${TEST_ROOTS:-50}" ENTITIES="${TEST_ENTITIES:-1000}" \
    PATH="$PG_BIN:$PATH" bash "$(dirname "${BASH_SOURCE[0]}")/../../shared/workload/load.sh" "host=127.0.0.1 port=$TEST_PG_PORT user=postgres" >"$HARNESS_DIR/load.log"
  PGPASSWORD=app "$PG_BIN/pgbench" -i -q -s 2 -h 127.0.0.1 -p "$TEST_PG_PORT" -U app bench >"$HARNESS_DIR/pgbench-init.log" 2>&1
  export TEST_PG_HOST=127.0.0.1 TEST_PG_PORT PG_BIN
}

# A second, plain cluster from the distribution's PostgreSQL with pg_stat_statements preloaded:
# the reference the insights statistics are checked against (the pgvector build has no contrib).
start_pgss_postgres() {
  local bin data="$HARNESS_DIR/pgss"
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -n "$bin" ] && [ -f "$("$bin/pg_config" --pkglibdir)/pg_stat_statements.so" ] || { echo "harness: no pg_stat_statements" >&2; return 0; }
  TEST_PGSS_PORT="$(free_port)"
  mkdir -p "$data" && chown postgres: "$data" 2>/dev/null || true
  as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$HARNESS_DIR/initdb-pgss.log" 2>&1
  printf 'local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$data/pg_hba.conf"
  as_postgres "$bin/pg_ctl" -D "$data" -l "$HARNESS_DIR/pgss.log" -w start -o "-p $TEST_PGSS_PORT -k $HARNESS_DIR \
    -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all \
    -c fsync=off -c synchronous_commit=off -c wal_level=logical -c max_wal_senders=40 -c max_replication_slots=40" >/dev/null
  "$bin/psql" -h 127.0.0.1 -p "$TEST_PGSS_PORT" -U postgres -d postgres -qtAX -v ON_ERROR_STOP=1 \
    -c "SET password_encryption = 'scram-sha-256'" -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE app OWNER app"
  "$bin/psql" -h 127.0.0.1 -p "$TEST_PGSS_PORT" -U postgres -d app -qtAX -c "CREATE EXTENSION pg_stat_statements"
  export TEST_PGSS_PORT
}

start_redis() {
  TEST_REDIS_PORT="$(free_port)"
  redis-server --port "$TEST_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$HARNESS_DIR" --logfile "$HARNESS_DIR/redis.log" --pidfile "$HARNESS_DIR/redis.pid"
  export TEST_REDIS_PORT TEST_REDIS_URL="redis://127.0.0.1:$TEST_REDIS_PORT"
}

stop_services() {
  as_postgres "$PG_BIN/pg_ctl" -D "$HARNESS_DIR/pgdata" -m immediate stop >/dev/null 2>&1 || true
  [ -d "$HARNESS_DIR/pgss" ] && as_postgres "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/pg_ctl" \
    -D "$HARNESS_DIR/pgss" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$HARNESS_DIR/redis.pid" ] && kill "$(cat "$HARNESS_DIR/redis.pid")" 2>/dev/null || true
}

start_services() {
  start_postgres
  start_pgss_postgres
  start_redis
  export HARNESS_DIR
  echo "harness: postgres on 127.0.0.1:$TEST_PG_PORT, redis on $TEST_REDIS_URL, files in $HARNESS_DIR" >&2
}
