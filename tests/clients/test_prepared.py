"""Named prepared statements across pooled server connections (issue 3), with real drivers.

Every test runs its own pgpilot in transaction mode, mostly with a pool of 5 under many more clients (1 or 2
server connections where a test needs to know which one a client lands on), and lets the drivers use named
prepared statements the way they do by default: asyncpg's statement cache (statement_cache_size left at
its default of 100), SQLAlchemy's asyncpg dialect (its prepared statement cache on top of asyncpg's), psycopg 3
with prepare_threshold=0 (every statement prepared as _pg3_N). A client's statement is then Parsed on one server
connection and Bound on others: pgpilot answers Parse/Close itself where it can and injects a Parse where a server
lacks the statement. pgbench -M prepared, the MCP load driver and DDL between executions: test_prepared_load_and_ddl.py.
"""
import asyncio
import random
from decimal import Decimal

import psycopg
import psycopg._connection_base as psycopg_base
import pytest
from psycopg import errors, pq
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from conftest import BackendSampler, asyncpg_close_all, connect_all, metrics, run_async
from pooled import POOL, asyncpg_connect_many, check_pool_drained, failures
from sa_tasks import items_table, task_rounds


class Boom(Exception):
    pass


# --- 1. asyncpg, default statement cache ----------------------------------------------------------------------

ASYNCPG_CLIENTS = 100
ASYNCPG_ROUNDS = 3


def asyncpg_statements(table):
    """30 distinct statements: (sql, args(task), expected(task, own_rows))."""
    stmts = []
    for k in range(20):
        stmts.append((f"SELECT $1::int + {k}", lambda t: (t,), lambda t, own, k=k: t + k))
    for k in range(20, 24):
        stmts.append((f"SELECT $1::text || '-{k}'", lambda t: (f"t{t}",), lambda t, own, k=k: f"t{t}-{k}"))
    for k in range(24, 26):
        stmts.append((f"SELECT $1::bigint * {k}", lambda t: (t + 2 ** 40,), lambda t, own, k=k: (t + 2 ** 40) * k))
    stmts.append(("SELECT $1::numeric + 26", lambda t: (Decimal(t) / 4,), lambda t, own: Decimal(t) / 4 + 26))
    stmts.append(("SELECT $1::int[] || 27", lambda t: ([t],), lambda t, own: [t, 27]))
    for k in (28, 29):
        stmts.append((f"SELECT count(*) + {k} FROM {table} WHERE task = $1", lambda t: (t,),
                      lambda t, own, k=k: len(own) + k))
    assert len({sql for sql, _, _ in stmts}) == 30
    return stmts


async def asyncpg_client(conn, table, task, stmts):
    insert_sql = f"INSERT INTO {table} (task, seq, note) VALUES ($1, $2, $3)"
    count_sql = f"SELECT count(*) FROM {table} WHERE task = $1"
    seqs_sql = f"SELECT seq FROM {table} WHERE task = $1 ORDER BY seq"
    rows_sql = f"SELECT seq, note FROM {table} WHERE task = $1 ORDER BY seq"
    own = []  # seqs of this task's committed rows, ascending
    times7 = await conn.prepare("SELECT $1::int * 7")  # an explicit statement object, used across checkouts
    rng = random.Random(task)
    for r in range(ASYNCPG_ROUNDS):
        order = list(stmts)
        rng.shuffle(order)
        for i, (sql, args, expected) in enumerate(order):
            got = await conn.fetchval(sql, *args(task))
            assert got == expected(task, own), (sql, got)
            if i % 10 != 9:
                continue
            step = i // 10
            base = 1000 * r + 100 * step
            assert await times7.fetchval(task + base) == (task + base) * 7
            if step == 0:  # transaction: insert, read own rows back, cursors over them
                async with conn.transaction():
                    await conn.execute(insert_sql, task, base, "tx")
                    assert await conn.fetchval(count_sql, task) == len(own) + 1
                    seen = [row["seq"] async for row in conn.cursor(seqs_sql, task, prefetch=2)]
                    assert seen == sorted(own + [base])
                    cur = await conn.cursor(rows_sql, task)
                    head = await cur.fetch(2)
                    await cur.forward(1)
                    tail = await cur.fetch(1000)
                    expect = sorted(own + [base])
                    assert [row["seq"] for row in head] == expect[:2]
                    assert [row["seq"] for row in tail] == expect[3:]
                own.append(base)
            elif step == 1:  # executemany (one pipeline, atomic) then a rolled back transaction
                await conn.executemany(insert_sql, [(task, base + k, "many") for k in (1, 2, 3)])
                own.extend(base + k for k in (1, 2, 3))
                with pytest.raises(Boom):
                    async with conn.transaction():
                        await conn.execute(insert_sql, task, base + 9, "rolled")
                        assert await conn.fetchval(count_sql, task) == len(own) + 1
                        raise Boom()
            else:  # a cursor in a transaction that only reads, then a plain read
                async with conn.transaction():
                    cur = await conn.cursor(rows_sql, task)
                    rows = await cur.fetch(len(own) + 5)
                    assert [(row["seq"], row["note"]) for row in rows][:1] == [(min(own), "tx")]
                    assert len(rows) == len(own)
                assert await conn.fetchval(count_sql, task) == len(own)
            own.sort()
    return len(own)


