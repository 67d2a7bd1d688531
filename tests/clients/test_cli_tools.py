"""psql and pgbench (libpq) through pgpilot in transaction mode with a 5-connection pool, over TCP and Unix-domain
sockets."""
import os
import re
import subprocess
from pathlib import Path

import asyncpg
import pytest

from conftest import BackendSampler, pg_port, require_env, run_async


def tool(name):
    path = Path(require_env("PG_BIN")) / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not executable (PG_BIN should hold psql and pgbench)", pytrace=False)
    return str(path)


def run(cmd, timeout=60):
    env = dict(os.environ, PGPASSWORD="app", PGCONNECT_TIMEOUT="10")
    for var in ("PGSERVICE", "PGSSLMODE", "PGOPTIONS", "PGDATABASE", "PGUSER", "PGHOST", "PGPORT"):
        env.pop(var, None)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{cmd[0]} did not finish within {timeout}s:\n{exc.stdout}\n{exc.stderr}")


def psql(proxy, *args, db="app"):
    return run([tool("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-qtA", "-h", proxy.host, "-p", str(proxy.port),
                "-U", "app", "-d", db, *args])


def test_psql_multi_statement_query(proxy):
    r = psql(proxy, "-c", "BEGIN; SELECT 1; COMMIT;")
    assert (r.returncode, r.stdout.strip()) == (0, "1"), r.stderr
    # One simple Query holding a whole transaction, then an error inside one: the session must end cleanly.
    r = psql(proxy, "-c", "BEGIN; SELECT 40 + 2; SELECT current_setting('transaction_isolation'); COMMIT;",
             "-c", "SELECT 'after'")
    assert (r.returncode, r.stdout.split()) == (0, ["42", "read", "committed", "after"]), r.stderr
    r = psql(proxy, "-c", "BEGIN; SELECT 1/0; COMMIT;")
    assert r.returncode != 0 and "division by zero" in r.stderr, (r.returncode, r.stderr)
    r = psql(proxy, "-c", "SELECT 'clean'")
    assert (r.returncode, r.stdout.strip()) == (0, "clean"), r.stderr


def escape(value):
    table = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
    return "".join(table.get(ch, ch) for ch in value)


def test_psql_copy_both_ways(proxy, table, tmp_path):
    values = ["plain", "tab\there", "new\nline", "back\\slash", "üñíçødé ✓", "", "x" * 5000]
    lines = [f"{i}\t{i % 4}\t{escape(values[i % len(values)]) if i % 9 else chr(92) + 'N'}\n" for i in range(30000)]
    src, dst = tmp_path / "in.tsv", tmp_path / "out.tsv"
    src.write_text("".join(lines), encoding="utf-8")
    r = psql(proxy, "-c", f"\\copy {table} FROM '{src}'")
    assert r.returncode == 0, r.stderr
    r = psql(proxy, "-c", f"SELECT count(*), count(note) FROM {table}")
    assert (r.returncode, r.stdout.strip()) == (0, f"30000|{30000 - len(range(0, 30000, 9))}"), r.stderr
    r = psql(proxy, "-c", f"\\copy (SELECT * FROM {table} ORDER BY task) TO '{dst}'")
    assert r.returncode == 0, r.stderr
    assert dst.read_bytes() == src.read_bytes()


def pgbench(proxy, *args):
    cmd = [tool("pgbench"), "-n", "-T", "5", "-c", "10", "-j", "2", *args,
           "-h", proxy.host, "-p", str(proxy.port), "-U", "app", "bench"]
    r = run(cmd, timeout=90)
    report = f"{' '.join(cmd)}\nexit {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    assert r.returncode == 0, report
    processed = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    assert processed and int(processed.group(1)) > 0, report
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    if failed:  # pgbench >= 15 prints it
        assert int(failed.group(1)) == 0, report
    assert "error" not in r.stderr.lower(), report
    return int(processed.group(1))


@pytest.mark.parametrize("mode", ["simple", "extended"])
@pytest.mark.parametrize("script", ["select-only", "tpcb-like"])
def test_pgbench(proxy, pg_admin, script, mode):
    before = pg_admin.scalar("SELECT count(*) FROM pgbench_history", db="bench")
    with BackendSampler(pg_admin, "bench", proxy.started_at) as sampler:
        processed = pgbench(proxy, "-M", mode, *(["-S"] if script == "select-only" else []))
    assert 1 <= sampler.max <= proxy.pool_size, f"saw {sampler.max} upstream backends, pool max is {proxy.pool_size}"
    history = pg_admin.scalar("SELECT count(*) FROM pgbench_history", db="bench") - before
    # tpcb-like inserts one history row per committed transaction; select-only writes nothing.
    assert history == (processed if script == "tpcb-like" else 0), (history, processed)


def test_unix_domain_sockets_both_ways(start_proxy, tmp_path):
    """A same-machine setup: pgpilot reaches PostgreSQL by its socket (libpq's %2F host) and listens on its own
    (server.unix_socket_dir); psql, pgbench -M prepared and asyncpg connect by the directory, as with PostgreSQL."""
    sockets = tmp_path / "sock"
    sockets.mkdir()
    upstream = f"postgres://app:app@{require_env('HARNESS_DIR').replace('/', '%2F')}:{pg_port()}"
    proxy = start_proxy(upstream=upstream, server_toml=f'unix_socket_dir = "{sockets}"')
    by_socket = ["-h", str(sockets), "-p", str(proxy.port), "-U", "app"]
    # Both sides at once: the client on pgpilot's socket, the server connection on PostgreSQL's
    # (inet_server_addr() is NULL there).
    r = run([tool("psql"), "-X", "-qtA", *by_socket, "-d", "app", "-c", "SELECT inet_server_addr() IS NULL"])
    assert (r.returncode, r.stdout.strip()) == (0, "t"), r.stderr
    r = run([tool("pgbench"), "-n", "-S", "-M", "prepared", "-t", "200", "-c", "4", "-j", "2", *by_socket, "bench"])
    assert r.returncode == 0 and "number of transactions actually processed: 800" in r.stdout, r.stdout + r.stderr

    async def over_asyncpg():
        conn = await asyncpg.connect(host=str(sockets), port=proxy.port, user="app", password="app", database="app")
        try:
            return await conn.fetchval("SELECT $1::int * 2", 21)
        finally:
            await conn.close()

    assert run_async(over_asyncpg(), 30) == 42
