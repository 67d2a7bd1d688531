"""The per-fingerprint strategy (src/strategy, src/pool/lane.rs, src/frontend/begin.rs) against real PostgreSQL
and asyncpg: a flood of slow statements with the slow lane on leaves fast ones fast (and with the strategy off it
does not), a deferred BEGIN behaves as the server's own, and [[strategy.pins]] override what is measured."""
import asyncio
import json
import time

import asyncpg
import psycopg
import pytest

from conftest import metric, run_async, wait_cache_ready, wait_until

SLOW = "SELECT pg_sleep(0.3)"
FAST = "SELECT $1::int + 1"
LANE_TOML = "adaptive = false\ncheckout_timeout_ms = 10000\n[strategy]\nslow_lane_min_calls = 5\n"


def query_row(proxy, text):
    _, body = proxy.http_get("/queries?limit=100")
    return next((r for r in json.loads(body) if text in r["query"]), None)


def p95(samples):
    s = sorted(samples)
    return s[int(len(s) * 0.95) - 1]


async def flood_and_measure(dsn, seconds=3.0):
    """8 clients looping the slow statement (half of them inside transactions) over a pool of 4, and one client
    timing fast statements: the fast one's latencies."""
    stop = time.monotonic() + seconds

    async def slow(i):
        c = await asyncpg.connect(dsn)
        try:
            while time.monotonic() < stop:
                if i % 2:
                    async with c.transaction():
                        await c.execute(SLOW)
                else:
                    await c.execute(SLOW)
        finally:
            await c.close()

    async def fast():
        c = await asyncpg.connect(dsn)
        took = []
        try:
            await asyncio.sleep(0.3)  # the flood holds its connections first
            while time.monotonic() < stop:
                t = time.monotonic()
                await c.fetchval(FAST, 1)
                took.append(time.monotonic() - t)
                await asyncio.sleep(0.01)
        finally:
            await c.close()
        return took
    *_, took = await asyncio.gather(*(slow(i) for i in range(8)), fast())
    return took


async def warm(dsn):
    c = await asyncpg.connect(dsn)
    try:
        for _ in range(30):
            await c.fetchval(FAST, 1)
        for _ in range(6):
            await c.execute(SLOW)
    finally:
        await c.close()


def test_the_slow_lane_keeps_fast_statements_fast_under_a_flood_of_slow_ones(start_proxy):
    on = start_proxy(pool_size=4, extra_toml=LANE_TOML)
    run_async(warm(on.dsn()), 30)
    row = wait_until(lambda: (r := query_row(on, "pg_sleep")) and r["strategy"] == "slow-lane" and r, 5,
                     message="pg_sleep in the slow lane")
    assert "median p95" in row["strategy_reason"] and row["since"] > 0, row
    assert query_row(on, "$1::int")["strategy"] == "pass-through"
    with_lane = run_async(flood_and_measure(on.dsn()), 60)
    _, body = on.http_get("/health/status")
    pool = next(p for p in json.loads(body)["pools"] if p["database"] == "app")
    assert pool["slow_lane_waited"] > 0, pool

    off = start_proxy(pool_size=4, extra_toml=LANE_TOML + "enabled = false\n")
    run_async(warm(off.dsn()), 30)
    without = run_async(flood_and_measure(off.dsn()), 60)
    assert query_row(off, "pg_sleep")["strategy"] == "pass-through"
    assert len(with_lane) > 50, len(with_lane)
    # Two of four connections stay free of slow statements: fast ones do not queue behind 300 ms sleeps.
    assert p95(with_lane) < 0.05, f"fast p95 with the lane {p95(with_lane):.3f}s"
    assert p95(without) > 0.1, f"fast p95 without it {p95(without):.3f}s (the flood should have queued it)"


def checkouts(proxy):
    with psycopg.connect(proxy.dsn("pgpilot"), autocommit=True) as console:
        cur = console.execute("SHOW STATS")
        cols = [d.name for d in cur.description]
        row = dict(zip(cols, next(r for r in cur.fetchall() if r[0] == "app")))
    return int(row["total_xact_count"])


