"""`[cache] invalidation = "replication"`: writes that never pass through pgpilot (a direct connection, as psql, a
migration or an unproxied service would make them) invalidate the cache from the server's logical replication stream.

These run against the harness's second cluster (Debian's PostgreSQL 15 with contrib, started with wal_level=logical;
the pgvector build has no test_decoding) and, for the fallback, against the first (no test_decoding there)."""
import asyncio
import json
import os
import signal
import statistics
import subprocess
import time

import asyncpg
import psycopg
import pytest

from conftest import pg_host, pg_port, require_env, run_async, wait_until
from test_cache_row_level import staleness_run

REPLICATION = "[cache]\ninvalidation = \"replication\"\n"
BOUND_MS = 500  # max_staleness_ms's default


def pgss_port():
    return int(require_env("TEST_PGSS_PORT"))


def superuser(port):
    return psycopg.connect(f"postgresql://postgres@{pg_host()}:{port}/app", autocommit=True)


@pytest.fixture
def repl_table():
    """A table on the logical cluster, app with REPLICATION; yields (name, a direct superuser connection
    whose commits are flushed at once, as with PostgreSQL's default synchronous_commit)."""
    name = f"repl_{os.getpid()}_{int(time.time() * 1000) % 10_000_000}"
    with superuser(pgss_port()) as admin:
        admin.execute("ALTER ROLE app REPLICATION")
        admin.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
        admin.execute(f"INSERT INTO {name} SELECT g, 'v' || g FROM generate_series(1, 10) g")
        admin.execute(f"ALTER TABLE {name} OWNER TO app")
        admin.execute("SET synchronous_commit = on")
        yield name, admin
    with superuser(pgss_port()) as admin:  # a new connection: a test may have restarted the server
        admin.execute(f"DROP TABLE IF EXISTS {name}")


def status(proxy):
    _, body = proxy.http_get("/health/status")
    return json.loads(body)["cache"]


def stream(proxy, db="app"):
    return next((s for s in status(proxy)["replication"] if s["database"] == db), None)


def live(proxy, db="app"):
    s = stream(proxy, db)
    return s is not None and s["state"] == "live" and s["lag_ms"] is not None and s["lag_ms"] < BOUND_MS


def start_replicated(start_proxy, extra=""):
    proxy = start_proxy(pool_size=4, extra_toml=REPLICATION + extra, upstream_port=pgss_port())
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:  # the first login starts the stream
        c.execute("SELECT 1")
    wait_until(lambda: live(proxy), 15, message="the replication stream live and caught up")
    return proxy


def read_until(c, sql, want, timeout_s=5.0):
    """Reads until `want` comes back; the time that took (ms)."""
    t0 = time.perf_counter()
    while True:
        got = c.execute(sql).fetchone()[0]
        if got == want:
            return (time.perf_counter() - t0) * 1000
        assert time.perf_counter() - t0 < timeout_s, f"still {got!r}, not {want!r}, after {timeout_s}s"


def hit_once(proxy, c, sql):
    wait_until(lambda: (lambda before: c.execute(sql) and status(proxy)["hits"] > before)(status(proxy)["hits"]),
               10, message="a cache hit")


def test_direct_writes_invalidate_within_the_bound(start_proxy, repl_table):
    table, direct = repl_table
    second = f"{table}_b"
    direct.execute(f"CREATE TABLE {second} (id int PRIMARY KEY, v text)")
    direct.execute(f"INSERT INTO {second} VALUES (1, 'a')")
    direct.execute(f"ALTER TABLE {second} OWNER TO app")
    try:
        direct_writes_within_the_bound(start_proxy, table, second, direct)
    finally:
        direct.execute(f"DROP TABLE {second}")


