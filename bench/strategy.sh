#!/usr/bin/env bash
# Static pools vs pgpilot's adaptive layer (slow lane, deferred BEGIN, adaptive size) under one server
# connection budget, on a throwaway cluster with the MCP seed: bench/strategy.py says what is measured.
# usage: bench/strategy.sh [strategy.py options, e.g. --parts A --repeat 3]
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/harness.sh
trap 'stop_services' EXIT
cargo build --release --bin pgpilot
TEST_FILES="${FILES:-500}" TEST_CHUNKS="${CHUNKS_PER_FILE:-20}" TEST_ROOTS="${ROOTS:-200}" TEST_ENTITIES="${ENTITIES:-5000}" \
  start_postgres
py="${PGPILOT_VENV:-$PWD/target/venv}/bin/python"
"$py" bench/strategy.py --bin "$PWD/target/release/pgpilot" --pg-port "$TEST_PG_PORT" "$@"