def test_a_deferred_begin_is_the_servers_transaction(start_proxy, table):
    # (the index-usage reading checks a connection out of every pool about a second after start:
    # off, so the checkout counts below are the client's alone)
    proxy = start_proxy(pool_size=2, extra_toml="[insights]\nindex_usage_interval_s = 0\n")

    async def main():
        c = await asyncpg.connect(proxy.dsn())
        try:
            await c.execute("SELECT 1")
            before = checkouts(proxy)
            for _ in range(5):
                async with c.transaction():
                    pass
            assert checkouts(proxy) == before, "empty transactions took no connection"
            async with c.transaction():
                xids = [await c.fetchval("SELECT txid_current()") for _ in range(3)]
                assert await c.fetchval("SELECT now() = statement_timestamp()") is False
            assert len(set(xids)) == 1, xids
            tx = c.transaction()
            await tx.start()
            await c.execute(f"INSERT INTO {table} (task, seq, note) VALUES (77, 1, 'x')")
            await tx.rollback()
            assert await c.fetchval(f"SELECT count(*) FROM {table} WHERE task = 77") == 0
            async with c.transaction():
                await c.execute(f"INSERT INTO {table} (task, seq, note) VALUES (77, 2, 'y')")
            assert await c.fetchval(f"SELECT count(*) FROM {table} WHERE task = 77") == 1
            # What the server says of a second BEGIN inside one, and of an error inside one, is unchanged.
            await c.execute("BEGIN")
            with pytest.raises(asyncpg.DivisionByZeroError):
                await c.execute("SELECT 1/0")
            with pytest.raises(asyncpg.InFailedSQLTransactionError):
                await c.execute("SELECT 1")
            await c.execute("ROLLBACK")
            assert await c.fetchval("SELECT 2") == 2
        finally:
            await c.close()
    run_async(main(), 60)


def test_a_deferred_transaction_that_gets_no_connection_fails_as_a_transaction(start_proxy):
    proxy = start_proxy(pool_size=1, extra_toml="adaptive = false\ncheckout_timeout_ms = 300\n")

    async def main():
        holder = await asyncpg.connect(proxy.dsn(), statement_cache_size=0)
        late = await asyncpg.connect(proxy.dsn(), statement_cache_size=0)
        try:
            await holder.execute("BEGIN")
            await holder.execute("SELECT 1")  # holds the only connection
            await late.execute("BEGIN")  # answered by pgpilot
            with pytest.raises(asyncpg.TooManyConnectionsError):
                await late.execute("SELECT 1")
            with pytest.raises(asyncpg.InFailedSQLTransactionError):
                await late.execute("SELECT 2")
            await late.execute("COMMIT")  # ends the failed transaction, as on the server
            await holder.execute("COMMIT")
            assert await late.fetchval("SELECT 3") == 3
            async with late.transaction():
                assert await late.fetchval("SELECT 4") == 4
        finally:
            await holder.close()
            await late.close()
    run_async(main(), 30)


def test_pins_override_the_measured_strategy(start_proxy):
    pins = ("[strategy]\n"
            "[[strategy.pins]]\ntable = \"pgbench_accounts\"\nstrategy = \"cache\"\n"
            "[[strategy.pins]]\ntable = \"pgbench_branches\"\nstrategy = \"pass-through\"\n")
    proxy = start_proxy(pool_size=4, extra_toml=pins)
    wait_cache_ready(proxy, "pgbench_branches", db="bench")
    before = {}

    async def main():
        c = await asyncpg.connect(proxy.dsn("bench"))
        try:
            # Warm the strategy tick: it applies pins to what it has measured.
            await c.fetchval("SELECT abalance FROM pgbench_accounts WHERE aid = $1", 1)
            await c.fetchval("SELECT count(*) FROM pgbench_branches")
            await asyncio.sleep(1.5)
            before.update(query_row(proxy, "FROM pgbench_branches"))
            for i in range(600):
                await c.fetchval("SELECT abalance FROM pgbench_accounts WHERE aid = $1", 1 + (i * 7919) % 100000)
            for _ in range(600):  # repeats: 1 in 1000 never
                await c.fetchval("SELECT abalance FROM pgbench_accounts WHERE aid = $1", 42)
            for _ in range(20):
                await c.fetchval("SELECT count(*) FROM pgbench_branches")
        finally:
            await c.close()
    run_async(main(), 60)
    accounts, branches = query_row(proxy, "FROM pgbench_accounts"), query_row(proxy, "FROM pgbench_branches")
    assert accounts["strategy"] == "cache" and "pinned" in accounts["strategy_reason"], accounts
    assert accounts["cache_hits"] >= 590, accounts
    assert branches["strategy"] == "pass-through" and "pinned" in branches["strategy_reason"], branches
    # Pins apply from the strategy's first tick after a fingerprint is seen (within a second).
    assert branches["calls"] == before["calls"] + 20 and branches["cache_hits"] == before["cache_hits"], branches


