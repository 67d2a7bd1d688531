"""The reads the MCP servers make most: asyncpg's fetchrow()/fetchval() send Execute with a row limit of 1 (the
server answers PortalSuspended). pgpilot caches them whole (its own hidden Execute fetches the rest before the
client's Sync) and replays them with each client's limit; these tests check the drivers get what a direct
connection gives, hit or miss, and that the repeats really are hits. psycopg's fetchone() and SQLAlchemy's
first()/scalar() fetch whole results and must keep hitting. The byte-level replay (PortalSuspended,
CommandComplete counts, a portal continued after a hit) is the differential scenario `row_limited_reads`."""
import asyncpg
import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from conftest import cache_status, direct_dsn, run_async, wait_cache_ready

ITEM = "SELECT id, title, status FROM work_items WHERE id = (SELECT id FROM work_items ORDER BY id OFFSET $1 LIMIT 1)"
COUNT = "SELECT count(*) FROM work_items WHERE depth = $1"
CHILDREN = "SELECT id, title FROM work_items WHERE depth = $1 ORDER BY id LIMIT 30"
NOTHING = "SELECT id FROM work_items WHERE title = $1"


def hits(proxy):
    return cache_status(proxy)["hits"]


def test_asyncpg_fetchrow_and_fetchval_are_cached_and_match_direct(start_proxy):
    proxy = start_proxy(pool_size=4)
    wait_cache_ready(proxy, "work_items", db="workflow")

    async def main():
        direct = await asyncpg.connect(direct_dsn("workflow"))
        via = await asyncpg.connect(proxy.dsn("workflow"))  # default statement cache: named statements
        try:
            want = {
                "item": [await direct.fetchrow(ITEM, i) for i in range(3)],
                "count": [await direct.fetchval(COUNT, d) for d in (0, 1, 2)],
                "first child": [await direct.fetchrow(CHILDREN, d) for d in (1, 2)],
                "none": await direct.fetchrow(NOTHING, "no such title"),
                "children": [[tuple(r) for r in await direct.fetch(CHILDREN, d)] for d in (1, 2)],
            }
            assert want["none"] is None and len(want["children"][0]) == 30
            got = lambda: {  # noqa: E731
                "item": [via.fetchrow(ITEM, i) for i in range(3)],
                "count": [via.fetchval(COUNT, d) for d in (0, 1, 2)],
                "first child": [via.fetchrow(CHILDREN, d) for d in (1, 2)],
            }
            for round_ in range(4):
                before = hits(proxy)
                for name, calls in got().items():
                    assert [await c for c in calls] == want[name], f"{name}, round {round_}"
                assert await via.fetchrow(NOTHING, "no such title") is None
                # The same statement fetched whole: served from (or stored as) the same kind of entry.
                assert [[tuple(r) for r in await via.fetch(CHILDREN, d)] for d in (1, 2)] == want["children"]
                if round_ >= 2:  # admitted after the first round, stored in the second
                    assert hits(proxy) - before >= 9, f"round {round_}: only {hits(proxy) - before} hits"
        finally:
            await direct.close()
            await via.close()

    run_async(main(), 60)


def test_a_limited_read_of_many_rows_stays_exact_and_is_not_stored(start_proxy):
    """More rows than pgpilot's continuation fetches (1000): nothing is stored and every call still gets the
    server's first row (after three such misses pgpilot stops fetching the rest for that statement:
    `Learned::worth_continuing`)."""
    proxy = start_proxy(pool_size=4)
    wait_cache_ready(proxy, "code_chunks", db="codebase")
    sql = ("SELECT id, code_file_id FROM code_chunks WHERE $1::int > 0"
           " UNION ALL SELECT id, code_file_id FROM code_chunks ORDER BY id")

    async def main():
        direct = await asyncpg.connect(direct_dsn("codebase"))
        via = await asyncpg.connect(proxy.dsn("codebase"))
        try:
            assert 2 * await direct.fetchval("SELECT count(*) FROM code_chunks") > 1001
            want = await direct.fetchrow(sql, 1)
            before = cache_status(proxy)["stores"]
            for _ in range(8):
                assert await via.fetchrow(sql, 1) == want
            assert cache_status(proxy)["stores"] == before
        finally:
            await direct.close()
            await via.close()

    run_async(main(), 60)


def test_psycopg_fetchone_and_sqlalchemy_first_and_scalar_hit(start_proxy):
    proxy = start_proxy(pool_size=4)
    wait_cache_ready(proxy, "work_items", db="workflow")
    sql = "SELECT id, title FROM work_items WHERE depth = %s ORDER BY id LIMIT 5"
    with psycopg.connect(direct_dsn("workflow"), autocommit=True) as d, \
            psycopg.connect(proxy.dsn("workflow"), autocommit=True) as c:
        want = d.execute(sql, (2,)).fetchone()
        for _ in range(2):
            assert c.execute(sql, (2,)).fetchone() == want
        before = hits(proxy)
        for _ in range(3):
            assert c.execute(sql, (2,)).fetchone() == want
        assert hits(proxy) - before >= 3

    async def main():
        url = proxy.dsn("workflow").replace("postgresql://", "postgresql+asyncpg://")
        engine = create_async_engine(url, poolclass=NullPool)  # a new connection per call, as the MCP servers
        first = text("SELECT id, title FROM work_items WHERE depth = :d ORDER BY id LIMIT 3")
        scalar = text("SELECT count(*) FROM work_items WHERE depth = :d")
        direct = await asyncpg.connect(direct_dsn("workflow"))
        try:
            want_first = tuple(await direct.fetchrow("SELECT id, title FROM work_items WHERE depth = 1 ORDER BY id LIMIT 3"))
            want_scalar = await direct.fetchval("SELECT count(*) FROM work_items WHERE depth = 1")
            for round_ in range(4):
                before = hits(proxy)
                async with engine.begin() as conn:
                    assert tuple((await conn.execute(first, {"d": 1})).first()) == want_first
                    assert (await conn.execute(scalar, {"d": 1})).scalar() == want_scalar
                if round_ >= 2:
                    assert hits(proxy) - before >= 2
        finally:
            await direct.close()
            await engine.dispose()

    run_async(main(), 60)
