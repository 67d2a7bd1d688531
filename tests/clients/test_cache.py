"""The result cache through the MCP servers' own drivers: asyncpg (default statement cache, reads in transactions),
psycopg 3 and SQLAlchemy async give the same rows as a direct connection whether the proxy answers from its cache or
not, and the shared workload runs clean with the cache on, with Redis, and with Redis killed mid-run."""
import json
import random
import subprocess
import sys
import time
import uuid

import asyncpg
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import wire
from conftest import (ALL_BUT_READBACK, MCP_LOAD, SEARCH_SQL, free_port, pg_host, pg_port, run_async, run_mcp_load,
                      wait_cache_ready, wait_until)



RNG = random.Random(11)
VECTORS = ["[" + ",".join(f"{RNG.random() - 0.5:.4f}" for _ in range(768)) + "]" for _ in range(3)]


def cache(proxy):
    status, body = proxy.http_get("/health/status")
    assert status == 200, body
    return json.loads(body)["cache"]


def direct_dsn(db):
    return f"postgresql://app:app@{pg_host()}:{pg_port()}/{db}"


def start_cached(start_proxy, extra=""):
    proxy = start_proxy(pool_size=6, extra_toml=extra)
    # Each database's list of ordinary tables loads on first use: wait until a repeated read is a hit.
    for db, table in (("codebase", "code_files"), ("workflow", "work_items")):
        with psycopg.connect(proxy.dsn(db), autocommit=True) as c:
            def warmed():
                before = cache(proxy)["hits"]
                c.execute(f"SELECT count(*) FROM {table}", prepare=False)
                return cache(proxy)["hits"] > before
            wait_until(warmed, 10, message=f"the cache answering reads on {db}")
    return proxy


def test_asyncpg_search_hits_match_direct(start_proxy):
    proxy = start_cached(start_proxy)

    async def main():
        direct = await asyncpg.connect(direct_dsn("codebase"))
        via = await asyncpg.connect(proxy.dsn("codebase"))  # default statement cache: named statements
        try:
            for vec in VECTORS:
                want = [tuple(r) for r in await direct.fetch(SEARCH_SQL, 1, vec, 1, "%.py", 10)]
                assert len(want) == 10
                before = cache(proxy)["hits"]
                for _ in range(3):
                    assert [tuple(r) for r in await via.fetch(SEARCH_SQL, 1, vec, 1, "%.py", 10)] == want
                    async with via.transaction():  # how the MCP servers search
                        assert [tuple(r) for r in await via.fetch(SEARCH_SQL, 1, vec, 1, "%.py", 10)] == want
                assert cache(proxy)["hits"] >= before + 5
        finally:
            await direct.close()
            await via.close()

    run_async(main(), 60)


def test_psycopg_hits_match_direct_in_both_protocols(start_proxy):
    proxy = start_cached(start_proxy)
    with psycopg.connect(direct_dsn("workflow"), autocommit=True) as d, \
            psycopg.connect(proxy.dsn("workflow"), autocommit=True) as c:
        sql = "SELECT id, title, status, depth FROM work_items WHERE parent_id IS NULL ORDER BY id LIMIT %s"
        want = d.execute(sql, (20,)).fetchall()
        literal = "SELECT id, title FROM work_items WHERE depth = 2 ORDER BY id LIMIT 15"
        want_literal = d.execute(literal).fetchall()
        before = cache(proxy)["hits"]
        for _ in range(4):
            assert c.execute(sql, (20,)).fetchall() == want  # extended, unnamed statement, Describe portal
            assert c.execute(sql, (20,), prepare=True).fetchall() == want  # named statement
            assert c.execute(literal).fetchall() == want_literal  # simple Query (no parameters)
            with c.cursor(binary=True) as cur:  # binary results are another entry
                assert cur.execute(sql, (20,)).fetchall() == want
        assert cache(proxy)["hits"] >= before + 10


def test_sqlalchemy_new_connection_per_call_reads_its_writes(start_proxy):
    proxy = start_cached(start_proxy)

    async def main():
        engine = create_async_engine(proxy.dsn("workflow").replace("postgresql://", "postgresql+asyncpg://"),
                                     poolclass=NullPool)
        read = text("SELECT title FROM work_items WHERE id = (SELECT id FROM work_items WHERE depth = 1 ORDER BY id LIMIT 1)")
        try:
            async with engine.begin() as conn:
                original = (await conn.execute(read)).scalar_one()
            before = cache(proxy)["hits"]
            for _ in range(3):
                async with engine.begin() as conn:
                    assert (await conn.execute(read)).scalar_one() == original
            assert cache(proxy)["hits"] >= before + 2
            for i in range(3):
                async with engine.begin() as conn:
                    await conn.execute(text("UPDATE work_items SET title = :t "
                                            "WHERE id = (SELECT id FROM work_items WHERE depth = 1 ORDER BY id LIMIT 1)"),
                                       {"t": f"renamed {i}"})
                async with engine.begin() as conn:  # a new connection, right after the commit
                    assert (await conn.execute(read)).scalar_one() == f"renamed {i}"
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE work_items SET title = :t "
                                        "WHERE id = (SELECT id FROM work_items WHERE depth = 1 ORDER BY id LIMIT 1)"),
                                   {"t": original})
        finally:
            await engine.dispose()

    run_async(main(), 60)


