"""What the world does to pgpilot: the network to the server stalls, blackholes or resets (faultrelay.py), server
connections are terminated, a statement never finishes, clients vanish mid-transaction, mid-COPY and mid-result.

After every scenario: the clients that were hit got a clear error (a SQLSTATE, never a hang), new work succeeds,
the pool's counts are back to baseline, no server connection is left inside a transaction or running the
abandoned statement (pg_stat_activity), and the differential scenarios give the same messages as direct
PostgreSQL again (test_differential's harness). PostgreSQL restarts are in test_upstream_tls.py (they need a
cluster of their own).
"""
import asyncio
import socket
import struct
import time

import asyncpg
import psycopg
import pytest

import wire
from conftest import pg_host, pg_port, run_async, wait_until
from diff_scenarios import SCENARIOS
from faultrelay import FaultRelay
from test_differential import ctx, diff, diff_env, run_scenario  # noqa: F401 (fixtures)

QUERY_TIMEOUT_MS = 1500
FAULT_TOML = f"query_timeout_ms = {QUERY_TIMEOUT_MS}\ncheckout_timeout_ms = 8000\n[cache]\nenabled = false\n"
AFTER = ["extended_unnamed", "named_statements", "tx_error_rollback"]  # differential scenarios run after each


@pytest.fixture
def relay():
    r = FaultRelay(pg_host(), pg_port())
    yield r
    r.close()


@pytest.fixture
def relayed(start_proxy, relay):
    """pgpilot (pool of 4, transaction mode) whose upstream is the fault relay."""
    return start_proxy(pool_size=4, extra_toml=FAULT_TOML, upstream_port=relay.port)


def pgpilot_backends(pg_admin, proxy, where=""):
    """pgpilot's server connections (user app, opened since the proxy started) matching `where`."""
    return pg_admin.scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_start >= %s"
                           f" AND pid <> pg_backend_pid() {where}", (proxy.started_at,), db="postgres")


def assert_recovered(proxy, pg_admin, ctx, abandoned=None):
    """Baseline again: nothing active or waiting in the pool, no server connection in a transaction (or running
    `abandoned`), and the differential scenarios equal to direct PostgreSQL."""
    wait_until(lambda: (s := proxy.pool_status())["active"] == 0 and s["waiting"] == 0, 15,
               message="pool back to no active / waiting connections")
    wait_until(lambda: pgpilot_backends(pg_admin, proxy, "AND state LIKE 'idle in transaction%%'") == 0, 15,
               message="no pgpilot server connection idle in a transaction")
    if abandoned:
        wait_until(lambda: pgpilot_backends(pg_admin, proxy, f"AND state = 'active' AND query LIKE '%%{abandoned}%%'")
                   == 0, 15, message=f"the abandoned statement ({abandoned}) no longer running")
    for name in AFTER:
        direct = run_scenario(pg_host(), pg_port(), SCENARIOS[name], ctx)
        proxied = run_scenario(proxy.host, proxy.port, SCENARIOS[name], ctx)
        problem = diff(direct, proxied, f"pgpilot after the fault ({name})")
        assert not problem, problem


def sqlstate_of(fn):
    """The SQLSTATE fn() fails with (None when it succeeds), and how long it took."""
    t0 = time.monotonic()
    try:
        fn()
        return None, time.monotonic() - t0
    except psycopg.Error as e:
        return e.sqlstate, time.monotonic() - t0


def connect(proxy, **kw):
    return psycopg.connect(proxy.dsn(), autocommit=True, connect_timeout=10, **kw)


def test_stalled_server_is_cut_by_query_timeout(relayed, relay, pg_admin, ctx):
    with connect(relayed) as c:
        c.execute("SELECT 1")
        relay.set("stall")
        code, took = sqlstate_of(lambda: c.execute("SELECT 2"))
    assert code == "57014", f"a stalled server gives 57014 (query timeout), got {code}"
    assert QUERY_TIMEOUT_MS / 1000 - 0.2 <= took < QUERY_TIMEOUT_MS / 1000 + 3, took
    # New connections to a stalled server: the connect timeout (upstream.connect_timeout_ms, 5 s) fires: a
    # clear error, no hang.
    with connect(relayed) as c2:
        code, took = sqlstate_of(lambda: c2.execute("SELECT 3"))
    assert code is not None and code.startswith("08"), code
    assert took < 12, took
    relay.set("pass")
    with connect(relayed) as c3:
        assert c3.execute("SELECT 4").fetchone()[0] == 4
    assert "panicked" not in relayed.stderr_text()
    assert_recovered(relayed, pg_admin, ctx)


