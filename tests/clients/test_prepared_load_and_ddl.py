"""Named prepared statements across pooled server connections (issue 3), continued: pgbench -M prepared and the MCP
load driver with its default statement cache through a pool of 5, and DDL between executions of a prepared
statement (the server's cached-plan errors, and a Parse injected on a server that never had the statement)."""

import asyncio
import os
import re
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest

from conftest import (ALL_BUT_READBACK, BackendSampler, asyncpg_close_all, metrics, require_env, run_async,
                      run_mcp_load)
from pooled import POOL, asyncpg_connect_many, check_pool_drained


# --- 4. pgbench -M prepared -----------------------------------------------------------------------------------

def pg_tool(name):
    path = Path(require_env("PG_BIN")) / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not executable (PG_BIN should hold psql and pgbench)", pytrace=False)
    return str(path)


@pytest.mark.parametrize("script", ["select-only", "tpcb-like"])
def test_pgbench_prepared(start_proxy, pg_admin, script):
    proxy = start_proxy(pool_size=POOL)
    args = ["-S", "-c", "20"] if script == "select-only" else ["-c", "10"]
    cmd = [pg_tool("pgbench"), "-n", "-M", "prepared", "-T", "5", "-j", "2", *args,
           "-h", proxy.host, "-p", str(proxy.port), "-U", "app", "bench"]
    env = dict(os.environ, PGPASSWORD="app", PGCONNECT_TIMEOUT="10")
    for var in ("PGSERVICE", "PGSSLMODE", "PGOPTIONS", "PGDATABASE", "PGUSER", "PGHOST", "PGPORT"):
        env.pop(var, None)
    before = pg_admin.scalar("SELECT count(*) FROM pgbench_history", db="bench")
    with BackendSampler(pg_admin, "bench", proxy.started_at) as sampler:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"pgbench did not finish within {exc.timeout}s:\n{exc.stdout}\n{exc.stderr}")
    report = f"{' '.join(cmd)}\nexit {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    assert r.returncode == 0, report
    processed = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    assert processed and int(processed.group(1)) > 0, report
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    if failed:
        assert int(failed.group(1)) == 0, report
    assert "error" not in r.stderr.lower(), report
    assert 1 <= sampler.max <= POOL, f"saw {sampler.max} upstream backends, pool max is {POOL}"
    history = pg_admin.scalar("SELECT count(*) FROM pgbench_history", db="bench") - before
    assert history == (int(processed.group(1)) if script == "tpcb-like" else 0), (history, report)
    seen = metrics(proxy)
    assert seen.get("pgpilot_prepared_cache_hits_total", 0) > 0, seen
    check_pool_drained(proxy)


# --- 5. MCP-shaped load, default asyncpg statement cache ------------------------------------------------------



def mcp_load(proxy, tmp_path, name, *args, duration):
    """mcp_load.py without --statement-cache: asyncpg's default cache of 100 named statements per connection."""
    return run_mcp_load(proxy, tmp_path, name, *args, duration=duration, statement_cache=None)[1]


def test_mcp_load_default_statement_cache(start_proxy, tmp_path):
    """Stale reads are checked with one client only (see test_workload.py: the script's check races with itself)."""
    proxy = start_proxy(pool_size=POOL)
    done = mcp_load(proxy, tmp_path, "mixed", "--clients", "20", "--mix", ALL_BUT_READBACK, duration=10)
    assert set(done) == set(ALL_BUT_READBACK.replace("=", ",").split(",")[::2])
    done = mcp_load(proxy, tmp_path, "readback", "--clients", "1", "--mix", "readback=1", duration=3)
    assert set(done) == {"readback"}
    seen = metrics(proxy)
    assert seen.get("pgpilot_prepared_statements", 0) >= 5, seen
    assert seen.get("pgpilot_prepared_cache_hits_total", 0) > 0, seen
    check_pool_drained(proxy, databases=2)  # /health/status sums the codebase and workflow pools


# --- 6. DDL between executions --------------------------------------------------------------------------------

@pytest.fixture
def ddl_table(pg_admin):
    name = f"pgpilot_ddl_{uuid.uuid4().hex[:10]}"
    pg_admin.execute(f"CREATE TABLE {name} (a int, b text)")
    pg_admin.execute(f"INSERT INTO {name} VALUES (1, 'one'), (2, 'two')")
    pg_admin.execute(f"ALTER TABLE {name} OWNER TO app")
    yield name
    pg_admin.execute(f"DROP TABLE IF EXISTS {name}")


