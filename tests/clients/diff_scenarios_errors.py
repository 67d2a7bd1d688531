"""Differential scenarios (diff_scenarios.py) of errors pgpilot raises itself in the server's place (a duplicate
statement name, 42P05): they fail the transaction as the server's own would."""
import wire as w
from diff_scenarios import on, q, scenario


@scenario()
def a_local_error_fails_the_transaction(ctx):
    """A duplicate statement name (42P05, pgpilot's own answer in transaction mode) after a write: PostgreSQL
    skips the rest up to Sync and rolls the implicit transaction back (the write is gone); in a block the
    block is failed (25P02 for what follows, COMMIT rolls back), also when the error is the block's first
    statement."""
    count = f"SELECT count(*) FROM {ctx.t} WHERE tenant = 'local'"
    write = [w.parse(f"INSERT INTO {ctx.t} (id, tenant) VALUES ($1, 'local')"), w.bind(["801"]), w.execute()]
    again = w.parse("SELECT 2", "dup")
    return [on(0, w.parse("SELECT 1", "dup"), w.sync()),
            on(0, *write, again, w.bind([], "dup"), w.execute(), w.sync()), *q(0, count),
            *q(0, "BEGIN"), on(0, *write, w.sync()), on(0, again, w.sync()), *q(0, "SELECT 1", "COMMIT", count),
            *q(0, "BEGIN"), on(0, again, w.sync()), *q(0, "SELECT 1", "ROLLBACK"),
            on(0, *write, again, w.sync()), *q(0, "BEGIN", count, "ROLLBACK"),
            on(0, w.bind([], "dup"), w.execute(), w.sync())]