def test_asyncpg_default_cache_hundred_clients(start_proxy, pg_admin, table):
    proxy = start_proxy(pool_size=POOL)
    stmts = asyncpg_statements(table)

    async def main():
        conns = await asyncpg_connect_many(proxy, ASYNCPG_CLIENTS)  # default statement_cache_size (100)
        try:
            results = await asyncio.gather(*(asyncpg_client(c, table, i, stmts) for i, c in enumerate(conns)),
                                           return_exceptions=True)
            seen = await asyncio.to_thread(metrics, proxy)  # while every client still holds its statements
            return results, seen
        finally:
            await asyncpg_close_all(conns)

    with BackendSampler(pg_admin, "app", proxy.started_at) as sampler:
        results, seen = run_async(main(), 240)
    errors_ = failures(results)
    assert errors_ == [], f"{len(errors_)} of {ASYNCPG_CLIENTS} clients failed, first: {errors_[:5]}"
    per_task = ASYNCPG_ROUNDS * 4
    assert results == [per_task] * ASYNCPG_CLIENTS
    assert pg_admin.scalar(f"SELECT count(*) FROM {table}") == ASYNCPG_CLIENTS * per_task
    assert pg_admin.scalar(f"SELECT count(*) FROM {table} WHERE note = 'rolled'") == 0
    assert pg_admin.scalar(f"SELECT count(DISTINCT task) FROM {table}") == ASYNCPG_CLIENTS
    assert 1 <= sampler.max <= POOL, f"saw {sampler.max} upstream backends, pool max is {POOL}"

    assert seen.get("pgpilot_prepared_statements", 0) >= 30, seen
    assert seen.get("pgpilot_prepared_cache_hits_total", 0) > 0, seen
    check_pool_drained(proxy)


# --- 2. SQLAlchemy 2 async, default dialect settings ----------------------------------------------------------

SA_CLIENTS = 50
SA_ROUNDS = 3


@pytest.fixture
def items(pg_admin):
    table = items_table()
    yield table
    pg_admin.execute(f"DROP TABLE IF EXISTS {table.name}")


@pytest.mark.parametrize("pooling", ["queuepool", "nullpool"])
def test_sqlalchemy_default_prepared_statements(start_proxy, pg_admin, items, pooling):
    proxy = start_proxy(pool_size=POOL)
    url = f"postgresql+asyncpg://app:app@{proxy.host}:{proxy.port}/app"  # default prepared_statement_cache_size
    connect_args = {"timeout": 15, "command_timeout": 60}  # default asyncpg statement_cache_size
    if pooling == "nullpool":
        kw = {"poolclass": NullPool}
    else:
        kw = {"pool_size": 20, "max_overflow": 0, "pool_timeout": 60}

    async def main():
        engine = create_async_engine(url, connect_args=connect_args, **kw)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(items.metadata.create_all)
            Session = async_sessionmaker(engine, expire_on_commit=False)
            return await asyncio.gather(*(task_rounds(Session, items, t, SA_ROUNDS) for t in range(SA_CLIENTS)),
                                        return_exceptions=True)
        finally:
            await engine.dispose()

    with BackendSampler(pg_admin, "app", proxy.started_at) as sampler:
        results = run_async(main(), 240)
    errs = failures(results, "task")
    assert errs == [], f"{len(errs)} of {SA_CLIENTS} tasks failed, first: {errs[:5]}"
    assert pg_admin.scalar(f"SELECT count(*) FROM {items.name}") == SA_CLIENTS * SA_ROUNDS
    assert pg_admin.scalar(f"SELECT count(*) FROM {items.name} WHERE label = 'rolled'") == 0
    assert pg_admin.scalar(f"SELECT count(DISTINCT task) FROM {items.name}") == SA_CLIENTS
    assert 1 <= sampler.max <= POOL, f"saw {sampler.max} upstream backends, pool max is {POOL}"
    seen = metrics(proxy)
    assert seen.get("pgpilot_prepared_cache_hits_total", 0) > 0, seen
    check_pool_drained(proxy)


