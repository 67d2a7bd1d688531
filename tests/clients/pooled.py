"""Helpers shared by the prepared-statement driver tests (test_prepared*.py): the pool
drained after a run, failures out of gathered results, many asyncpg connections at once."""

import asyncpg

from conftest import asyncpg_close_all, connect_all, wait_until

POOL = 5


def check_pool_drained(proxy, databases=1):
    assert proxy.http_get("/health")[0] == 200
    status = wait_until(lambda: (s := proxy.pool_status())["active"] == 0 and s, 10,
                        message="all server connections returned to the pool (active == 0)")
    assert status["waiting"] == 0 and status["size"] <= proxy.pool_size * databases, status


def failures(results, what="client"):
    return [f"{what} {i}: {r!r}" for i, r in enumerate(results) if isinstance(r, BaseException)]


async def asyncpg_connect_many(proxy, n, **kw):
    return await connect_all(lambda: asyncpg.connect(proxy.dsn(), timeout=15, **kw), n, asyncpg_close_all)