def test_mcp_workload_with_cache_is_clean_and_hits(start_proxy, tmp_path):
    proxy = start_cached(start_proxy)
    summary, _ = run_mcp_load(proxy, tmp_path, "cached", "--clients", "20", "--mix", ALL_BUT_READBACK,
                              duration=10, statement_cache=None)
    run_mcp_load(proxy, tmp_path, "readback", "--clients", "1", "--mix", "readback=1", duration=3,
                 statement_cache=None)
    c = cache(proxy)
    assert c["hits"] > 100 and c["invalidations"] > 0, c


class OwnRedis:
    """A private redis-server the test may kill. A probed free port can be taken before redis-server binds it (it
    then exits), by another test's redis-server too: only an answer naming this child's process id counts; a start
    whose process exited is tried again on a new port."""

    def __init__(self):
        for _ in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
            wait_until(lambda: self.proc.poll() is not None or self._answering_pid() == self.proc.pid, 10,
                       message="redis-server up")
            if self.proc.poll() is None:
                return
        raise AssertionError("redis-server did not start on three ports")

    def _answering_pid(self):
        try:  # (a listener that never answers must not hold the wait up)
            info = subprocess.run(["redis-cli", "-p", str(self.port), "info", "server"], capture_output=True,
                                  text=True, timeout=2)
        except subprocess.TimeoutExpired:
            return None
        pid = [line.split(":", 1)[1] for line in info.stdout.splitlines() if line.startswith("process_id:")]
        return int(pid[0]) if pid else None

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def test_mcp_workload_survives_redis_dying(start_proxy, tmp_path):
    redis = OwnRedis()
    try:
        proxy = start_cached(start_proxy, f"[cache]\nredis_url = \"redis://127.0.0.1:{redis.port}\"\n")
        wait_until(lambda: cache(proxy)["redis_connected"], 10, message="Redis subscription")
        out = tmp_path / "outage.json"
        cmd = [sys.executable, str(MCP_LOAD), "--host", proxy.host,
               "--port", str(proxy.port), "--user", "app", "--password", "app", "--codebase-db", "codebase",
               "--workflow-db", "workflow", "--duration", "8", "--clients", "10", "--mix", ALL_BUT_READBACK,
               "--json", str(out)]
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(3)
        redis.kill()
        output, _ = load.communicate(timeout=120)
        summary = json.loads(out.read_text())
        assert summary["errors"] == 0 and summary["stale_reads"] == 0, output
        c = cache(proxy)
        assert not c["redis_connected"] and c["hits_redis"] + c["hits_local"] > 0, c
    finally:
        redis.kill()


def test_a_cold_start_caches_the_first_reads(start_proxy):
    """A database pgpilot has not seen: its table list loads at the first login, and a read that comes before
    it is loaded waits for it (relations_wait_ms), so the first repeated reads already hit instead of the
    database going uncached until a background load finishes."""
    proxy = start_proxy(pool_size=4)
    with psycopg.connect(proxy.dsn("workflow"), autocommit=True) as c:
        sql = "SELECT id, title FROM work_items WHERE depth = 1 ORDER BY id LIMIT 3"
        first = c.execute(sql, prepare=False).fetchall()
        for _ in range(2):
            assert c.execute(sql, prepare=False).fetchall() == first
    status = cache(proxy)
    assert status["stores"] >= 1 and status["hits"] >= 2, status


def test_ddl_and_revoke_outside_pgpilot_are_seen_within_the_refresh_interval(start_proxy, pg_admin, admin_cleanup):
    """A column added and a privilege revoked straight on the server (not through pgpilot, so no write it sees)
    end the cached results of that table at the next table-list refresh (`relations_refresh_s`), not at the TTL."""
    table = f"ddl_out_{uuid.uuid4().hex[:8]}"
    pg_admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    pg_admin.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    pg_admin.execute(f"ALTER TABLE {table} OWNER TO postgres")
    pg_admin.execute(f"GRANT SELECT ON {table} TO app")
    admin_cleanup(f"DROP TABLE IF EXISTS {table}")
    proxy = start_proxy(pool_size=4, extra_toml="[cache]\nrelations_refresh_s = 1\nskip_unrepeated = false\n")
    wait_cache_ready(proxy, table)
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        read = f"SELECT * FROM {table} WHERE id = %s"
        assert c.execute(read, (1,)).fetchall() == [(1, "a")]
        before = cache(proxy)["hits"]
        assert c.execute(read, (1,)).fetchall() == [(1, "a")]
        assert cache(proxy)["hits"] == before + 1, "cached"
        pg_admin.execute(f"ALTER TABLE {table} ADD COLUMN x int DEFAULT 7")
        wait_until(lambda: c.execute(read, (1,)).fetchall() == [(1, "a", 7)], 5, message="the new column seen")
        assert c.execute(read, (1,)).fetchall() == [(1, "a", 7)]
        pg_admin.execute(f"REVOKE SELECT ON {table} FROM app")

        def refused():
            try:
                c.execute(read, (1,))
            except psycopg.errors.InsufficientPrivilege:
                return True
            return False
        wait_until(refused, 5, message="the revoked privilege enforced")


