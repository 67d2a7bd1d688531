"""Differential scenarios (diff_scenarios.py) of named statements' descriptions: shapes another client's DDL changes
(PostgreSQL's 0A000 "cached plan must not change result type", and what it then runs or skips), and a description
too large to read in one piece."""
import wire as w
from diff_scenarios import ext, on, q, scenario


@scenario()
def ddl_between_executions(ctx):
    """A named statement prepared before another client's DDL: PostgreSQL answers 0A000 (cached plan must not
    change result type) while the shape differs, and executes it again once the DDL is undone. Computed
    columns only for the new column (its attnum grows with every run); the table is restored at the end."""
    star = f"SELECT * FROM {ctx.t} WHERE id <= 2 ORDER BY id"
    run = on(0, w.bind([], "ddl"), w.execute(), w.sync())
    return [on(0, w.parse(star, "ddl"), w.describe("S", "ddl"), w.sync()), run,
            *q(1, f"ALTER TABLE {ctx.t} ADD COLUMN extra int DEFAULT 5"), run,
            *q(0, f"SELECT id, extra + 0 AS e FROM {ctx.t} WHERE id <= 2 ORDER BY id"),
            *q(1, f"ALTER TABLE {ctx.t} DROP COLUMN extra"), run,
            *q(1, f"ALTER TABLE {ctx.t} ALTER COLUMN amount TYPE numeric(12,3)"), run,
            on(0, *ext(star), w.sync()),
            *q(1, f"ALTER TABLE {ctx.t} ALTER COLUMN amount TYPE numeric(10,2)"), run]


@scenario()
def ddl_then_a_pipelined_write(ctx):
    """A statement whose shape another client's DDL changed, first in a pipeline with a write behind it: PostgreSQL
    fails its Describe or Bind (0A000) and skips the rest up to Sync, so the write never runs (implicit
    transaction), and in a transaction block the block is failed (25P02 for what follows) and rolled back."""
    star = f"SELECT * FROM {ctx.t} WHERE id <= 2 ORDER BY id"
    write = f"INSERT INTO {ctx.t} (id, tenant) VALUES ($1, 'piped')"
    run_then_write = [w.bind([], "shape"), w.execute(), w.parse(write), w.bind(["901"]), w.execute(), w.sync()]
    count = f"SELECT count(*) FROM {ctx.t} WHERE tenant = 'piped'"
    return [on(0, w.parse(star, "shape"), w.describe("S", "shape"), w.sync()),
            on(0, w.bind([], "shape"), w.execute(), w.sync()),
            *q(1, f"ALTER TABLE {ctx.t} ADD COLUMN extra int DEFAULT 5"),
            on(0, w.describe("S", "shape"), *run_then_write[2:]), *q(0, count),
            on(0, *run_then_write), *q(0, count),
            *q(0, "BEGIN"), on(0, *run_then_write), *q(0, "SELECT 1", "ROLLBACK", count),
            on(0, *run_then_write[:2], *run_then_write[:2], w.sync()),
            *q(1, f"ALTER TABLE {ctx.t} DROP COLUMN extra"),
            on(0, *run_then_write), *q(0, count),
            on(0, *run_then_write[:2], *run_then_write[:2], w.sync()),
            on(0, w.parse(star, "again"), w.bind([], "again"), w.execute(), w.sync())]


@scenario()
def wide_description(ctx):
    """A named statement of 1,200 long-named columns (a RowDescription of ~100 KB, more than pgpilot streams
    by default), described and run on one connection, then run on another (prepared and described again
    there, unseen)."""
    sql = "SELECT " + ", ".join(f"{i} AS column_with_a_rather_long_name_to_widen_the_description_{i:04}"
                                for i in range(1200))
    return [on(0, w.parse(sql, "wide"), w.describe("S", "wide"), w.sync()),
            on(0, w.bind([], "wide"), w.execute(), w.sync()),
            *q(1, "BEGIN", "SELECT 1"),
            on(0, w.bind([], "wide"), w.execute(), w.sync()),
            *q(1, "COMMIT")]