def test_blackholed_server_mid_transaction(relayed, relay, pg_admin, ctx):
    with connect(relayed) as c:
        c.execute("BEGIN")
        c.execute("SELECT 1")
        relay.set("blackhole")
        code, took = sqlstate_of(lambda: c.execute("SELECT 2"))
        assert code == "57014", code
        assert c.closed or c.broken, "the session ends: its transaction is gone"
    relay.set("pass")
    assert_recovered(relayed, pg_admin, ctx)


def test_reset_network_gives_a_clear_error_and_recovers(relayed, relay, pg_admin, ctx):
    with connect(relayed) as idle_client, connect(relayed) as tx_client:
        idle_client.execute("SELECT 1")
        tx_client.execute("BEGIN")
        tx_client.execute("SELECT 1")
        relay.set("reset")
        code, took = sqlstate_of(lambda: tx_client.execute("SELECT 2"))
        assert code == "08006", f"a reset server connection mid-transaction: 08006, got {code}"
        assert took < 5
        relay.set("pass")
        # The idle client's pooled connection died with the rest: it is noticed, not handed out.
        for i in range(6):
            assert idle_client.execute("SELECT %s::int", (i,)).fetchone()[0] == i
    assert_recovered(relayed, pg_admin, ctx)


def test_terminated_server_connections(start_proxy, pg_admin, ctx):
    proxy = start_proxy(pool_size=4, extra_toml="[cache]\nenabled = false\n")
    with connect(proxy) as idle_client, connect(proxy) as tx_client:
        idle_client.execute("SELECT 1")
        tx_client.execute("BEGIN")
        tx_client.execute("SELECT 1")
        killed = pg_admin.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'app'"
                                 " AND backend_start >= %s", (proxy.started_at,), db="postgres")
        assert killed >= 1
        code, _ = sqlstate_of(lambda: tx_client.execute("SELECT 2"))
        assert code in ("57P01", "08006"), f"the client in a transaction is told ({code})"
        for i in range(6):  # idle pooled connections were terminated too: never handed out dead
            assert idle_client.execute("SELECT %s::int", (i,)).fetchone()[0] == i
    assert_recovered(proxy, pg_admin, ctx)


def test_query_timeout_cancels_the_statement_on_the_server(start_proxy, pg_admin, ctx):
    proxy = start_proxy(pool_size=2, extra_toml="query_timeout_ms = 800\n[cache]\nenabled = false\n")
    with connect(proxy) as c:
        code, took = sqlstate_of(lambda: c.execute("SELECT pg_sleep(30) /* qt-victim */"))
    assert code == "57014" and took < 5, (code, took)
    with connect(proxy) as c:  # a statement under the limit is untouched
        c.execute("SELECT pg_sleep(0.3)")
    assert_recovered(proxy, pg_admin, ctx, abandoned="qt-victim")


def _raw_login(proxy):
    return wire.connect(proxy.host, proxy.port, "app", "app", "app")


def test_clients_vanishing_mid_transaction_copy_and_result(start_proxy, pg_admin, ctx):
    proxy = start_proxy(pool_size=3, extra_toml="[cache]\nenabled = false\n")
    t = ctx.t
    # Mid-transaction: a write inside BEGIN, then the socket closes.
    conn = _raw_login(proxy)
    conn.exchange([wire.query("BEGIN"), wire.query(f"INSERT INTO {t} VALUES (9001, 'gone', 'x', 1, NULL)")])
    conn.sock.close()
    # Mid-COPY: COPY FROM STDIN started, one row sent, then the socket closes.
    conn = _raw_login(proxy)
    assert conn.exchange([wire.query(f"COPY {t} (id, tenant) FROM STDIN")], until="CopyInResponse")[-1][0] \
        == "CopyInResponse"
    conn.sock.sendall(wire.copy_data(b"9002\tgone\n"))
    conn.sock.close()
    # Mid-result: a large result, a little of it read, then the socket is reset.
    conn = _raw_login(proxy)
    conn.sock.sendall(wire.query("SELECT g, repeat('x', 200) FROM generate_series(1, 3000000) g /* vanish-result */"))
    conn.sock.recv(65536)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()
    assert_recovered(proxy, pg_admin, ctx, abandoned="vanish-result")
    assert pg_admin.scalar(f"SELECT count(*) FROM {t} WHERE id IN (9001, 9002)") == 0, "nothing half-written stays"