def test_queries_show_each_fingerprints_strategy(start_proxy):
    """/queries and SHOW QUERIES say what pgpilot does with each fingerprint and why: a cheap lookup whose
    parameters never repeat passes through (the cache's admission looks past it), a repeating read is cached, a
    write passes through."""
    proxy = start_proxy(pool_size=4)
    wait_cache_ready(proxy, "pgbench_branches", db="bench")

    async def main():
        c = await asyncpg.connect(proxy.dsn("bench"))
        try:
            for _ in range(700):
                await c.fetchval("SELECT abalance FROM pgbench_accounts WHERE aid = $1", random.randint(1, 200000))
            for _ in range(20):
                await c.fetchval("SELECT count(*) FROM pgbench_branches")
            await c.execute("UPDATE pgbench_tellers SET tbalance = tbalance WHERE tid = $1", 1)
        finally:
            await c.close()
    run_async(main(), 60)
    _, body = proxy.http_get("/queries?limit=50")
    rows = json.loads(body)
    by = lambda text: next(r for r in rows if text in r["query"])  # noqa: E731
    lookup, count, write = by("FROM pgbench_accounts"), by("FROM pgbench_branches"), by("UPDATE pgbench_tellers")
    assert (lookup["strategy"], count["strategy"], write["strategy"]) == ("pass-through", "cache", "pass-through")
    assert "rarely repeat" in lookup["strategy_reason"] and "not a read" in write["strategy_reason"]
    assert count["since"] <= time.time() * 1000 and lookup["since"] > 0
    with psycopg.connect(proxy.dsn("pgpilot"), autocommit=True) as console:
        cur = console.execute("SHOW QUERIES")
        cols = [d.name for d in cur.description]
        shown = [dict(zip(cols, r)) for r in cur.fetchall()]
    assert any(r["strategy"] == "cache" and "pgbench_branches" in r["query"] for r in shown), shown


@pytest.mark.parametrize("error_first", [False, True], ids=["one-batch", "error-known-first"])
def test_a_query_the_server_skips_after_an_error_leaves_later_commits_invalidating(cached_proxy, pg_admin,
                                                                                     admin_cleanup, error_first):
    """After an error in an extended-protocol batch PostgreSQL skips everything up to Sync, a simple Query too,
    which then gets no ReadyForQuery of its own. The group of writes that Query ended must join the Sync's:
    counted as a group of its own, it put the write bookkeeping one ReadyForQuery behind, a later commit's
    invalidation was dropped by the next error's ReadyForQuery, and a cached read served the old row. Nor may
    the session wait for that ReadyForQuery: with one server connection, another client must get it back.
    Sent in one batch the Query is queued before the error comes; sent after it, pgpilot knows it is skipped."""
    table = f"skipq_{uuid.uuid4().hex[:8]}"
    pg_admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    pg_admin.execute(f"INSERT INTO {table} VALUES (1, 'old')")
    pg_admin.execute(f"ALTER TABLE {table} OWNER TO app")
    admin_cleanup(f"DROP TABLE IF EXISTS {table}")
    proxy = cached_proxy("transaction", 1, "[cache]\nskip_unrepeated = false\n")
    conn = wire.connect(proxy.host, proxy.port, "app", "app", "app")
    other = wire.connect(proxy.host, proxy.port, "app", "app", "app")
    read = f"SELECT v FROM {table} WHERE id = 1"
    before = cache(proxy)["hits"]
    for _ in range(3):
        assert wire.simple(conn, read) == [["old"]]
    assert cache(proxy)["hits"] > before, "the read is answered from the cache (else this test cannot fail)"
    failing = [wire.parse("SELECT 1/0"), wire.bind(), wire.execute()]
    # (The read is a hit otherwise: skipped by the server, it gets no answer from the cache either.)
    skipped = [wire.query(read), wire.query(f"UPDATE {table} SET v = 'skipped'"), wire.sync()]
    if error_first:
        names = [m[0] for m in conn.exchange(failing + [wire.flush()], until="ErrorResponse")]
        names += [m[0] for m in conn.exchange(skipped, until=1)]
    else:
        names = [m[0] for m in conn.exchange(failing + skipped, until=1)]
    assert names == ["ParseComplete", "ErrorResponse", "ReadyForQuery"], "both Queries were skipped: " + str(names)
    assert wire.simple(other, "SELECT 1") == [["1"]], "the server connection went back to the pool"
    wire.simple(conn, f"UPDATE {table} SET v = 'new' WHERE id = 1")
    names = [m[0] for m in conn.exchange([wire.query("SELECT 1/0")])]
    assert names == ["ErrorResponse", "ReadyForQuery"], names
    assert wire.simple(conn, read) == [["new"]], "the committed UPDATE invalidated the cached read"
    assert wire.simple(other, "SELECT 2") == [["2"]]
    for c in (conn, other):
        c.terminate()