async def fetch_after_ddl(conn, sql):
    """The first execution after a result-changing DDL: asyncpg re-prepares transparently (outside a transaction)
    or raises one of the two errors PostgreSQL's 0A000 maps to. Then a fresh fetch must see the new shape."""
    try:
        rows = await conn.fetch(sql)
    except (asyncpg.exceptions.InvalidCachedStatementError, asyncpg.exceptions.FeatureNotSupportedError):
        rows = None
    if rows is not None:
        assert [tuple(r) for r in rows] == [(1, "one", 7), (2, "two", 7)], rows
    rows = await conn.fetch(sql)
    assert [tuple(r) for r in rows] == [(1, "one", 7), (2, "two", 7)], rows
    assert list(rows[0].keys()) == ["a", "b", "c"]


async def others_still_served(proxy, n=10):
    conns = await asyncpg_connect_many(proxy, n)
    try:
        got = await asyncio.gather(*(c.fetchval("SELECT $1::int * 3", i) for i, c in enumerate(conns)))
        assert got == [i * 3 for i in range(n)]
    finally:
        await asyncpg_close_all(conns)


# The DDL in these tests is made directly on the server, which the result cache (invalidation = "proxy")
# cannot see: they test the prepared-statement path, so the cache is off.
NO_CACHE = "[cache]\nenabled = false\n"


def test_ddl_between_executions(start_proxy, pg_admin, ddl_table):
    proxy = start_proxy(pool_size=POOL, extra_toml=NO_CACHE)
    sql = f"SELECT * FROM {ddl_table} ORDER BY a"

    async def main():
        conn = await asyncpg.connect(proxy.dsn(), timeout=15)  # default statement cache
        other = await asyncpg.connect(proxy.dsn(), timeout=15)
        try:
            for _ in range(3):
                rows = await conn.fetch(sql)
                assert [tuple(r) for r in rows] == [(1, "one"), (2, "two")]
                assert [tuple(r) for r in await other.fetch(sql)] == [(1, "one"), (2, "two")]
            stmt = await conn.prepare(sql)
            assert [tuple(r) for r in await stmt.fetch()] == [(1, "one"), (2, "two")]

            await conn.execute(f"ALTER TABLE {ddl_table} ADD COLUMN c int NOT NULL DEFAULT 7")

            await fetch_after_ddl(conn, sql)
            await fetch_after_ddl(other, sql)  # another client with the old statement in its cache
            # The explicit statement object cannot change shape: PostgreSQL's 0A000 reaches the client.
            with pytest.raises((asyncpg.exceptions.InvalidCachedStatementError,
                                asyncpg.exceptions.FeatureNotSupportedError)):
                await stmt.fetch()
            fresh = await conn.prepare(sql)
            assert [tuple(r) for r in await fresh.fetch()] == [(1, "one", 7), (2, "two", 7)]
            async with conn.transaction():  # and inside a transaction too
                assert [tuple(r) for r in await conn.fetch(sql)] == [(1, "one", 7), (2, "two", 7)]
            await others_still_served(proxy)
        finally:
            await asyncpg_close_all([conn, other])

    run_async(main(), 60)
    check_pool_drained(proxy)


def test_ddl_then_execution_on_a_server_that_lacks_the_statement(start_proxy, pg_admin, ddl_table):
    """The client's cached statement was prepared on server A before the DDL; its next execution lands on server B,
    which never had it, so pgpilot injects a Parse there. The client still holds the old row description, so the
    result must not silently come back in the new shape: it must be the 0A000 PostgreSQL itself would give (or
    asyncpg's transparent re-prepare after it)."""
    proxy = start_proxy(pool_size=2, extra_toml=NO_CACHE)
    sql = f"SELECT * FROM {ddl_table} ORDER BY a"

    async def main():
        conn = await asyncpg.connect(proxy.dsn(), timeout=15)
        holders = [await asyncpg.connect(proxy.dsn(), timeout=15) for _ in range(2)]
        txs = []
        try:
            async with conn.transaction():  # learn which server prepared the statement
                server_a = await conn.fetchval("SELECT pg_backend_pid()")
                assert [tuple(r) for r in await conn.fetch(sql)] == [(1, "one"), (2, "two")]
            for h in holders:  # take both server connections, then give back the one that is not A
                tx = h.transaction()
                await tx.start()
                txs.append((tx, await h.fetchval("SELECT pg_backend_pid()")))
            assert server_a in {pid for _, pid in txs}, (server_a, txs)
            for tx, pid in txs:
                if pid != server_a:
                    await tx.commit()

            await pg_admin_execute(f"ALTER TABLE {ddl_table} ADD COLUMN c int NOT NULL DEFAULT 7")
            await fetch_after_ddl(conn, sql)  # runs on B: A is held by the other client

            for tx, pid in txs:
                if pid == server_a:
                    await tx.commit()
            await fetch_after_ddl(conn, sql)
            await others_still_served(proxy)
        finally:
            await asyncpg_close_all([conn, *holders])

    async def pg_admin_execute(sql_text):
        await asyncio.to_thread(pg_admin.execute, sql_text)

    run_async(main(), 60)
    check_pool_drained(proxy)
