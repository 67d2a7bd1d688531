"""The scenario corpus of the differential tests (test_differential.py runs each one directly against
PostgreSQL and through pgpilot and compares every backend message).

A scenario is a function `ctx -> [Step]`; a Step sends one batch of frontend messages on one of the
scenario's client connections (opened at its first step, closed by `bye`). Several connections let a
scenario check what one client can observe of another (settings, roles, DDL, notifications), which
through a pooling proxy means: of a previous user of the same server connection. Everything compared
is deterministic: ORDER BY everywhere, no now()/random()/pg_backend_pid() in results, and every write
either rolled back, undone, or applied to the scratch table that `RESET_SQL` restores before each run.

ctx: .t (scratch table: id int PK, tenant text, note text, amount numeric(10,2), payload bytea; 20 rows
after RESET_SQL), .t_rls (tenant-filtered by row-level security on current_setting('app.tenant')),
.role (a NOLOGIN role app may SET ROLE to, granted SELECT (id, tenant) on .t), .roots (3 work_items
root ids of the workflow database).
"""
import importlib
import re
import struct
from dataclasses import dataclass, field

import wire as w
from conftest import SEARCH_SQL


@dataclass
class Step:
    conn: int
    msgs: list = None  # None: close the connection (Terminate)
    until: object = None  # see wire.Conn.exchange


@dataclass
class Scenario:
    name: str
    db: str
    build: object
    conn_params: dict = field(default_factory=dict)  # conn index -> extra startup parameters


SCENARIOS = {}
RESET_SQL = ("TRUNCATE {t}; INSERT INTO {t} (id, tenant, note, amount, payload) SELECT g,"
             " CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 'note ' || g, g * 1.25, decode(md5(g::text), 'hex')"
             " FROM generate_series(1, 20) g")
DESCRIBED = "RowDescription|NoData|ErrorResponse"  # the end of a Parse/Describe/Flush reply


def scenario(db="app", conn_params=None):
    def register(fn):
        SCENARIOS[fn.__name__] = Scenario(fn.__name__, db, fn, conn_params or {})
        return fn
    return register


def on(conn, *msgs, until=None):
    return Step(conn, list(msgs), until)


def bye(conn):
    return Step(conn, None)


def q(conn, *sqls):
    """One Step per simple Query."""
    return [on(conn, w.query(sql)) for sql in sqls]


def ext(sql, params=(), stmt="", types=(), formats=(), result_formats=(), max_rows=0, parse=True):
    """Parse (optional) + Bind + Describe portal + Execute, unnamed portal; no Sync."""
    msgs = [w.parse(sql, stmt, types)] if parse else []
    return msgs + [w.bind(params, stmt, "", formats, result_formats), w.describe("P"), w.execute("", max_rows)]


def int4(v):
    return struct.pack("!i", v)


# --- the MCP workload (../shared/workload/mcp_load.py, asyncpg: named statements, Parse/Describe/Flush) --


REGISTRY_SQL = "SELECT id, database_name FROM projects WHERE id::text = $1 OR name = $1 LIMIT 1"
HIERARCHY_SQL = """
WITH RECURSIVE descendants AS (
  SELECT id, parent_id, title, status, path, depth, version, 0 AS level FROM work_items WHERE id = $1
  UNION ALL
  SELECT w.id, w.parent_id, w.title, w.status, w.path, w.depth, w.version, d.level + 1
  FROM work_items w JOIN descendants d ON w.parent_id = d.id WHERE d.level < $2)
SELECT * FROM descendants WHERE id != $1 ORDER BY level, path"""
LIST_COUNT_SQL = ("SELECT count(*) FROM (SELECT work_items.* FROM work_items WHERE item_type = $1 "
                  "AND status = $2 AND deleted_at IS NULL) AS anon_1")
LIST_PAGE_SQL = ("SELECT * FROM work_items WHERE item_type = $1 AND status = $2 AND deleted_at IS NULL "
                 "ORDER BY created_at DESC, id LIMIT $3 OFFSET $4")
ENTITY_SQL = ("SELECT entity_id, name, data FROM entities WHERE entity_type = $1 AND data @> $2::jsonb "
              "AND tags @> $3::text[] AND deleted_at IS NULL ORDER BY name")