def test_many_clients_over_a_small_pool_while_connections_die(start_proxy, pg_admin, ctx):
    """200 asyncpg clients over a pool of 5 while pgpilot's server connections are terminated every 0.3 s:
    a client whose statement was running may get 57P01/08006; every other statement succeeds."""
    proxy = start_proxy(pool_size=5, extra_toml="[cache]\nenabled = false\n")

    async def body():
        stop = time.monotonic() + 6
        ok, failed = 0, []

        async def client(i):
            nonlocal ok
            conn = await asyncpg.connect(proxy.dsn(), statement_cache_size=0)
            try:
                while time.monotonic() < stop:
                    try:
                        assert await conn.fetchval("SELECT $1::int + 1", i) == i + 1
                        ok += 1
                    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                            ConnectionError) as e:
                        failed.append(getattr(e, "sqlstate", None) or type(e).__name__)
                        conn.terminate()
                        conn = await asyncpg.connect(proxy.dsn(), statement_cache_size=0)
            finally:
                await conn.close()

        async def killer():
            while time.monotonic() < stop:
                await asyncio.sleep(0.3)
                await asyncio.to_thread(pg_admin.scalar, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                        " WHERE usename = 'app' AND backend_start >= %s", (proxy.started_at,), "postgres")

        await asyncio.gather(killer(), *(client(i) for i in range(200)))
        return ok, failed

    ok, failed = run_async(body(), 60)
    assert ok > 1000, ok
    # The terminated statements fail with the server's 57P01 or pgpilot's 08006 (asyncpg may surface a lost
    # connection as its own error): nothing else, and few.
    lost = {"ConnectionDoesNotExistError", "InternalClientError", "ConnectionResetError", "ConnectionError"}
    assert set(failed) <= {"57P01", "08006", "08003"} | lost, f"only the terminated statements fail: {set(failed)}"
    print(f"200 clients, pool of 5, connections killed every 0.3 s: {ok} ok, {len(failed)} failed")
    assert len(failed) < ok / 10, (len(failed), ok)
    assert_recovered(proxy, pg_admin, ctx)


def test_first_statement_after_the_pools_connections_were_terminated(start_proxy, pg_admin):
    """Every idle server connection terminated a moment after its last use (backends are killed in batches): a
    client whose settings pgpilot must replay first gets a live connection, not the dead ones one after
    another until its retries run out (connections used in the last 50 ms skip the socket check, so the
    first dead one makes the pool check the others)."""
    proxy = start_proxy(pool_size=5, extra_toml="[cache]\nenabled = false\n")

    async def body():
        held = [await asyncpg.connect(proxy.dsn(), statement_cache_size=0) for _ in range(5)]
        failures = []
        for round_ in range(15):
            await asyncio.gather(*(c.fetchval("SELECT pg_sleep(0.02)") for c in held))  # five server connections
            killed = pg_admin.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename ="
                                     " 'app' AND backend_start >= %s", (proxy.started_at,), "postgres")
            assert killed >= 1, killed
            # A new application_name: its checkout replays it on the connection before the statement.
            fresh = await asyncpg.connect(proxy.dsn(), statement_cache_size=0,
                                          server_settings={"application_name": f"after_kill_{round_}"})
            try:
                assert await fresh.fetchval("SELECT current_setting('application_name')") == f"after_kill_{round_}"
            except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as e:
                failures.append(f"round {round_}: {type(e).__name__} {getattr(e, 'sqlstate', '')} {e}")
            finally:
                await fresh.close()
            for i, c in enumerate(held):  # the held clients' own sessions may have lost their statement
                if c.is_closed():
                    held[i] = await asyncpg.connect(proxy.dsn(), statement_cache_size=0)
        for c in held:
            await c.close()
        return failures

    failures = run_async(body(), 60)
    assert not failures, failures
