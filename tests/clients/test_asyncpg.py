"""asyncpg through pgpilot in transaction mode with a 5-connection pool.

Every connection here uses statement_cache_size=0, the path of deployments that turned asyncpg's statement cache
off for PgBouncer: asyncpg then uses the unnamed statement and re-sends Parse together with each Bind/Execute/Sync
(no state spans a Sync). test_prepared.py covers the default named statement cache.
"""
import asyncio
import contextlib
import time
import uuid

import asyncpg
import pytest

from conftest import BackendSampler, asyncpg_close_all, connect_all, run_async, wait_until

CLIENTS = 50
ROUNDS = 4


class Boom(Exception):
    pass


async def connect(proxy, **kw):
    return await asyncpg.connect(proxy.dsn(), statement_cache_size=0, timeout=10, **kw)


async def connect_many(proxy, n, **kw):
    return await connect_all(lambda: connect(proxy, **kw), n, asyncpg_close_all)


close_all = asyncpg_close_all


async def client_work(conn, table, task):
    insert = f"INSERT INTO {table} (task, seq, note) VALUES ($1, $2, $3)"
    for r in range(ROUNDS):
        base = task * 1000 + r
        assert await conn.fetchval("SELECT $1::int + 1", base) == base + 1
        row = await conn.fetchrow("SELECT $1::text AS name, $2::int[] AS arr", f"task-{task}", [task, r])
        assert (row["name"], row["arr"]) == (f"task-{task}", [task, r])

        async with conn.transaction():  # reads its own uncommitted row, on the same server connection
            await conn.execute(insert, task, r * 10, "tx")
            assert await conn.fetchval(f"SELECT note FROM {table} WHERE task = $1 AND seq = $2", task, r * 10) == "tx"
            assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE task = $1", task) == r * 4 + 1

        await conn.executemany(insert, [(task, r * 10 + k, "many") for k in (1, 2, 3)])

        with pytest.raises(Boom):  # client-side exception: asyncpg rolls the transaction back
            async with conn.transaction():
                await conn.execute(insert, task, r * 10 + 9, "rolled")
                assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE task = $1 AND seq = $2",
                                           task, r * 10 + 9) == 1
                raise Boom()
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE task = $1 AND seq = $2",
                                   task, r * 10 + 9) == 0

        with pytest.raises(asyncpg.DivisionByZeroError):  # extended-protocol error outside a transaction
            await conn.fetchval("SELECT 1 / $1::int", 0)
        assert await conn.fetchval("SELECT $1::int * 2", base) == base * 2

        with pytest.raises(asyncpg.DivisionByZeroError):  # simple-protocol error inside a transaction
            async with conn.transaction():
                await conn.execute(insert, task, r * 10 + 8, "rolled")
                await conn.execute("SELECT 1/0")
        assert not conn.is_in_transaction()
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE task = $1", task) == (r + 1) * 4