ROOTS_SQL = ("SELECT id, title FROM work_items WHERE parent_id IS NULL AND deleted_at IS NULL "
             "ORDER BY created_at, id LIMIT $1")
ITEM_CHILDREN_SQL = "SELECT * FROM work_items WHERE parent_id = $1"
VECTOR = "[" + ",".join(f"{(i * 37) % 101 / 101 - 0.5:.4f}" for i in range(768)) + "]"


def asyncpg_call(conn, n, sql, params):
    """asyncpg's first use of a statement: Parse + Describe S + Flush, then Bind + Execute + Sync."""
    name = f"__asyncpg_stmt_{n}__"
    return [on(conn, w.parse(sql, name), w.describe("S", name), w.flush(), until=DESCRIBED),
            on(conn, w.bind(params, name), w.execute(), w.sync())]


@scenario(db="codebase")
def mcp_codebase(ctx):
    """op_registry and op_search: registry lookups, then the vector search inside a transaction."""
    steps = asyncpg_call(0, 1, REGISTRY_SQL, ["default"])
    steps += [on(0, w.bind(["missing-project"], "__asyncpg_stmt_1__"), w.execute(), w.sync())]
    steps += asyncpg_call(0, 2, "SELECT 1 FROM pg_database WHERE datname = $1", ["codebase"])
    steps += q(0, "BEGIN;")
    steps += [on(0, w.bind(["default"], "__asyncpg_stmt_1__"), w.execute(), w.sync())]
    steps += asyncpg_call(0, 3, SEARCH_SQL, ["1", VECTOR, "1", "%.py", "10"])
    return steps + q(0, "COMMIT;")


@scenario(db="workflow")
def mcp_workflow(ctx):
    """op_hierarchy, op_list, op_entity, op_nplus1, op_write (rolled back: the shared database stays as
    seeded) and op_readback's upsert + read (idempotent: the same key and value every run)."""
    root = ctx.roots[0]
    steps = q(0, "BEGIN;") + asyncpg_call(0, 1, HIERARCHY_SQL, [root, "5"]) + q(0, "COMMIT;")
    steps += q(0, "BEGIN;") + asyncpg_call(0, 2, LIST_COUNT_SQL, ["task", "active"])
    steps += asyncpg_call(0, 3, LIST_PAGE_SQL, ["task", "active", "20", "20"]) + q(0, "COMMIT;")
    steps += asyncpg_call(0, 4, ENTITY_SQL, ["vendor", '{"status": "operational"}', "{tier-3}"])
    steps += asyncpg_call(0, 5, ROOTS_SQL, ["3"]) + asyncpg_call(0, 6, ITEM_CHILDREN_SQL, [ctx.roots[0]])
    steps += [on(0, w.bind([r], "__asyncpg_stmt_6__"), w.execute(), w.sync()) for r in ctx.roots[1:]]
    item = ctx.roots[1]
    steps += q(0, "BEGIN;") + asyncpg_call(0, 7, "SELECT version FROM work_items WHERE id = $1", [item])
    steps += [on(0, *ext("UPDATE work_items SET status = $1, version = version + 1 WHERE id = $2",
                         ["blocked", item]), w.sync())]
    steps += [on(0, w.bind([item], "__asyncpg_stmt_7__"), w.execute(), w.sync())]
    steps += q(0, "ROLLBACK;")
    steps += [on(0, w.bind([item], "__asyncpg_stmt_7__"), w.execute(), w.sync())]
    steps += [on(0, *ext("INSERT INTO load_markers (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE"
                         " SET v = EXCLUDED.v", ["pgpilot-diff", "42"]), w.sync())]
    return steps + asyncpg_call(0, 8, "SELECT v FROM load_markers WHERE k = $1", ["pgpilot-diff"])


# --- pgbench (database bench, scale 2): its TPC-B script in the three protocols, undone by a -delta run ---

PGBENCH = ["UPDATE pgbench_accounts SET abalance = abalance + {d} WHERE aid = {a}",
           "SELECT abalance FROM pgbench_accounts WHERE aid = {a}",
           "UPDATE pgbench_tellers SET tbalance = tbalance + {d} WHERE tid = {t}",
           "UPDATE pgbench_branches SET bbalance = bbalance + {d} WHERE bid = {b}",
           "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({t}, {b}, {a}, {d}, CURRENT_TIMESTAMP)"]


