#!/usr/bin/env bash
# What building and testing pgpilot need from the machine, checked before anything runs, so that a missing piece
# is one line naming the package instead of a bindgen panic or a harness error minutes in.
# Sourced by ./run (build_prereqs), tests/run.sh (build_prereqs + test_prereqs) and .ci/run.
# As root on a Debian/Ubuntu machine what is missing is installed with apt; otherwise each missing piece is
# named with the package that provides it and the caller stops.

prereq_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

prereq_can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; }

# pg_query's build script (bindgen) needs libclang and clang's headers before any of pgpilot's code builds.
have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && ls "$LIBCLANG_PATH"/libclang*.so* >/dev/null 2>&1 && return 0
  if command -v dpkg-query >/dev/null; then
    prereq_installed libclang-dev
    return
  fi
  ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib64/libclang.so* /usr/lib/libclang.so* >/dev/null 2>&1
}

# Installs the named Debian packages (root + apt), or prints one line naming them and fails.
# $1: who speaks (the caller's name); $2: what needs them; the rest: packages.
prereq_install() {
  local who="$1" why="$2"
  shift 2
  if prereq_can_install; then
    echo "$who: installing $* ($why)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
      >/dev/null) || { echo "$who: apt-get install $* failed" >&2; return 1; }
    return 0
  fi
  echo "$who: $why: apt-get install $*" >&2
  return 1
}

# A Rust toolchain and libclang: what `cargo build` of pgpilot needs.
build_prereqs() {
  local who="$1"
  if ! command -v cargo >/dev/null; then
    echo "$who: cargo not found: install a Rust toolchain (rustup) first" >&2
    return 1
  fi
  have_libclang && return 0
  [ -z "${LIBCLANG_PATH:-}" ] || echo "$who: LIBCLANG_PATH=$LIBCLANG_PATH holds no libclang*.so" >&2
  prereq_install "$who" "building needs libclang (or set LIBCLANG_PATH)" clang libclang-dev
}

# The command -> Debian package pairs the test suite runs (tests/harness.sh, tests/clients).
TEST_TOOLS=(
  "psql postgresql-client-15" "pgbench postgresql-client-15" "pg_isready postgresql-client-15"
  "redis-server redis-server" "python3 python3" "socat socat" "ip iproute2" "openssl openssl"
  "chromium chromium" "docker-compose docker-compose" "pgbouncer pgbouncer"
)
TEST_PYTHON_PACKAGES=(asyncpg 'psycopg[binary]' 'sqlalchemy[asyncio]' greenlet pytest pgserver pyyaml)

# A command on PATH or in the sbin directories (Debian puts pgbouncer there, off a user's PATH).
prereq_have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

# Where the test venv goes: PGPILOT_VENV, else target/venv; when the checkout is not reachable by
# user postgres (a root checkout under /root), somewhere it is: the harness runs the pgserver wheel's
# initdb and postgres from the venv as that user.
test_venv() {
  if [ -n "${PGPILOT_VENV:-}" ]; then echo "$PGPILOT_VENV"; return; fi
  if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -x "$PWD" 2>/dev/null; then
    echo /opt/pgpilot-ci/venv
  else
    echo "$PWD/target/venv"
  fi
}

# The services' binaries, the tools the driver tests call, and the Python venv with the drivers
# (exported as PGPILOT_VENV).
test_prereqs() {
  local who="$1" pair missing=()
  for pair in "${TEST_TOOLS[@]}"; do
    prereq_have "${pair%% *}" || missing+=("${pair#* }")
  done
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql-15)
  # Debian's python3 has no ensurepip without python3-venv (python3 -m venv fails).
  if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    # shellcheck disable=SC2046 # one word per package, duplicates folded
    prereq_install "$who" "the tests need" $(printf '%s\n' "${missing[@]}" | sort -u) || return 1
  fi
  # Bookworm has no pgvector package (PGDG does): without it the harness uses the pgserver wheel's PostgreSQL 16.
  if prereq_can_install && ! prereq_installed postgresql-15-pgvector; then
    apt-get install -y -qq --no-install-recommends postgresql-15-pgvector >/dev/null 2>&1 || true
  fi
  local venv
  venv="$(test_venv)"
  export PGPILOT_VENV="$venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || { echo "$who: python3 -m venv $venv failed" >&2; return 1; }
  if ! "$venv/bin/python" -c 'import asyncpg, psycopg, sqlalchemy, greenlet, pytest, pgserver, yaml' 2>/dev/null; then
    echo "$who: installing the Python test packages into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "${TEST_PYTHON_PACKAGES[@]}" \
      || { echo "$who: pip install ${TEST_PYTHON_PACKAGES[*]} into $venv failed" >&2; return 1; }
  fi
}