def why(row):
    """What an assertion on a /queries row shows (pytest cuts a whole row short)."""
    return row["strategy"], row["strategy_reason"], row["calls"]


def test_server_prepared_is_kept_unless_it_measures_slower(start_proxy, pg_admin):
    """Repeated unnamed statements (asyncpg without its statement cache): a ten-way join whose planning dominates
    is served from a server-prepared statement, and so is one whose time is all execution (a tie: it still saves
    the server a parse and a plan per run); a read of a skewed column's common value stays as sent: its generic
    plan (an index scan PostgreSQL estimates at the column's average value) evaluates `length(repeat('x', $2))`
    for each of 99,000 rows, which the custom plans fold to a constant before their sequential scan (~3x
    slower; the plan's shape alone measured anywhere from 40% slower to 6% faster). (The measurement alternates the
    two ways, 100 timed runs each, a server-prepared run timed once its copy is past PostgreSQL's five custom plans,
    after 50 as sent: ~270 runs decide.)"""
    pg_admin.execute("DROP TABLE IF EXISTS pgpilot_sp")
    pg_admin.execute("CREATE TABLE pgpilot_sp (id int PRIMARY KEY, v int)")
    pg_admin.execute("INSERT INTO pgpilot_sp SELECT g, g FROM generate_series(1, 1000) g")
    pg_admin.execute("ALTER TABLE pgpilot_sp OWNER TO app")
    pg_admin.execute("DROP TABLE IF EXISTS pgpilot_skew")
    pg_admin.execute("CREATE TABLE pgpilot_skew (id int PRIMARY KEY, v int, w int)")
    # 99% of rows have v = 0, the rest ~1,000 other values, in random heap order.
    pg_admin.execute("INSERT INTO pgpilot_skew SELECT g, CASE WHEN g % 100 = 0 THEN g % 9973 ELSE 0 END, g "
                     "FROM generate_series(1, 100000) g ORDER BY random()")
    pg_admin.execute("CREATE INDEX ON pgpilot_skew (v)")
    pg_admin.execute("VACUUM ANALYZE pgpilot_skew")
    pg_admin.execute("ALTER TABLE pgpilot_skew OWNER TO app")
    joins = " ".join(f"JOIN pgpilot_sp t{i} ON t{i}.id = t{i - 1}.id" for i in range(2, 11))
    # random() keeps them out of the result cache; planning ten joins costs milliseconds, running them microseconds.
    plan_heavy = f"SELECT t10.v FROM pgpilot_sp t1 {joins} WHERE t1.id = $1 AND random() >= 0"
    run_heavy = "SELECT pg_sleep(0.004), $1::int"
    skewed = "SELECT sum(w) FROM pgpilot_skew WHERE v = $1 AND w > length(repeat('x', $2)) - $2 AND random() >= 0"
    # (Its generic runs, ~40 ms, would also put it in the slow lane, which /queries shows first.)
    proxy = start_proxy(pool_size=2, extra_toml="[strategy]\nslow_lane = false\n")
    try:
        async def main():
            c = await asyncpg.connect(proxy.dsn(), statement_cache_size=0)
            try:
                for i in range(300):
                    assert await c.fetchval(plan_heavy, 1 + i % 1000) == 1 + i % 1000
                for i in range(300):
                    await c.fetchval(run_heavy, i)
                for _ in range(300):
                    assert await c.fetchval(skewed, 0, 40) == 4_950_000_000
            finally:
                await c.close()
        run_async(main(), 90)
        heavy, sleepy = query_row(proxy, "JOIN pgpilot_sp t10"), query_row(proxy, "pg_sleep")
        skew = query_row(proxy, "FROM pgpilot_skew")
        assert heavy["strategy"] == "server-prepared" and "no slower" in heavy["strategy_reason"], why(heavy)
        assert sleepy["strategy"] == "server-prepared" and "no slower" in sleepy["strategy_reason"], why(sleepy)
        assert skew["strategy"] == "pass-through" and "measured slower" in skew["strategy_reason"], why(skew)

        async def after_ddl():
            c = await asyncpg.connect(proxy.dsn(), statement_cache_size=0)
            try:
                # DDL through pgpilot that changes the result type: the server-prepared copies are
                # prepared again before their next use; the client never sees 0A000.
                await c.execute("ALTER TABLE pgpilot_sp ALTER COLUMN v TYPE bigint")
                others = [await asyncpg.connect(proxy.dsn(), statement_cache_size=0) for _ in range(2)]
                for i in range(10):
                    got = await asyncio.gather(*(o.fetchval(plan_heavy, 7 + i) for o in others))
                    assert got == [7 + i, 7 + i]
                for o in others:
                    await o.close()
            finally:
                await c.close()
        run_async(after_ddl(), 60)

    finally:
        pg_admin.execute("DROP TABLE IF EXISTS pgpilot_sp")
        pg_admin.execute("DROP TABLE IF EXISTS pgpilot_skew")