def pgbench_statement(template, **values):
    """pgbench's extended-protocol form of a script line: variables become $1..$n in order of appearance."""
    names = list(dict.fromkeys(re.findall(r"\{(\w)\}", template)))
    return template.format(**{n: f"${i + 1}" for i, n in enumerate(names)}), [str(values[n]) for n in names]


@scenario(db="bench")
def pgbench_tpcb(ctx):
    """-M simple, -M extended (unnamed) and -M prepared (P_0..P_4) transactions whose deltas sum to 0,
    plus pgbench -S's select-only read before and after."""
    sel = [on(0, *ext("SELECT abalance FROM pgbench_accounts WHERE aid = $1", ["117"]), w.sync())]
    steps = sel + q(0, "BEGIN;", *[s.format(d=7, a=117, t=3, b=1) for s in PGBENCH], "END;")
    steps += q(0, "BEGIN;")
    for template in PGBENCH:
        sql, params = pgbench_statement(template, d=-3, a=117, t=3, b=1)
        steps.append(on(0, *ext(sql, params), w.sync()))
    steps += q(0, "END;")
    prepared = [pgbench_statement(t, d=-4, a=117, t=3, b=1) for t in PGBENCH]
    steps += [on(0, *[w.parse(sql, f"P_{i}") for i, (sql, _) in enumerate(prepared)], w.sync())]
    batch = [w.query("BEGIN;")]
    for i, (_, params) in enumerate(prepared):
        batch += [w.bind(params, f"P_{i}"), w.execute(), w.sync()]
    return steps + [on(0, *batch, w.query("END;"))] + sel


# --- protocol basics -------------------------------------------------------------------------------------

@scenario()
def simple_multi_statement(ctx):
    """A read, a multi-statement BEGIN ... COMMIT Query writing the table, the same read again (must see
    the commit), and a multi-statement Query failing half-way (implicit transaction: nothing applied)."""
    read = f"SELECT count(*), sum(amount), max(note) FROM {ctx.t}"
    return q(0, read,
             f"BEGIN; INSERT INTO {ctx.t} VALUES (100, 'a', 'new', 1.5, NULL); UPDATE {ctx.t} SET note = 'upd'"
             f" WHERE id <= 3; SELECT id, note FROM {ctx.t} WHERE id <= 3 OR id = 100 ORDER BY id; COMMIT",
             read,
             f"INSERT INTO {ctx.t} VALUES (101, 'a', 'x', 1, NULL); SELECT 1/0; INSERT INTO {ctx.t} VALUES (102)",
             read, "SELECT 1; SELECT 'two' AS b, NULL AS c")


@scenario()
def extended_unnamed(ctx):
    """Unnamed statements and portals: typed and untyped parameters, NULLs, several per Sync, re-Bind of
    the unnamed statement within the same pipeline, and a statement Bound after a later Sync."""
    sql = f"SELECT id, note, amount FROM {ctx.t} WHERE id > $1 AND ($2::text IS NULL OR tenant = $2) ORDER BY id"
    return [on(0, *ext(sql, ["15", None]), w.sync()),
            on(0, *ext(sql, ["10", "a"], types=(23, 25)), w.bind(["18", "b"]), w.execute(), w.sync()),
            on(0, w.parse(f"SELECT note FROM {ctx.t} WHERE id = $1"), w.describe("S"), w.sync()),
            on(0, w.bind(["4"]), w.describe("P"), w.execute(), w.sync()),
            on(0, *ext("SELECT $1::int + $2::int AS s", ["1", "2"]), *ext("SELECT 'x'::text AS t"), w.sync())]


@scenario()
def named_statements(ctx):
    """Named statements: Describe S, several executions, a duplicate name (42P05), Close then use (26000),
    re-Parse of a closed name, and a statement used in a later transaction."""
    sql = f"SELECT id, tenant FROM {ctx.t} WHERE id = ANY($1::int[]) ORDER BY id"
    return [on(0, w.parse(sql, "s1", (1007,)), w.describe("S", "s1"), w.sync()),
            on(0, w.bind(["{1,2,3}"], "s1"), w.execute(), w.bind(["{20}"], "s1"), w.describe("P"), w.execute(),
               w.sync()),
            on(0, w.parse("SELECT 1", "s1"), w.sync()),
            on(0, w.close("S", "s1"), w.sync()),
            on(0, w.bind(["{1}"], "s1"), w.execute(), w.sync()),
            on(0, w.parse(sql, "s1"), w.describe("S", "s1"), w.sync()),
            *q(0, "BEGIN"), on(0, w.bind(["{5,6}"], "s1"), w.execute(), w.sync()), *q(0, "COMMIT"),
            on(0, w.close("S", "never_prepared"), w.close("P", "never_bound"), w.sync())]


