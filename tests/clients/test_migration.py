"""`pgpilot --from-pgbouncer`: a PgBouncer configuration and its auth_file become a pgpilot configuration that
starts and serves the same clients (the same port, users and passwords) against real PostgreSQL; everything that
does not carry over is named. Debian's own sample pgbouncer.ini converts too."""
import asyncio
import hashlib
import os
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

from conftest import free_port, pg_host, pg_port, require_env, run_async


def convert(binary, ini):
    return subprocess.run([binary, "--from-pgbouncer", str(ini)], capture_output=True, text=True)


def test_a_pgbouncer_configuration_carries_over_and_serves_its_clients(tmp_path):
    binary = require_env("PGPILOT_BIN")
    port = free_port()
    md5 = "md5" + hashlib.md5(b"appapp").hexdigest()
    (tmp_path / "userlist.txt").write_text(f'"app" "{md5}"\n"ops" "SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vydg=="\n')
    (tmp_path / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={pg_host()} port={pg_port()} user=app password=app\n"
        f"legacy = host=10.9.9.9 port=5432 dbname=old\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        "auth_type = md5\nauth_file = userlist.txt\n"
        "pool_mode = transaction\ndefault_pool_size = 7\nmax_client_conn = 300\nreserve_pool_size = 3\n"
        "server_idle_timeout = 120\nquery_wait_timeout = 30\nadmin_users = ops\n"
        "logfile = /var/log/pgbouncer/pgbouncer.log\npidfile = /run/pgbouncer.pid\n")
    out = convert(binary, tmp_path / "pgbouncer.ini")
    assert out.returncode == 0, out.stderr
    # `ops` logs clients in with a SCRAM secret, which cannot log pgpilot in to the server: named, not lost.
    for named in ("reserve_pool_size", "logfile", "pidfile", "legacy: on 10.9.9.9:5432",
                  "auth_file ops: its secret is a hash"):
        assert named in out.stderr and named in out.stdout, f"{named} not named:\n{out.stderr}"
    toml = tmp_path / "pgpilot.toml"
    toml.write_text(out.stdout)
    check = subprocess.run([binary, "--check", "--config", str(toml)], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if not k.startswith("PGPILOT_")})
    assert check.returncode == 0, check.stderr
    for want in (f'listen = "127.0.0.1:{port}"', "max_size = 7", "max_client_conn = 300", "idle_timeout_ms = 120000",
                 "checkout_timeout_ms = 30000", 'admin_users = ["ops"]', 'auth = "md5"', 'auth = "scram-sha-256"'):
        assert want in check.stdout, f"{want} in\n{check.stdout}"

    env = {k: v for k, v in os.environ.items() if not k.startswith("PGPILOT_") and k != "DATABASE_URL"}
    proc = subprocess.Popen([binary, "--config", str(toml), "--http-listen", f"127.0.0.1:{free_port()}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async def client():
            deadline = time.monotonic() + 10
            while True:
                try:
                    c = await asyncpg.connect(host="127.0.0.1", port=port, user="app", password="app",
                                              database="app")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            try:
                assert await c.fetchval("SELECT current_user") == "app"
                assert await c.fetchval("SELECT $1::int + 1", 41) == 42  # a named prepared statement
            finally:
                await c.close()
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(host="127.0.0.1", port=port, user="app", password="wrong", database="app")
        run_async(client(), 30)
    finally:
        proc.terminate()
        proc.wait(10)


def test_debians_sample_configuration_converts(tmp_path):
    sample = Path("/etc/pgbouncer/pgbouncer.ini")
    if not sample.exists():
        pytest.skip("no Debian pgbouncer package here")
    out = convert(require_env("PGPILOT_BIN"), sample)
    assert out.returncode == 0, out.stderr
    assert "not carried over: [pgbouncer] logfile" in out.stderr
    # Its [databases] is empty: the upstream is named as something to set, and the result passes --check
    # (docs/MIGRATING-FROM-PGBOUNCER.md's second command).
    assert "[databases]: no entry: set upstream.url" in out.stderr
    toml = tmp_path / "pgpilot.toml"
    toml.write_text(out.stdout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGPILOT_") and k != "DATABASE_URL"}
    check = subprocess.run([require_env("PGPILOT_BIN"), "--check", "--config", str(toml)], capture_output=True,
                           text=True, env=env)
    assert check.returncode == 0 and "configuration is valid" in check.stderr, check