# --- 3. psycopg 3, prepare_threshold=0 ------------------------------------------------------------------------

PG3_CLIENTS = 50
PG3_ROUNDS = 3


async def pg3_connect(proxy, **kw):
    return await psycopg.AsyncConnection.connect(proxy.dsn(), prepare_threshold=0, connect_timeout=15,
                                                 autocommit=True, **kw)


async def pg3_close_all(conns):
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def pg3_connect_many(proxy, n):
    return await connect_all(lambda: pg3_connect(proxy), n, pg3_close_all)


async def pg3_client(conn, table, task):
    ins = f"INSERT INTO {table} (task, seq, note) VALUES (%s, %s, %s)"
    count = f"SELECT count(*) FROM {table} WHERE task = %s"
    async with conn.cursor() as cur:
        for r in range(PG3_ROUNDS):
            for _ in range(3):
                await cur.execute("SELECT %s::int + 1, %s::text", (task, f"t{task}"))
                assert await cur.fetchone() == (task + 1, f"t{task}")
                # One text, three parameter types (int2, float8, int8): three statements, three registry keys.
                await cur.execute("SELECT %s + 1", (task,))
                assert await cur.fetchone() == (task + 1,)
                await cur.execute("SELECT %s + 1", (task + 0.5,))
                assert await cur.fetchone() == (task + 1.5,)
                await cur.execute("SELECT %s + 1", (task + 10 ** 12,))
                assert await cur.fetchone() == (task + 10 ** 12 + 1,)
            async with conn.transaction():
                await cur.execute(ins, (task, r * 10, "tx"))
                await cur.execute(f"SELECT note FROM {table} WHERE task = %s AND seq = %s", (task, r * 10))
                assert await cur.fetchone() == ("tx",)
                await cur.execute(count, (task,))
                assert await cur.fetchone() == (r * 4 + 1,)
            await cur.executemany(ins, [(task, r * 10 + k, "many") for k in (1, 2, 3)])  # pipeline, prepared
            # ROLLBACK makes psycopg forget its statements and send DEALLOCATE ALL.
            with pytest.raises(errors.DivisionByZero):
                async with conn.transaction():
                    await cur.execute(ins, (task, r * 10 + 9, "rolled"))
                    await cur.execute("SELECT 1 / %s::int", (0,))
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
            for _ in range(2):
                await cur.execute(count, (task,))
                assert await cur.fetchone() == ((r + 1) * 4,)


def test_psycopg_prepare_threshold_zero(start_proxy, pg_admin, table):
    proxy = start_proxy(pool_size=POOL)

    async def main():
        conns = await pg3_connect_many(proxy, PG3_CLIENTS)
        try:
            return await asyncio.gather(*(pg3_client(c, table, i) for i, c in enumerate(conns)),
                                        return_exceptions=True)
        finally:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    with BackendSampler(pg_admin, "app", proxy.started_at) as sampler:
        results = run_async(main(), 240)
    errs = failures(results)
    assert errs == [], f"{len(errs)} of {PG3_CLIENTS} clients failed, first: {errs[:5]}"
    assert pg_admin.scalar(f"SELECT count(*) FROM {table}") == PG3_CLIENTS * PG3_ROUNDS * 4
    assert pg_admin.scalar(f"SELECT count(*) FROM {table} WHERE note = 'rolled'") == 0
    assert pg_admin.scalar(f"SELECT count(DISTINCT task) FROM {table}") == PG3_CLIENTS
    assert 1 <= sampler.max <= POOL, f"saw {sampler.max} upstream backends, pool max is {POOL}"
    seen = metrics(proxy)
    assert seen.get("pgpilot_prepared_statements", 0) >= 3, seen
    assert seen.get("pgpilot_prepared_cache_hits_total", 0) > 0, seen
    check_pool_drained(proxy)


