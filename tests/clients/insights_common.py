"""Constants and helpers of the insights driver tests (test_insights*.py): the MCP schema's statements, the
proxy's /n_plus_one and /queries answers, connections labelled with an application_name."""
import contextlib
import json
import re

import asyncpg
import psycopg

LOW_MIN_TOTAL = "[insights]\nn_plus_one_min_total_ms = 0\n"
RUNS = 3

ROOTS = ("SELECT id, title FROM work_items WHERE parent_id IS NULL AND deleted_at IS NULL "
         "ORDER BY created_at, id LIMIT $1")
CHILDREN = "SELECT * FROM work_items WHERE parent_id = $1"
FILES = "SELECT id, relative_path FROM code_files WHERE is_deleted = false ORDER BY relative_path LIMIT $1"
CHUNKS = "SELECT id, content, start_line, end_line FROM code_chunks WHERE code_file_id = $1 ORDER BY start_line"
ENTITY_IDS = "SELECT entity_id FROM entities WHERE entity_type = $1 AND deleted_at IS NULL ORDER BY name LIMIT $2"
ENTITY = "SELECT name, data, tags FROM entities WHERE entity_id = $1"
LEAVES = ("SELECT DISTINCT ON (parent_id) id, parent_id FROM work_items WHERE depth = 2 "
          "ORDER BY parent_id, id LIMIT $1")
PARENT_TITLE = "SELECT title FROM work_items WHERE id = $1"
COUNT = "SELECT count(*) FROM work_items WHERE depth = 2"
PAGE = "SELECT * FROM work_items WHERE depth = 2 ORDER BY id LIMIT $1 OFFSET $2"
PAGE_FETCH = "SELECT id, title FROM work_items WHERE depth = 1 ORDER BY id OFFSET $1 ROWS FETCH NEXT 10 ROWS ONLY"
NO_ROOTS = "SELECT id FROM work_items WHERE parent_id IS NULL AND deleted_at IS NOT NULL"
# As /queries and the findings show them: constants become parameters numbered after the statement's own.
FILES_NORMALIZED = FILES.replace("false", "$2")
LEAVES_NORMALIZED = LEAVES.replace("depth = 2", "depth = $2")

# A normalized text must not keep a literal: no quoted string, no number outside $n, no uuid, no vector.
LITERAL = re.compile(r"'|(?<![\w$])\d+(?:\.\d+)?(?!\w)|[0-9a-f]{8}-[0-9a-f]{4}-|\[-?\d")


def pg3(sql):
    """The same statement with psycopg's placeholders."""
    return re.sub(r"\$\d+", "%s", sql)


def literals_in(text):
    return LITERAL.findall(text)


def get_json(proxy, path):
    status, body = proxy.http_get(path)
    assert status == 200, f"GET {path} answered {status}: {body[:500]}"
    return json.loads(body)


def findings(proxy):
    found = get_json(proxy, "/insights/n-plus-one")
    assert isinstance(found, list), found
    return found


def queries(proxy):
    rows = get_json(proxy, "/queries?sort=total_ms&limit=1000")
    assert isinstance(rows, list), rows
    return rows


@contextlib.asynccontextmanager
async def apg(proxy, db, label):
    """asyncpg with its default statement cache (named prepared statements), labelled by application_name."""
    conn = await asyncpg.connect(proxy.dsn(db), timeout=10, command_timeout=30,
                                 server_settings={"application_name": label})
    try:
        yield conn
    finally:
        await conn.close(timeout=5)


@contextlib.asynccontextmanager
async def ppg(proxy, db, label, **kw):
    """psycopg 3 (async), labelled by application_name; defaults otherwise unless `kw` says so."""
    conn = await psycopg.AsyncConnection.connect(proxy.dsn(db), application_name=label, connect_timeout=10, **kw)
    try:
        yield conn
    finally:
        await conn.close()
