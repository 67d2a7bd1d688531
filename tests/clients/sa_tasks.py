"""The SQLAlchemy 2 async task both SQLAlchemy tests run (test_sqlalchemy.py with asyncpg's statement cache
off, test_prepared.py with the dialect's defaults: named prepared statements), the way the MCP servers use it:
rounds of an explicit transaction that writes a row with a JSONB value and reads it back, runs a few distinct
statements on the same connection, a transaction rolled back by an exception, and a read in a fresh session
(implicitly begun, rolled back at its close) that must see exactly the committed rows."""
import uuid

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text
from sqlalchemy.dialects.postgresql import JSONB


class Boom(Exception):
    pass


def items_table():
    """A table of its own per test (created by the test through its engine, dropped by `drop`)."""
    return Table(f"pgpilot_sa_{uuid.uuid4().hex[:10]}", MetaData(),
                 Column("id", Integer, primary_key=True, autoincrement=True),
                 Column("task", Integer, nullable=False, index=True),
                 Column("n", Integer, nullable=False),
                 Column("label", String(100), nullable=False),
                 Column("attrs", JSONB, nullable=False))


async def task_rounds(Session, items, task, rounds):
    for r in range(rounds):
        async with Session() as session:
            async with session.begin():
                new_id = (await session.execute(
                    insert(items).values(task=task, n=r, label=f"task-{task}-{r}", attrs={"task": task, "r": r})
                    .returning(items.c.id))).scalar_one()
                rows = (await session.execute(
                    select(items.c.id, items.c.n, items.c.attrs).where(items.c.task == task).order_by(items.c.n))).all()
                assert [(row.n, row.attrs) for row in rows] == [(k, {"task": task, "r": k}) for k in range(r + 1)]
                assert rows[-1].id == new_id
                for k in range(5):  # distinct statements, same connection, same transaction
                    got = (await session.execute(text(f"SELECT CAST(:v AS integer) + {k}"), {"v": task})).scalar_one()
                    assert got == task + k

        with pytest.raises(Boom):  # rolled back by session.begin()
            async with Session() as session:
                async with session.begin():
                    await session.execute(insert(items).values(task=task, n=100 + r, label="rolled", attrs={}))
                    raise Boom()

        # A read in a fresh session sees exactly the committed rows (begun implicitly, rolled back when the
        # session closes).
        async with Session() as session:
            count = (await session.execute(
                select(func.count()).select_from(items).where(items.c.task == task))).scalar_one()
            assert count == r + 1
            label = (await session.execute(
                select(items.c.label).where(items.c.task == task, items.c.n == r))).scalar_one()
            assert label == f"task-{task}-{r}"
