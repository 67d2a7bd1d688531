"""SQLAlchemy 2 async (postgresql+asyncpg) through pgpilot, the way the MCP servers use it: NullPool, so every
session opens a fresh connection (startup + SCRAM through the proxy) and closes it again.

Named statements: the asyncpg dialect runs every statement through asyncpg's Connection.prepare(). With
statement_cache_size=0 (connect_args) and no prepared_statement_name_func, asyncpg (>= 0.29) prepares the
unnamed statement and re-Parses it at execution; prepared_statement_cache_size=0 (URL) stops SQLAlchemy from
keeping prepared statement objects around between executions.
"""
import asyncio
import uuid

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from conftest import BackendSampler, run_async

CLIENTS = 50
ROUNDS = 3


class Boom(Exception):
    pass


def make_engine(proxy):
    url = f"postgresql+asyncpg://app:app@{proxy.host}:{proxy.port}/app?prepared_statement_cache_size=0"
    return create_async_engine(url, poolclass=NullPool,
                               connect_args={"statement_cache_size": 0, "timeout": 10, "command_timeout": 30})


@pytest.fixture
def items(pg_admin):
    meta = MetaData()
    table = Table(f"pgpilot_sa_{uuid.uuid4().hex[:10]}", meta,
                  Column("id", Integer, primary_key=True, autoincrement=True),
                  Column("task", Integer, nullable=False, index=True),
                  Column("n", Integer, nullable=False),
                  Column("label", String(100), nullable=False),
                  Column("attrs", JSONB, nullable=False))
    yield table
    pg_admin.execute(f"DROP TABLE IF EXISTS {table.name}")


async def task_work(Session, items, task):
    for r in range(ROUNDS):
        async with Session() as session:
            async with session.begin():
                new_id = (await session.execute(
                    insert(items).values(task=task, n=r, label=f"task-{task}-{r}", attrs={"task": task, "r": r})
                    .returning(items.c.id))).scalar_one()
                rows = (await session.execute(
                    select(items.c.id, items.c.n, items.c.attrs).where(items.c.task == task).order_by(items.c.n))).all()
                assert [(row.n, row.attrs) for row in rows] == [(k, {"task": task, "r": k}) for k in range(r + 1)]
                assert rows[-1].id == new_id

        with pytest.raises(Boom):  # rolled back by session.begin()
            async with Session() as session:
                async with session.begin():
                    await session.execute(insert(items).values(task=task, n=100 + r, label="rolled", attrs={}))
                    raise Boom()

        async with Session() as session:  # a read in a fresh connection sees exactly the committed rows
            count = (await session.execute(
                select(func.count()).select_from(items).where(items.c.task == task))).scalar_one()
            assert count == r + 1
            label = (await session.execute(
                select(items.c.label).where(items.c.task == task, items.c.n == r))).scalar_one()
            assert label == f"task-{task}-{r}"


def test_fifty_tasks_nullpool_sessions(proxy, pg_admin, items):
    async def main():
        engine = make_engine(proxy)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(items.metadata.create_all)
                assert (await conn.execute(text("SELECT current_user"))).scalar_one() == "app"
            Session = async_sessionmaker(engine, expire_on_commit=False)
            return await asyncio.gather(*(task_work(Session, items, t) for t in range(CLIENTS)),
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