def test_fifty_clients_over_five_server_connections(proxy, pg_admin, table):
    async def main():
        conns = await connect_many(proxy, CLIENTS)  # all 50 connected at once, then all work at once
        try:
            return await asyncio.gather(*(client_work(c, table, i) for i, c in enumerate(conns)),
                                        return_exceptions=True)
        finally:
            await close_all(conns)

    with BackendSampler(pg_admin, "app", proxy.started_at) as sampler:
        results = run_async(main(), 120)
    errors = [f"client {i}: {r!r}" for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert errors == [], f"{len(errors)} of {CLIENTS} clients failed, first: {errors[:5]}"
    assert pg_admin.scalar(f"SELECT count(*) FROM {table}") == CLIENTS * ROUNDS * 4
    assert pg_admin.scalar(f"SELECT count(*) FROM {table} WHERE note = 'rolled'") == 0
    assert pg_admin.scalar(f"SELECT count(DISTINCT task) FROM {table}") == CLIENTS
    assert 1 <= sampler.max <= proxy.pool_size, f"saw {sampler.max} upstream backends, pool max is {proxy.pool_size}"

    assert proxy.http_get("/health")[0] == 200
    status = wait_until(lambda: (s := proxy.pool_status())["active"] == 0 and s, 10,
                        message="all server connections returned to the pool (active == 0)")
    assert status["waiting"] == 0 and status["size"] <= proxy.pool_size, status


def test_session_settings_follow_their_client(proxy):
    """SET outside a transaction sticks to that client across transactions, and never leaks to others."""
    schema = f"pgpilot_sp_{uuid.uuid4().hex[:10]}"

    async def main():
        a = await connect(proxy)
        others = await connect_many(proxy, 10)
        try:
            await a.execute(f"CREATE SCHEMA {schema}")
            await a.execute(f"SET search_path = {schema}, public")
            await a.execute("SET statement_timeout = '250ms'")

            async def check_a():
                for _ in range(20):
                    assert await a.fetchval("SHOW statement_timeout") == "250ms"
                    assert await a.fetchval("SELECT current_schema()") == schema
                    async with a.transaction():
                        assert await a.fetchval("SHOW search_path") == f"{schema}, public"
                        await a.execute("SELECT pg_sleep(0.002)")

            async def check_other(c):
                for _ in range(20):
                    assert await c.fetchval("SHOW statement_timeout") == "0"
                    async with c.transaction():
                        assert await c.fetchval("SELECT current_schema()") == "public"
                        await c.execute("SELECT pg_sleep(0.002)")

            await asyncio.gather(check_a(), *(check_other(c) for c in others))

            # The setting takes effect for a: its long statement is cancelled by statement_timeout ...
            with pytest.raises(asyncpg.QueryCanceledError):
                await a.execute("SELECT pg_sleep(3)")
            # ... and for nobody else: 10 clients over 5 server connections touch every one of them.
            await asyncio.gather(*(c.execute("SELECT pg_sleep(0.4)") for c in others))

            async with a.transaction():  # SET LOCAL ends with its transaction
                await a.execute("SET LOCAL statement_timeout = '777ms'")
                assert await a.fetchval("SHOW statement_timeout") == "777ms"
            assert await a.fetchval("SHOW statement_timeout") == "250ms"
            await a.execute("RESET statement_timeout")
            await a.execute("RESET search_path")
            assert await a.fetchval("SHOW statement_timeout") == "0"
            assert await a.fetchval("SELECT current_schema()") == "public"
        finally:
            with contextlib.suppress(Exception):  # never mask the real failure
                await a.execute(f"DROP SCHEMA IF EXISTS {schema}")
            await close_all([a, *others])

    run_async(main(), 60)


def test_set_inside_transaction_follows_commit_and_rollback(proxy):
    async def main():
        c = await connect(proxy)
        try:
            async with c.transaction():
                await c.execute("SET statement_timeout = '4321ms'")
            assert await c.fetchval("SHOW statement_timeout") == "4321ms"
            with pytest.raises(Boom):
                async with c.transaction():
                    await c.execute("SET statement_timeout = '999ms'")
                    assert await c.fetchval("SHOW statement_timeout") == "999ms"
                    raise Boom()
            assert await c.fetchval("SHOW statement_timeout") == "4321ms"
        finally:
            await c.close(timeout=5)

    run_async(main(), 30)


def test_application_name_from_server_settings(proxy):
    names = [f"pgpilot-app-{k}" for k in range(10)]

    async def main():
        conns = [await connect(proxy, server_settings={"application_name": n}) for n in names]
        try:
            async def check(c, name):
                for _ in range(15):
                    assert await c.fetchval("SHOW application_name") == name
                    async with c.transaction():
                        assert await c.fetchval("SELECT current_setting('application_name')") == name
                        await c.execute("SELECT pg_sleep(0.002)")
            await asyncio.gather(*(check(c, n) for c, n in zip(conns, names)))
        finally:
            await close_all(conns)

    run_async(main(), 60)


def test_pool_release_resets_the_connection(proxy, table):
    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)  # asyncpg reports "Resetting ... active transaction"
        pool = await asyncpg.create_pool(proxy.dsn(), min_size=1, max_size=1, statement_cache_size=0, timeout=10,
                                         server_settings={"application_name": "pgpilot-pool"})
        try:
            c = await pool.acquire(timeout=10)
            await c.execute("SET statement_timeout = '1234ms'")
            await c.execute("SET application_name = 'changed'")
            await c.execute("BEGIN")
            await c.execute(f"INSERT INTO {table} VALUES (1, 1, 'uncommitted')")
            await pool.release(c, timeout=10)  # ROLLBACK + asyncpg's reset query (... RESET ALL) through pgpilot

            c = await pool.acquire(timeout=10)
            try:
                assert not c.is_in_transaction()
                assert await c.fetchval("SHOW statement_timeout") == "0"
                assert await c.fetchval("SHOW application_name") == "pgpilot-pool"
                assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            finally:
                await pool.release(c, timeout=10)
        finally:
            await asyncio.wait_for(pool.close(), 10)

    run_async(main(), 60)


def test_timeout_sends_cancel_request(proxy, pg_admin):
    marker = f"pgpilot_cancel_{uuid.uuid4().hex[:10]}"

    async def main():
        a, b = await connect(proxy), await connect(proxy)
        try:
            # b sleeps on another server connection: a cancel routed to the wrong backend would hit it.
            bystander = asyncio.ensure_future(b.execute("SELECT pg_sleep(1.5)"))
            await asyncio.sleep(0)
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await a.fetchval(f"SELECT pg_sleep(10) /* {marker} */", timeout=0.5)
            # asyncpg sent a CancelRequest; the next query waits for the cancelled one to end.
            try:
                assert await asyncio.wait_for(a.fetchval("SELECT $1::int + 1", 41), 5) == 42
            except asyncio.TimeoutError:
                pytest.fail("the query after the timeout waited > 5s: pg_sleep(10) was not cancelled")
            elapsed = time.monotonic() - t0
            assert elapsed < 3, f"timeout + cancel + next query took {elapsed:.2f}s"
            await asyncio.wait_for(bystander, 5)
        finally:
            await close_all([a, b])

    run_async(main(), 30)
    wait_until(lambda: pg_admin.scalar("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                                       " AND query LIKE %s AND pid <> pg_backend_pid()", (f"%{marker}%",)) == 0,
               3, message="the cancelled pg_sleep is gone from pg_stat_activity")
