"""SQLAlchemy 2 async (postgresql+asyncpg) through pgpilot, the way the MCP servers use it: NullPool, so every
session opens a fresh connection (startup + SCRAM through the proxy) and closes it again.

Named statements: the asyncpg dialect runs every statement through asyncpg's Connection.prepare(). With
statement_cache_size=0 (connect_args) and no prepared_statement_name_func, asyncpg (>= 0.29) prepares the
unnamed statement and re-Parses it at execution; prepared_statement_cache_size=0 (URL) stops SQLAlchemy from
keeping prepared statement objects around between executions.
"""
import asyncio

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from conftest import BackendSampler, run_async
from sa_tasks import items_table, task_rounds

CLIENTS = 50
ROUNDS = 3


def make_engine(proxy):
    url = f"postgresql+asyncpg://app:app@{proxy.host}:{proxy.port}/app?prepared_statement_cache_size=0"
    return create_async_engine(url, poolclass=NullPool,
                               connect_args={"statement_cache_size": 0, "timeout": 10, "command_timeout": 30})


@pytest.fixture
def items(pg_admin):
    table = items_table()
    yield table
    pg_admin.execute(f"DROP TABLE IF EXISTS {table.name}")


def test_fifty_tasks_nullpool_sessions(proxy, pg_admin, items):
    async def main():
        engine = make_engine(proxy)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(items.metadata.create_all)
                assert (await conn.execute(text("SELECT current_user"))).scalar_one() == "app"
            Session = async_sessionmaker(engine, expire_on_commit=False)
            return await asyncio.gather(*(task_rounds(Session, items, t, ROUNDS) for t in range(CLIENTS)),
                                        return_exceptions=True)
        finally:
            await engine.dispose()

    with BackendSampler(pg_admin, "app", proxy.started_at) as sampler:
        results = run_async(main(), 180)
    errs = [f"task {i}: {r!r}" for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert errs == [], f"{len(errs)} of {CLIENTS} tasks failed, first: {errs[:5]}"
    assert pg_admin.scalar(f"SELECT count(*) FROM {items.name}") == CLIENTS * ROUNDS
    assert pg_admin.scalar(f"SELECT count(*) FROM {items.name} WHERE label = 'rolled'") == 0
    assert pg_admin.scalar(f"SELECT count(DISTINCT task) FROM {items.name}") == CLIENTS
    assert 1 <= sampler.max <= proxy.pool_size, f"saw {sampler.max} upstream backends, pool max is {proxy.pool_size}"


def test_orm_style_reads_after_writes(proxy, items):
    """One engine, sequential sessions: each write is visible to the very next session (no stale reads)."""
    async def main():
        engine = make_engine(proxy)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(items.metadata.create_all)
            Session = async_sessionmaker(engine, expire_on_commit=False)
            for k in range(20):
                async with Session.begin() as session:
                    await session.execute(insert(items).values(task=0, n=k, label=f"v{k}", attrs={"k": k}))
                async with Session() as session:
                    latest = (await session.execute(select(func.max(items.c.n)))).scalar_one()
                    assert latest == k
        finally:
            await engine.dispose()

    run_async(main(), 60)
