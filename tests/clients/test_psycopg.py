"""psycopg 3 (async and sync) through pgpilot in transaction mode with a 5-connection pool.

prepare_threshold=None: psycopg never prepares named statements here (test_prepared.py covers them, with
prepare_threshold=0); it uses the unnamed statement, and executemany() runs in pipeline mode (several
Parse/Bind/Execute before one Sync).
"""
import asyncio
import threading
import time

import psycopg
import pytest
from psycopg import errors, pq

from conftest import BackendSampler, run_async

CLIENTS = 50
ROUNDS = 3


def connect(proxy, **kw):
    return psycopg.connect(proxy.dsn(), prepare_threshold=None, connect_timeout=10, **kw)


async def aconnect(proxy, **kw):
    return await psycopg.AsyncConnection.connect(proxy.dsn(), prepare_threshold=None, connect_timeout=10, **kw)


async def async_work(conn, table, task):
    insert = f"INSERT INTO {table} (task, seq, note) VALUES (%s, %s, %s)"
    async with conn.cursor() as cur:
        for r in range(ROUNDS):
            await cur.execute("SELECT %s::int + 1, %s::text", (task, f"t{task}"))
            assert await cur.fetchone() == (task + 1, f"t{task}")
            async with conn.transaction():
                await cur.execute(insert, (task, r * 10, "tx"))
                await cur.execute(f"SELECT note FROM {table} WHERE task = %s AND seq = %s", (task, r * 10))
                assert await cur.fetchone() == ("tx",)
            await cur.executemany(insert, [(task, r * 10 + k, "many") for k in (1, 2, 3)])
            with pytest.raises(errors.DivisionByZero):
                async with conn.transaction():
                    await cur.execute(insert, (task, r * 10 + 9, "rolled"))
                    await cur.execute("SELECT 1 / %s::int", (0,))
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
            await cur.execute(f"SELECT count(*) FROM {table} WHERE task = %s", (task,))
            assert (await cur.fetchone())[0] == (r + 1) * 4


def sync_work(conn, table, task):
    insert = f"INSERT INTO {table} (task, seq, note) VALUES (%s, %s, %s)"
    with conn.cursor() as cur:
        for r in range(ROUNDS):
            assert cur.execute("SELECT %s::int * 3", (task,)).fetchone() == (task * 3,)
            with conn.transaction():
                cur.execute(insert, (task, r * 10, "tx"))
                assert cur.execute(f"SELECT count(*) FROM {table} WHERE task = %s", (task,)).fetchone() == (r * 4 + 1,)
            cur.executemany(insert, [(task, r * 10 + k, "many") for k in (1, 2, 3)])
            with pytest.raises(errors.DivisionByZero):
                with conn.transaction():
                    cur.execute(insert, (task, r * 10 + 9, "rolled"))
                    cur.execute("SELECT 1/0")
            assert cur.execute(f"SELECT count(*) FROM {table} WHERE task = %s", (task,)).fetchone() == ((r + 1) * 4,)


def check_table(pg_admin, table):
    assert pg_admin.scalar(f"SELECT count(*) FROM {table}") == CLIENTS * ROUNDS * 4
    assert pg_admin.scalar(f"SELECT count(DISTINCT task) FROM {table}") == CLIENTS
    assert pg_admin.scalar(f"SELECT count(*) FROM {table} WHERE note = 'rolled'") == 0


def test_async_fifty_connections(proxy, pg_admin, table):
    async def main():
        conns = await asyncio.gather(*(aconnect(proxy, autocommit=True) for _ in range(CLIENTS)),
                                     return_exceptions=True)
        ok = [c for c in conns if not isinstance(c, BaseException)]
        try:
            assert len(ok) == CLIENTS, f"connects failed: {[repr(c) for c in conns if c not in ok][:3]}"
            return await asyncio.gather(*(async_work(c, table, i) for i, c in enumerate(ok)), return_exceptions=True)
        finally:
            await asyncio.gather(*(c.close() for c in ok), return_exceptions=True)

    with BackendSampler(pg_admin, "app", proxy.started_at) as sampler:
        results = run_async(main(), 120)
    errs = [f"client {i}: {r!r}" for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert errs == [], f"{len(errs)} of {CLIENTS} clients failed, first: {errs[:5]}"
    check_table(pg_admin, table)
    assert 1 <= sampler.max <= proxy.pool_size, f"saw {sampler.max} upstream backends, pool max is {proxy.pool_size}"


def test_sync_fifty_threads(proxy, pg_admin, table):
    errs, finished = [], []
    barrier = threading.Barrier(CLIENTS, timeout=30)

    def worker(i):
        try:
            with connect(proxy, autocommit=True) as conn:
                barrier.wait()  # all 50 connected before any works
                sync_work(conn, table, i)
            finished.append(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errs.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(CLIENTS)]
    with BackendSampler(pg_admin, "app", proxy.started_at) as sampler:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"{sum(t.is_alive() for t in threads)} clients hung"
    assert errs == [], f"{len(errs)} of {CLIENTS} clients failed, first: {errs[:5]}"
    assert len(finished) == CLIENTS
    check_table(pg_admin, table)
    assert 1 <= sampler.max <= proxy.pool_size, f"saw {sampler.max} upstream backends, pool max is {proxy.pool_size}"


def test_error_mid_transaction_then_rollback(proxy, pg_admin, table):
    insert = f"INSERT INTO {table} (task, seq, note) VALUES (%s, %s, %s)"
    with connect(proxy) as conn:  # not autocommit: psycopg opens the transaction with the first statement
        conn.execute(insert, (1, 1, "doomed"))
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 1 / %s::int", (0,))
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        conn.execute(insert, (2, 2, "kept"))
        conn.commit()
        assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)
    assert pg_admin.scalar(f"SELECT string_agg(note, ',') FROM {table}") == "kept"