@scenario()
def pipeline_error_before_sync(ctx):
    """An error mid-pipeline: everything after it up to Sync is skipped (no replies), the implicit
    transaction is rolled back (the INSERT before it is gone), and the next Sync segment runs normally."""
    return [on(0, *ext(f"INSERT INTO {ctx.t} (id, tenant) VALUES (200, 'a')"),
               *ext("SELECT * FROM no_such_table_pgpilot_diff"),
               *ext(f"INSERT INTO {ctx.t} (id, tenant) VALUES (201, 'a')"), w.parse("SELECT 2", "after_error"),
               w.sync(), *ext(f"SELECT count(*) FROM {ctx.t} WHERE id >= 200"), w.sync()),
            on(0, w.bind([], "after_error"), w.execute(), w.sync()),
            on(0, *ext("SELECT 1/0"), w.sync(), w.sync(), *ext("SELECT 3"), w.sync())]


@scenario()
def flush_without_sync(ctx):
    """Parse + Describe + Flush answered before any Sync (asyncpg's prepare), then Bind + Execute + Sync in a
    later batch; also an unnamed statement and an error reported on Flush."""
    sql = f"SELECT id, note FROM {ctx.t} WHERE id = $1"
    return [on(0, w.parse(sql, "fs"), w.describe("S", "fs"), w.flush(), until=DESCRIBED),
            on(0, w.bind(["7"], "fs"), w.execute(), w.sync()),
            on(0, w.parse(sql), w.describe("S"), w.flush(), until=DESCRIBED),
            on(0, w.bind(["8"]), w.execute(), w.flush(), until="CommandComplete|ErrorResponse"),
            on(0, w.sync()),
            on(0, w.parse("SELEC oops", "bad"), w.describe("S", "bad"), w.flush(), until="ErrorResponse"),
            on(0, w.bind(["9"], "fs"), w.execute(), w.sync()),
            on(0, w.bind(["9"], "fs"), w.execute(), w.sync())]


@scenario()
def unnamed_statement_across_syncs(ctx):
    """The unnamed statement lives until the next Parse or simple Query on this session, across Syncs:
    Parse + Sync, then Bind + Execute + Sync; also right after a SET (settings change) and a transaction."""
    sql = f"SELECT note FROM {ctx.t} WHERE id = $1"
    return [on(0, w.parse(sql), w.sync()), on(0, w.bind(["3"]), w.execute(), w.sync()),
            on(0, w.bind(["4"]), w.execute(), w.sync()),
            *q(0, "SET application_name = 'diff-unnamed'"),
            on(0, w.parse(sql), w.sync()), on(0, w.bind(["5"]), w.execute(), w.sync()),
            on(0, w.query("SET statement_timeout = '5s'"), w.parse(sql), w.sync()),
            on(0, w.bind(["6"]), w.execute(), w.sync())]


@scenario()
def copy_simple(ctx):
    """COPY FROM STDIN (data, then CopyDone; and a CopyFail), COPY TO STDOUT text, csv and binary."""
    return [on(0, w.query(f"COPY {ctx.t} (id, tenant, note) FROM STDIN"), until="CopyInResponse|ReadyForQuery"),
            on(0, w.copy_data("300\ta\tcopied one\n301\tb\t\\N\n"), w.copy_data("302\ta\tthree\n"), w.copy_done(),
               until=1),
            on(0, w.query(f"COPY {ctx.t} (id, tenant) FROM STDIN"), until="CopyInResponse|ReadyForQuery"),
            on(0, w.copy_data("303\ta\n"), w.copy_fail("client gave up"), until=1),
            on(0, w.query(f"COPY {ctx.t} (id, tenant) FROM STDIN"), until="CopyInResponse|ReadyForQuery"),
            on(0, w.copy_data("1\ta\n"), w.copy_done(), until=1),
            *q(0, f"COPY (SELECT id, tenant, note FROM {ctx.t} WHERE id > 290 ORDER BY id) TO STDOUT",
               f"COPY (SELECT * FROM {ctx.t} ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)",
               f"COPY (SELECT * FROM {ctx.t} ORDER BY id LIMIT 3) TO STDOUT WITH (FORMAT binary)")]