EVICT_CLIENTS = 12
EVICT_DISTINCT = 20


async def pg3_evicting_client(conn, table, task):
    conn.prepared_max = 5  # psycopg deallocates the least recently used of its statements beyond 5
    ins = "INSERT INTO {} (task, seq, note) VALUES (%s, %s, %s) /* {} */"
    rng = random.Random(task)
    seq = 0
    async with conn.cursor() as cur:
        for r in range(3):
            ks = list(range(EVICT_DISTINCT))
            rng.shuffle(ks)
            for k in ks:
                await cur.execute(f"SELECT %s::int + {k}", (task,))
                assert await cur.fetchone() == (task + k,)
                if k % 4 == 0:  # executemany: Parse/Bind/Execute in a pipeline, evictions inside it too
                    await cur.executemany(ins.format(table, k), [(task, seq + j, f"k{k}") for j in range(3)])
                    seq += 3
                if k % 5 == 0:
                    async with conn.transaction():
                        await cur.execute(f"SELECT count(*) + {k} FROM {table} WHERE task = %s", (task,))
                        assert await cur.fetchone() == (seq + k,)
            async with conn.pipeline():  # explicit pipeline: evictions are sent inside it
                for k in range(8):
                    await cur.execute(f"SELECT %s::int * 2 + {k}", (task,))
                    assert await cur.fetchone() == (task * 2 + k,)
    return seq


@pytest.mark.parametrize("close_via", ["protocol-close", "deallocate"])
def test_psycopg_statement_cache_eviction(start_proxy, pg_admin, table, monkeypatch, close_via):
    """prepared_max=5 with 20+ distinct statements: psycopg deallocates constantly, by protocol Close (libpq >= 17)
    or by `DEALLOCATE name` (older libpq, forced here by turning off psycopg's send_close_prepared capability).
    Outside a pipeline DEALLOCATE is a simple Query; inside one (executemany, conn.pipeline()) psycopg sends it
    through the extended protocol (Parse/Bind/Execute of the unnamed statement)."""
    if close_via == "deallocate":
        monkeypatch.setattr(psycopg_base, "_HAS_SEND_CLOSE", False)
    else:
        assert psycopg_base._HAS_SEND_CLOSE, f"libpq {pq.version()} cannot send Close: protocol path not testable"
    deallocated = []  # (name, inside a pipeline?)
    real_deallocate = psycopg_base.BaseConnection._deallocate

    def spy(self, name):
        deallocated.append((name, self._pipeline is not None))
        return real_deallocate(self, name)

    monkeypatch.setattr(psycopg_base.BaseConnection, "_deallocate", spy)
    proxy = start_proxy(pool_size=POOL)

    async def main():
        conns = await pg3_connect_many(proxy, EVICT_CLIENTS)
        try:
            return await asyncio.gather(*(pg3_evicting_client(c, table, i) for i, c in enumerate(conns)),
                                        return_exceptions=True)
        finally:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    results = run_async(main(), 180)
    errs = failures(results)
    assert errs == [], f"{len(errs)} of {EVICT_CLIENTS} clients failed, first: {errs[:5]}"
    per_client = 3 * 3 * len(range(0, EVICT_DISTINCT, 4))
    assert results == [per_client] * EVICT_CLIENTS
    assert pg_admin.scalar(f"SELECT count(*) FROM {table}") == EVICT_CLIENTS * per_client
    named = [n for n, _ in deallocated if n is not None]
    assert len(named) >= EVICT_CLIENTS * 3 * EVICT_DISTINCT // 2, f"psycopg deallocated only {len(named)} statements"
    in_pipeline = [n for n, piped in deallocated if n is not None and piped]
    assert len(in_pipeline) >= EVICT_CLIENTS * 3, f"only {len(in_pipeline)} deallocations inside a pipeline"
    check_pool_drained(proxy)


