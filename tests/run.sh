#!/usr/bin/env bash
# The whole test suite: throwaway PostgreSQL + Redis, Rust integration tests, Python driver tests.
# Needs: cargo, PostgreSQL 15 server binaries + pgvector, pgbench, psql, redis-server, python3 (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/harness.sh
trap stop_services EXIT
cargo build --release --bins
start_services
export PGPILOT_BIN="$PWD/target/release/pgpilot"
VENV="${PGPILOT_VENV:-$PWD/target/venv}"
cargo test --profile ci-test -- --test-threads=2
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/clients
