#!/usr/bin/env bash
# The whole test suite: throwaway PostgreSQL + Redis, Rust integration tests, Python driver tests.
# Needs: cargo, libclang, PostgreSQL 15 server binaries (+ pgvector, or the pgserver wheel's), psql/pgbench,
# redis-server, python3 with venv, chromium: scripts/prereqs.sh checks them first (as root on Debian it
# installs what is missing, otherwise it names the packages) and fills the venv in target/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
build_prereqs "tests/run.sh" && test_prereqs "tests/run.sh" || exit 1  # exports PGPILOT_VENV
source tests/harness.sh
trap stop_services EXIT
cargo build --release --bins
start_services
export PGPILOT_BIN="$PWD/target/release/pgpilot"
cargo test --profile ci-test -- --test-threads=2
"$PGPILOT_VENV/bin/python" -m pytest -q -p no:cacheprovider tests/clients