def test_psycopg_rollback_in_pipeline_deallocates_all(start_proxy, monkeypatch):
    """A ROLLBACK inside a psycopg pipeline makes psycopg forget its statements and send DEALLOCATE ALL in that
    pipeline, i.e. through the extended protocol. The server connection then has no statement left, which pgpilot
    must notice: another client's statements on that same connection (pool of 1) must keep working."""
    calls = []
    real_deallocate = psycopg_base.BaseConnection._deallocate

    def spy(self, name):
        calls.append((name, self._pipeline is not None))
        return real_deallocate(self, name)

    monkeypatch.setattr(psycopg_base.BaseConnection, "_deallocate", spy)
    proxy = start_proxy(pool_size=1)

    async def main():
        a, other = await pg3_connect_many(proxy, 2)
        try:
            for round_ in range(3):
                for k in range(4):
                    cur = await other.execute(f"SELECT %s::int + {k}", (round_,))
                    assert await cur.fetchone() == (round_ + k,)
                assert await (await a.execute("SELECT %s::int - 1", (round_,))).fetchone() == (round_ - 1,)
                with pytest.raises(Boom):
                    async with a.pipeline():
                        async with a.transaction():
                            cur = await a.execute("SELECT %s::int * 3", (round_,))
                            assert await cur.fetchone() == (round_ * 3,)
                            raise Boom()
                assert (None, True) in calls, f"psycopg sent no DEALLOCATE ALL inside the pipeline: {calls}"
                for k in range(4):  # other's statements, prepared on the one server connection before
                    cur = await other.execute(f"SELECT %s::int + {k}", (round_,))
                    assert await cur.fetchone() == (round_ + k,)
                assert await (await a.execute("SELECT %s::int - 1", (round_,))).fetchone() == (round_ - 1,)
        finally:
            await asyncio.gather(a.close(), other.close(), return_exceptions=True)

    run_async(main(), 60)
    check_pool_drained(proxy)


def test_psycopg_pipeline_error_then_more_statements_before_sync(start_proxy):
    """In a pipeline the server's error can arrive before the client has sent the rest of the batch and its Sync:
    the server skips those messages too and answers only the Sync. The server connection must go back to the pool
    at that ReadyForQuery (pool of 1: the other client needs it), and later replies must stay in step."""
    proxy = start_proxy(pool_size=1)

    async def main():
        a, b = await pg3_connect_many(proxy, 2)
        try:
            for round_ in range(2):
                with pytest.raises(errors.DivisionByZero):
                    async with a.pipeline():
                        await a.execute("SELECT 1 / %s::int", (0,))
                        await asyncio.sleep(0.3)  # the error reaches pgpilot before the next statement is sent
                        await a.execute(f"SELECT %s::int + 100 + {round_}", (1,))
                assert a.info.transaction_status == pq.TransactionStatus.IDLE
                started = asyncio.get_running_loop().time()
                cur = await b.execute("SELECT %s::int + 7", (round_,))
                assert await cur.fetchone() == (round_ + 7,)
                waited = asyncio.get_running_loop().time() - started
                assert waited < 2, f"the other client waited {waited:.1f}s for the only server connection"
                for k in range(3):  # a's next replies belong to a's next statements
                    cur = await a.execute(f"SELECT %s::int + 100 + {round_}", (k,))
                    assert await cur.fetchone() == (k + 100 + round_,)
        finally:
            await asyncio.gather(a.close(), b.close(), return_exceptions=True)

    run_async(main(), 60)
    check_pool_drained(proxy)


def test_psycopg_parse_skipped_after_pipeline_error(start_proxy):
    """A named Parse that follows an error in the same pipeline is skipped by the server: that statement does not
    exist there afterwards, so pgpilot must not record it as prepared on that server connection. Another client
    preparing the same text on the same connection (pool of 1) must get it really prepared."""
    proxy = start_proxy(pool_size=1)

    async def main():
        a, b = await pg3_connect_many(proxy, 2)
        try:
            with pytest.raises(errors.DivisionByZero):
                async with a.pipeline():  # error only after pg_sleep: the whole batch and its Sync are sent by then
                    await a.execute("SELECT pg_sleep(0.2), 1 / %s::int", (0,))
                    await a.execute("SELECT %s::int + 200", (1,))
            assert a.info.transaction_status == pq.TransactionStatus.IDLE
            for k in range(3):
                cur = await b.execute("SELECT %s::int + 200", (k,))
                assert await cur.fetchone() == (k + 200,)
                cur = await a.execute("SELECT %s::int + 200", (k,))
                assert await cur.fetchone() == (k + 200,)
        finally:
            await asyncio.gather(a.close(), b.close(), return_exceptions=True)

    run_async(main(), 60)
    check_pool_drained(proxy)