@scenario()
def copy_extended(ctx):
    """COPY through the extended protocol: the Sync sent with the Execute is ignored during COPY IN, so a
    second Sync follows CopyDone; COPY TO STDOUT as a Bind/Execute; an error during COPY."""
    return [on(0, *ext(f"COPY {ctx.t} (id, tenant, note) FROM STDIN"), w.sync(),
               until="CopyInResponse|ErrorResponse"),
            on(0, w.copy_data("400\tb\text\n401\ta\text2\n"), w.copy_done(), w.sync()),
            on(0, *ext(f"COPY {ctx.t} (id, tenant) FROM STDIN"), w.sync(), until="CopyInResponse|ErrorResponse"),
            on(0, w.copy_data("402\tb\n402\tb\n"), w.copy_done(), w.sync()),
            on(0, *ext(f"COPY (SELECT id, note FROM {ctx.t} WHERE id >= 400 ORDER BY id) TO STDOUT"), w.sync())]


@scenario()
def notices(ctx):
    """NOTICE / WARNING / INFO from DO blocks and a function, in simple and extended protocol; a notice
    suppressed by client_min_messages; an EXCEPTION (P0001 with hint and detail)."""
    do = "DO $$BEGIN RAISE NOTICE 'x'; RAISE WARNING 'careful %', 42; RAISE INFO 'info'; END$$"
    return [*q(0, do, "DO $$BEGIN RAISE NOTICE 'in tx'; END$$; SELECT 1"),
            on(0, *ext(do), w.sync()),
            *q(0, f"DROP TABLE IF EXISTS {ctx.t}_absent", "SET client_min_messages = warning", do,
               "RESET client_min_messages",
               "DO $$BEGIN RAISE EXCEPTION 'boom %', 1 USING DETAIL = 'd', HINT = 'h', ERRCODE = 'P0001'; END$$")]


@scenario()
def large_values(ctx):
    """A 2 MB text row (simple and extended, text and binary), a 2 MB bytea parameter written and read
    back by length and md5, and a 2 MB CopyData."""
    big = "y" * (2 * 1024 * 1024)
    copy_row = "503\ta\t" + "z" * (2 * 1024 * 1024) + "\n"
    return [*q(0, "SELECT repeat('x', 2 * 1024 * 1024) AS big, 1 AS after"),
            on(0, *ext("SELECT repeat($1, $2::int) AS big", ["ab", str(1024 * 1024)], result_formats=(1,)),
               w.sync()),
            on(0, *ext(f"INSERT INTO {ctx.t} (id, tenant, note) VALUES (500, 'a', $1)", [big]), w.sync()),
            on(0, *ext(f"UPDATE {ctx.t} SET payload = $1 WHERE id = 500", [big.encode()], formats=(1,)), w.sync()),
            on(0, w.query(f"COPY {ctx.t} (id, tenant, note) FROM STDIN"), until="CopyInResponse|ReadyForQuery"),
            on(0, w.copy_data(copy_row), w.copy_done(), until=1),
            *q(0, f"SELECT id, length(note), md5(note), length(payload) FROM {ctx.t} WHERE id >= 500 ORDER BY id",
               f"SELECT note FROM {ctx.t} WHERE id >= 500 ORDER BY id")]


@scenario()
def binary_formats(ctx):
    """Binary parameters (int4, int8, bytea, text as binary) and binary / mixed result formats."""
    sql = f"SELECT id, note, amount, payload, id::int8 * $2 AS big FROM {ctx.t} WHERE id = $1"
    return [on(0, *ext(sql, [int4(3), struct.pack("!q", 10 ** 12)], types=(23, 20), formats=(1,),
                       result_formats=(1,)), w.sync()),
            on(0, *ext(sql, [int4(4), "7"], types=(23, 20), formats=(1, 0), result_formats=(0, 1, 1, 0, 1)),
               w.sync()),
            on(0, *ext("SELECT $1::bytea AS b, $2::text AS t, '2024-01-02 03:04:05+00'::timestamptz AS ts,"
                       " '{1,2}'::int[] AS arr, 1.5::float8 AS f, true AS yes",
                       [b"\x00\xff\x01", "tx"], types=(17, 25), formats=(1, 1), result_formats=(1,)), w.sync()),
            on(0, *ext(sql, [b"\x00\x01", "1"], types=(23, 20), formats=(1,)), w.sync()),
            on(0, *ext(sql, ["1", "1"], result_formats=(1, 0)), w.sync())]