def direct_writes_within_the_bound(start_proxy, table, second, direct):
    proxy = start_replicated(start_proxy)
    sql = f"SELECT v FROM {table} WHERE id = 1"
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        hit_once(proxy, c, sql)
        delays = []
        for i in range(40):
            hit_once(proxy, c, sql)  # the old value is cached when the write commits
            direct.execute(f"UPDATE {table} SET v = %s WHERE id = 1", (f"w{i}",))
            delays.append(read_until(c, sql, f"w{i}"))
        delays.sort()
        p50, p99 = statistics.median(delays), delays[int(len(delays) * 0.99) - 1]
        print(f"invalidation delay of a direct write: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {delays[-1]:.1f} ms")
        assert delays[-1] < BOUND_MS, delays
        # Another table's writes, a transaction over several tables, TRUNCATE.
        other = f"SELECT count(*) FROM {table}"
        hit_once(proxy, c, other)
        direct.execute(f"BEGIN; INSERT INTO {table} VALUES (100, 'x'); UPDATE {table} SET v = 'y' WHERE id = 2; COMMIT")
        read_until(c, other, 11)
        # One transaction over two tables invalidates both.
        hit_once(proxy, c, other)
        in_second = f"SELECT v FROM {second} WHERE id = 1"
        hit_once(proxy, c, in_second)
        direct.execute(f"BEGIN; UPDATE {second} SET v = 'b' WHERE id = 1; DELETE FROM {table} WHERE id = 100; COMMIT")
        read_until(c, in_second, "b")
        read_until(c, other, 10)
        hit_once(proxy, c, other)
        direct.execute(f"TRUNCATE {table}")
        read_until(c, other, 0)
    s = stream(proxy)
    assert s["invalidations"] >= 42 and s["reconnects"] == 0, s
    _, metrics = proxy.http_get("/metrics")
    assert 'pgpilot_cache_invalidations_total{source="replication"}' in metrics
    assert 'pgpilot_cache_replication_lag_seconds{database="app"}' in metrics


def test_a_table_without_replica_identity_is_invalidated_and_still_writable(start_proxy, repl_table):
    table, direct = repl_table
    bare = table + "_bare"
    direct.execute(f"CREATE TABLE {bare} (k int, v text)")
    direct.execute(f"INSERT INTO {bare} VALUES (1, 'a')")
    direct.execute(f"ALTER TABLE {bare} OWNER TO app")
    try:
        proxy = start_replicated(start_proxy)
        sql = f"SELECT v FROM {bare} WHERE k = 1"
        with psycopg.connect(proxy.dsn(), autocommit=True) as c:
            hit_once(proxy, c, sql)
            direct.execute(f"UPDATE {bare} SET v = 'b' WHERE k = 1")  # no publication: never 55000
            read_until(c, sql, "b")
            c.execute(f"DELETE FROM {bare} WHERE k = 1")  # through pgpilot as well
    finally:
        direct.execute(f"DROP TABLE {bare}")