def test_a_run_on_a_copy_made_stale_by_ddl_outside_pgpilot_is_retried(start_proxy, pg_admin):
    """DDL that bypasses pgpilot (straight to the server) changes the result type under statements kept prepared
    on the server (here every unnamed Parse is served from one: `prepared.reuse_unnamed`, the path the
    server-prepared strategy takes). A client that sends Parse, Bind, Execute and Sync together (psycopg without
    named statements, pgbench -M extended) never sees 0A000 on a direct connection: its run is retried on a freshly
    prepared copy and returns the new type; the other connection's copy is prepared again before its next use."""
    pg_admin.execute("DROP TABLE IF EXISTS pgpilot_sp2")
    pg_admin.execute("CREATE TABLE pgpilot_sp2 (id int PRIMARY KEY, v int)")
    pg_admin.execute("INSERT INTO pgpilot_sp2 SELECT g, g FROM generate_series(1, 100) g")
    pg_admin.execute("ALTER TABLE pgpilot_sp2 OWNER TO app")
    proxy = start_proxy(pool_size=2, extra_toml="[prepared]\nreuse_unnamed = true\n[cache]\nenabled = false\n")
    sql = "SELECT v FROM pgpilot_sp2 WHERE id = %s"
    conns = [psycopg.connect(proxy.dsn(), autocommit=True, prepare_threshold=None) for _ in range(2)]
    try:
        errors, values = [], []
        for i in range(12):
            if i in (4, 8):
                pg_admin.execute(f"ALTER TABLE pgpilot_sp2 ALTER COLUMN v TYPE {'bigint' if i == 4 else 'numeric'}")
            for c in conns:
                try:
                    values.append(c.execute(sql, (1 + i,)).fetchone()[0])
                except psycopg.Error as e:
                    errors.append((i, e.sqlstate, str(e)))
        assert errors == [], errors
        assert values == [1 + i for i in range(12) for _ in conns]
        assert type(values[-1]).__name__ == "Decimal", values[-1]  # the new type reached the client
    finally:
        for c in conns:
            c.close()
        pg_admin.execute("DROP TABLE IF EXISTS pgpilot_sp2")
    # One retry per DDL: it clears the statement's version, so the other connection's copy is prepared again
    # before its next use instead of failing too.
    assert metric(proxy, "pgpilot_prepared_stale_retries_total") == 2