@scenario()
def portal_suspended(ctx):
    """Row-limited Execute: PortalSuspended and continuation in one pipeline, across a Flush, and for a
    named portal across Syncs inside a transaction."""
    sql = f"SELECT id, note FROM {ctx.t} ORDER BY id"
    return [on(0, *ext(sql, max_rows=7), w.execute("", 7), w.execute("", 7), w.execute("", 7), w.sync()),
            on(0, *ext(sql, max_rows=5), w.flush(), until="PortalSuspended|CommandComplete|ErrorResponse"),
            on(0, w.execute("", 0), w.sync()),
            *q(0, "BEGIN"),
            on(0, w.parse(sql, "ps"), w.bind([], "ps", "cur"), w.execute("cur", 4), w.sync()),
            on(0, w.execute("cur", 30), w.execute("cur", 1), w.close("P", "cur"), w.sync()),
            on(0, w.execute("cur", 1), w.sync()), *q(0, "ROLLBACK"),
            on(0, *ext(sql, max_rows=20), w.execute("", 1), w.sync())]


@scenario()
def row_limited_reads(ctx):
    """asyncpg's fetchrow/fetchval: Bind + Execute with a row limit of 1 + Sync (the server answers
    PortalSuspended). A read that repeats is cached whole by pgpilot and replayed with the client's limit:
    one row, several rows, no row, a limit above the row count, and a portal continued (Execute again, then
    unlimited) after the first limited Execute, in every combination of cached and not."""
    one = f"SELECT id, tenant, note FROM {ctx.t} WHERE id = $1"
    many = f"SELECT id, amount FROM {ctx.t} WHERE tenant = $1 ORDER BY id"
    steps = []
    for _ in range(2):  # the second round may be answered from what the first stored
        steps += [on(0, w.bind([int4(3)], "lookup", "", (1,)), w.execute("", 1), w.sync()),
                  on(0, w.bind([int4(999)], "lookup", "", (1,)), w.execute("", 1), w.sync()),
                  on(0, w.bind(["a"], "page"), w.execute("", 1), w.sync()),
                  on(0, w.bind(["b"], "page"), w.execute("", 50), w.sync()),
                  on(0, w.bind(["b"], "page"), w.execute("", 10), w.sync())]
    steps += [on(0, w.bind(["a"], "page"), w.execute("", 1), w.execute("", 2), w.execute("", 0), w.sync()),
              on(0, w.bind(["b"], "page"), w.execute("", 3), w.flush(),
                 until="PortalSuspended|CommandComplete|ErrorResponse"),
              on(0, w.execute("", 0), w.sync()),
              on(0, w.bind([int4(3)], "lookup", "", (1,)), w.describe("P"), w.execute("", 0), w.sync())]
    prepare = on(0, w.parse(one, "lookup", (23,)), w.describe("S", "lookup"), w.parse(many, "page"),
                 w.describe("S", "page"), w.sync())
    return [prepare, *steps, bye(0)]


@scenario()
def cursors(ctx):
    """SQL cursors in a transaction: DECLARE, FETCH, MOVE, FETCH BACKWARD (SCROLL), CLOSE, COMMIT, and a
    FETCH after COMMIT (34000)."""
    return q(0, "BEGIN", f"DECLARE c SCROLL CURSOR FOR SELECT id, note FROM {ctx.t} ORDER BY id", "FETCH 3 FROM c",
             "MOVE 5 IN c", "FETCH BACKWARD 2 FROM c", "FETCH ALL FROM c", "CLOSE c",
             f"DECLARE d CURSOR FOR SELECT id FROM {ctx.t} ORDER BY id DESC", "FETCH 2 FROM d", "COMMIT",
             "FETCH 1 FROM d")