def test_stream_killed_and_server_restarted_recover_without_stale_reads(start_proxy, repl_table):
    table, direct = repl_table
    proxy = start_replicated(start_proxy)
    sql = f"SELECT v FROM {table} WHERE id = 3"
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        hit_once(proxy, c, sql)
        killed = direct.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE backend_type = 'walsender' AND usename = 'app'").fetchall()
        assert killed, "no walsender to kill"
        direct.execute(f"UPDATE {table} SET v = 'after kill' WHERE id = 3")
        # The commit happened while no stream was connected: the bound still holds.
        assert read_until(c, sql, "after kill") < BOUND_MS + 200
        wait_until(lambda: live(proxy) and stream(proxy)["reconnects"] >= 1, 15, message="the stream back")
        hit_once(proxy, c, sql)
    data = os.path.join(require_env("HARNESS_DIR"), "pgss")
    pg_ctl = subprocess.run("ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1", shell=True, capture_output=True,
                            text=True).stdout.strip() + "/pg_ctl"
    log = os.path.join(require_env("HARNESS_DIR"), "pgss.log")  # else the postmaster keeps our pipe open
    subprocess.run(["runuser", "-u", "postgres", "--", pg_ctl, "-D", data, "-l", log, "-m", "fast", "-w", "restart"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    with superuser(pgss_port()) as admin:
        admin.execute("SET synchronous_commit = on")
        admin.execute(f"UPDATE {table} SET v = 'after restart' WHERE id = 3")
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        read_until(c, sql, "after restart", timeout_s=10)
        wait_until(lambda: live(proxy), 20, message="the stream back after the restart")
        hit_once(proxy, c, sql)


def test_no_slot_outlives_pgpilot_even_after_kill_9(start_proxy, repl_table):
    proxy = start_replicated(start_proxy)
    _, direct = repl_table
    slots = "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgpilot_%'"
    assert direct.execute(slots).fetchone()[0] >= 1
    os.kill(proxy.proc.pid, signal.SIGKILL)
    proxy.proc.wait(timeout=10)
    proxy.proc = None
    wait_until(lambda: direct.execute(slots).fetchone()[0] == 0, 10, message="the temporary slot dropped")
    proxy.start()
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        c.execute("SELECT 1")
    wait_until(lambda: live(proxy), 15, message="a new stream after the restart")


def test_without_logical_decoding_the_database_falls_back_to_proxy_invalidation(start_proxy):
    """The first harness cluster has no test_decoding (and wal_level replica): a clear reason in /health/status,
    the cache keeps working on proxy-seen writes and the TTL."""
    proxy = start_proxy(pool_size=4, extra_toml=REPLICATION + 'replication_user = "postgres"\n')
    with superuser(pg_port()) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS repl_fallback (id int PRIMARY KEY, v text)")
        admin.execute("INSERT INTO repl_fallback VALUES (1, 'a') ON CONFLICT DO NOTHING")
        admin.execute("ALTER TABLE repl_fallback OWNER TO app")
    sql = "SELECT v FROM repl_fallback WHERE id = 1"
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        c.execute("SELECT 1")
        wait_until(lambda: (stream(proxy) or {}).get("state") == "unavailable", 15, message="the fallback")
        reason = stream(proxy)["last_error"]
        assert "wal_level" in reason or "test_decoding" in reason, reason
        hit_once(proxy, c, sql)
        c.execute("UPDATE repl_fallback SET v = 'b' WHERE id = 1")
        assert c.execute(sql).fetchone()[0] == "b"
    assert "wal_level" in proxy.stderr_text() or "test_decoding" in proxy.stderr_text()


def test_direct_writes_invalidate_only_their_keys_and_are_never_stale(start_proxy, repl_table):
    """Row-level invalidation from the stream: a direct UPDATE of key 1 leaves keys 2 and 3 hitting; a direct
    key-changing UPDATE invalidates both keys; then the staleness checker, writers straight to the server (single
    keys and ranges) and readers through pgpilot, finds no read older than the bound."""
    name, admin = repl_table
    proxy = start_replicated(start_proxy, "skip_unrepeated = false\n")
    read = f"SELECT v FROM {name} WHERE id = $1"
    with psycopg.connect(proxy.dsn("pgpilot"), autocommit=True) as console:
        rows = dict(console.execute("SHOW CACHE").fetchall())
    assert rows["replication app"].startswith("live, lag "), rows

    async def until(c, key, want):
        for _ in range(500):
            if await c.fetchval(read, key) == want:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"key {key} still not {want!r} after 5 s")

    async def main():
        c = await asyncpg.connect(proxy.dsn())
        try:
            for _ in range(2):
                assert [await c.fetchval(read, k) for k in (1, 2, 3)] == ["v1", "v2", "v3"]
            admin.execute(f"UPDATE {name} SET v = 'direct' WHERE id = 1")
            await until(c, 1, "direct")
            before = status(proxy)["hits"]
            assert [await c.fetchval(read, k) for k in (2, 3)] == ["v2", "v3"]
            assert status(proxy)["hits"] - before == 2, "keys the direct write did not touch still hit"
            assert await c.fetchval(read, 50) is None
            admin.execute(f"UPDATE {name} SET id = 50 WHERE id = 3")
            await until(c, 50, "v3")
            assert await c.fetchval(read, 3) is None
        finally:
            await c.close()
        direct = f"postgresql://postgres@{pg_host()}:{pgss_port()}/app"
        writer = lambda: asyncpg.connect(direct, server_settings={"synchronous_commit": "on"})  # noqa: E731
        keys = [k for k in range(1, 11) if k != 3] + [50]  # (3 moved to 50 above)
        return await staleness_run([proxy.dsn()], writer, name, keys, 6, BOUND_MS / 1000)

    stale, checked, seen = run_async(main(), 90)
    if stale:
        open("/tmp/stale.log", "w").write("\n".join(seen) + "\n" + proxy.stderr_text())
    assert checked > 40 and stale == 0, f"{stale} stale of {checked}: {seen[:5]}"


def test_two_replicas_sharing_redis_serve_nothing_older_than_the_bound(start_proxy, repl_table):
    """The staleness checker with writers straight to the server and readers through two pgpilot replicas that
    share Redis (each with its own stream): no read is older than the bound, and the replicas do hit."""
    name, _ = repl_table
    extra = f"skip_unrepeated = false\nredis_url = \"{require_env('TEST_REDIS_URL')}\"\n"
    replicas = [start_replicated(start_proxy, extra) for _ in range(2)]
    direct = f"postgresql://postgres@{pg_host()}:{pgss_port()}/app"
    writer = lambda: asyncpg.connect(direct, server_settings={"synchronous_commit": "on"})  # noqa: E731
    dsns = [p.dsn() for p in replicas]
    before = [status(p)["hits"] for p in replicas]
    stale, checked, seen = run_async(staleness_run(dsns, writer, name, list(range(1, 11)), 6, BOUND_MS / 1000), 90)
    assert checked > 40 and stale == 0, f"{stale} stale of {checked}: {seen[:5]}"
    assert all(status(p)["hits"] > b for p, b in zip(replicas, before)), "both replicas served hits"