SAMPLES = [None, "", "plain", "tab\there", "new\nline", "back\\slash", "\\N", "cr\r\nlf", "üñíçødé ✓ 日本",
           "quote\"'", "bell\b\f\v", "x" * 3000]


def sample(i):
    return SAMPLES[i % len(SAMPLES)] if i % 7 else f"row {i}"


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_async_copy_round_trip(proxy, table, fmt):
    rows = [(i, i % 5, sample(i)) for i in range(20000)]

    async def main():
        async with await aconnect(proxy, autocommit=True) as conn, conn.cursor() as cur:
            async with cur.copy(f"COPY {table} (task, seq, note) FROM STDIN (FORMAT {fmt})") as copy:
                copy.set_types(["int4", "int4", "text"])
                for row in rows:
                    await copy.write_row(row)
            assert cur.rowcount == len(rows)
            got = []
            async with cur.copy(f"COPY (SELECT task, seq, note FROM {table} ORDER BY task) TO STDOUT (FORMAT {fmt})") \
                    as copy:
                copy.set_types(["int4", "int4", "text"])
                async for row in copy.rows():
                    got.append(row)
            return got

    got = run_async(main(), 60)
    assert len(got) == len(rows)
    assert got == rows


def copy_escape(value):
    if value is None:
        return "\\N"
    table = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
    return "".join(table.get(ch, ch) for ch in value)


def test_sync_copy_raw_blocks_round_trip_exactly(proxy, table):
    data = "".join(f"{i}\t{i % 3}\t{copy_escape(sample(i))}\n" for i in range(20000)).encode()
    with connect(proxy, autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            for off in range(0, len(data), 65521):  # blocks split lines and multi-byte characters
                copy.write(data[off:off + 65521])
        out = bytearray()
        with cur.copy(f"COPY (SELECT * FROM {table} ORDER BY task) TO STDOUT") as copy:
            for block in copy:
                out += block
        assert bytes(out) == data

        with pytest.raises(errors.UniqueViolation):  # a failing COPY leaves the connection usable
            with cur.copy(f"COPY {table} FROM STDIN") as copy:
                copy.write(b"1\t1\tduplicate\n")
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert cur.execute(f"SELECT count(*) FROM {table}").fetchone() == (20000,)


def test_notices_pass_through(proxy):
    do = "DO $$ BEGIN RAISE NOTICE 'pgpilot notice %', {}; RAISE WARNING 'pgpilot warning'; END $$"

    def handler(seen):
        return lambda diag: seen.append((diag.severity_nonlocalized, diag.message_primary))

    seen = []
    with connect(proxy, autocommit=True) as conn:
        conn.add_notice_handler(handler(seen))
        conn.execute(do.format(1))
        with conn.transaction():
            conn.execute(do.format(2))
    assert seen == [("NOTICE", "pgpilot notice 1"), ("WARNING", "pgpilot warning"),
                    ("NOTICE", "pgpilot notice 2"), ("WARNING", "pgpilot warning")]

    async def main():
        aseen = []
        async with await aconnect(proxy, autocommit=True) as conn:
            conn.add_notice_handler(handler(aseen))
            await conn.execute(do.format(3))
            await conn.execute("SELECT %s::int", (5,))  # a plain query in between raises nothing
            await conn.execute(do.format(4))
        return aseen

    assert run_async(main(), 30) == [("NOTICE", "pgpilot notice 3"), ("WARNING", "pgpilot warning"),
                                     ("NOTICE", "pgpilot notice 4"), ("WARNING", "pgpilot warning")]


def test_startup_options_stay_with_their_client(proxy):
    """libpq's `options` (-c name=value in the startup packet) is session state like SET: tracked per client."""
    async def main():
        a = await aconnect(proxy, autocommit=True, options="-c statement_timeout=2345")
        others = [await aconnect(proxy, autocommit=True) for _ in range(6)]
        try:
            async def check(conn, want):
                for _ in range(15):
                    async with conn.transaction():
                        cur = await conn.execute("SHOW statement_timeout")
                        assert (await cur.fetchone())[0] == want
                        await conn.execute("SELECT pg_sleep(0.002)")
            await asyncio.gather(check(a, "2345ms"), *(check(c, "0") for c in others))
        finally:
            await asyncio.gather(*(c.close() for c in [a, *others]), return_exceptions=True)

    run_async(main(), 60)