@scenario()
def deallocate_discard(ctx):
    """DEALLOCATE / DEALLOCATE ALL / DISCARD ALL against protocol and SQL prepared statements, and uses of
    the dropped names."""
    sql = f"SELECT note FROM {ctx.t} WHERE id = $1"
    return [on(0, w.parse(sql, "d1"), w.parse(sql, "d2"), w.sync()),
            *q(0, "DEALLOCATE d1"), on(0, w.bind(["1"], "d1"), w.execute(), w.sync()),
            on(0, w.bind(["2"], "d2"), w.execute(), w.sync()),
            *q(0, "DEALLOCATE d1", f"PREPARE sq(int) AS {sql}", "EXECUTE sq(3)",
               "DEALLOCATE sq", "EXECUTE sq(3)", "SET application_name = 'before-discard'", "DISCARD ALL",
               "SHOW application_name"),
            on(0, w.bind(["2"], "d2"), w.execute(), w.sync()),
            on(0, w.parse(sql, "d3"), w.sync()), *q(0, "DEALLOCATE ALL"),
            on(0, w.bind(["2"], "d3"), w.execute(), w.sync()),
            on(0, w.parse(sql, "d3"), w.bind(["3"], "d3"), w.execute(), w.sync())]


@scenario()
def set_reset_show(ctx):
    """SET/RESET/SHOW: search_path, TimeZone (ParameterStatus), SET LOCAL, SET rolled back, RESET ALL,
    set_config(), and SHOW ALL (every setting of the session must be what a direct session has)."""
    return q(0, "SHOW search_path", "SET search_path TO pg_catalog, public", "SHOW search_path",
             "SET TIME ZONE 'America/New_York'", "SELECT '2024-01-01 12:00+00'::timestamptz::text",
             "BEGIN", "SET LOCAL TimeZone = 'Asia/Tokyo'", "SHOW TimeZone", "COMMIT", "SHOW TimeZone",
             "BEGIN", "SET DateStyle = 'German'", "ROLLBACK", "SHOW DateStyle",
             "SELECT set_config('work_mem', '7MB', false)", "SHOW work_mem", "SET intervalstyle = iso_8601",
             "SELECT '1 day 2 hours'::interval::text", "SHOW ALL", "RESET TimeZone", "RESET ALL", "SHOW ALL",
             "SET no_such_setting = 1", "SHOW no_such.setting")


@scenario()
def tx_error_rollback(ctx):
    """Errors inside a transaction: failed state (25P02) for simple and extended statements, ROLLBACK TO
    SAVEPOINT, COMMIT of a failed transaction (reported as ROLLBACK), and the rows afterwards."""
    return [*q(0, "BEGIN", f"INSERT INTO {ctx.t} (id, tenant) VALUES (600, 'a')", "SELECT 1/0", "SELECT 1"),
            on(0, *ext("SELECT 2"), w.sync()),
            *q(0, "ROLLBACK", "BEGIN", f"INSERT INTO {ctx.t} (id, tenant) VALUES (601, 'a')", "SAVEPOINT sp",
               f"INSERT INTO {ctx.t} (id, tenant) VALUES (601, 'a')", "ROLLBACK TO SAVEPOINT sp",
               f"INSERT INTO {ctx.t} (id, tenant) VALUES (602, 'b')", "COMMIT",
               "BEGIN", f"UPDATE {ctx.t} SET note = 'lost' WHERE id = 601", "SELECT * FROM nope", "COMMIT",
               f"SELECT id, tenant, note FROM {ctx.t} WHERE id >= 600 ORDER BY id", "COMMIT", "ROLLBACK")]


@scenario()
def empty_queries(ctx):
    """Empty and comment-only simple Queries, an empty extended statement, and ';' alone."""
    return [*q(0, "", "   ", "-- only a comment", ";", "SELECT 1;;"),
            on(0, w.parse(""), w.bind([]), w.describe("P"), w.execute(), w.sync())]


# --- state that must not cross from one client to another (through a pool: one server connection) --------

STARTUP_PARAMS = {"options": "-c statement_timeout=4321 -c search_path=public,pg_catalog", "TimeZone": "UTC",
                  "DateStyle": "ISO, DMY", "application_name": "diff-params"}


@scenario(conn_params={0: STARTUP_PARAMS, 3: STARTUP_PARAMS})
def startup_parameters(ctx):
    """Startup parameters (options -c, TimeZone, DateStyle, application_name) apply to the client that sent
    them, in simple, extended and transaction use, and not to a plain client before or after it. They are
    the session's defaults: RESET ALL and DISCARD ALL return to them (ParameterStatus included), and a RESET
    rolled back with its transaction returns to nothing."""
    probe = ("SELECT current_setting('statement_timeout'), current_setting('search_path'),"
             " current_setting('TimeZone'), current_setting('DateStyle'), '04/03/2024'::date::text,"
             " current_setting('application_name')")
    return [*q(1, probe), *q(0, probe), on(0, *ext(probe), w.sync()), *q(1, probe),
            *q(0, "BEGIN", probe, "COMMIT"), bye(0), *q(2, probe), on(2, *ext(probe), w.sync()),
            *q(3, "SET TimeZone = 'Europe/Paris'", "SET application_name = 'changed'", "RESET ALL", probe,
               "SET statement_timeout = 99", "DISCARD ALL", probe,
               "SET application_name = 'kept'", "BEGIN", "RESET ALL", "ROLLBACK", probe,
               "BEGIN; RESET application_name; COMMIT", probe)]


@scenario()
def tenant_setting(ctx):
    """SET app.tenant is per client: a tenant-filtered query (explicit current_setting and row-level security
    on .t_rls, whose text never mentions the setting) returns each client its own rows, a client that never
    set it sees none, SET LOCAL ends with its transaction. nullif(.., '') because PostgreSQL cannot undefine a
    custom placeholder once a backend has seen it (see CORPUS_RULES in test_differential.py)."""
    setting = "SELECT nullif(current_setting('app.tenant', true), '') AS tenant"
    by_tenant = f"SELECT id FROM {ctx.t} WHERE tenant = current_setting('app.tenant') ORDER BY id"
    rls = f"SELECT id, tenant FROM {ctx.t_rls} ORDER BY id"
    return [*q(0, "SET app.tenant = 'a'", "SHOW app.tenant", by_tenant, rls),
            *q(1, setting, rls), on(1, *ext(rls), w.sync()),
            *q(1, "SET app.tenant = 'b'", setting, by_tenant, rls), on(1, *ext(rls), w.sync()),
            *q(0, rls, setting), on(0, *ext(rls), w.sync()),
            bye(0), bye(1),
            *q(2, setting, rls), on(2, *ext(rls), w.sync()),
            *q(2, "BEGIN", "SET LOCAL app.tenant = 'b'", rls, "COMMIT", rls, setting)]


@scenario()
def tenant_role(ctx):
    """SET ROLE is per client: the role may read only (id, tenant) of .t, so its `note` query must fail with
    42501 even right after another client read it (cache, pooled server); RESET ROLE restores app; a client
    that leaves without RESET ROLE passes nothing on; SET LOCAL ROLE ends with the transaction."""
    cols = f"SELECT id, tenant FROM {ctx.t} ORDER BY id LIMIT 3"
    secret = f"SELECT id, note FROM {ctx.t} ORDER BY id LIMIT 3"
    who = "SELECT current_user, session_user, current_setting('role')"
    return [*q(1, secret, who),
            *q(0, f"SET ROLE {ctx.role}", who, cols, secret), on(0, *ext(secret), w.sync()),
            *q(1, who, secret), on(1, *ext(secret), w.sync()),
            *q(0, "RESET ROLE", who, secret, f"SET ROLE {ctx.role}"), bye(0),
            *q(2, who, secret), bye(1), bye(2),
            *q(3, who, "BEGIN", f"SET LOCAL ROLE {ctx.role}", secret, "ROLLBACK", who, secret)]


@scenario()
def listen_notify(ctx):
    """LISTEN/NOTIFY between two clients: notifications reach the listener (the sender pid is normalized),
    none after UNLISTEN."""
    ch = f"{ctx.t}_ch"
    return [*q(0, f"LISTEN {ch}"), *q(1, f"NOTIFY {ch}, 'hello'", f"SELECT pg_notify('{ch}', 'second')"),
            *q(0, "SELECT 1", f"UNLISTEN {ch}"), *q(1, f"NOTIFY {ch}, 'unheard'"), *q(0, "SELECT 2")]


# Statements whose shape DDL changes: their own module, which registers into SCENARIOS when imported.
importlib.import_module("diff_scenarios_ddl")
