"""Query insights (issue 4) through pgpilot with real drivers: N+1 detection, /queries statistics and fingerprints.

1. A labelled N+1 workload: every scenario runs once on its own connection with its own application_name, so each
   finding maps back to the scenario that caused it. True N+1 loops (asyncpg with its default statement cache and
   psycopg 3, several tables and databases, inside and outside transactions, simple and extended protocol) and
   look-alikes that the rule must not flag (executemany batches, identical repeats, pagination, short loops,
   pipelines, loops without a row-returning source, loops slower than the window). Precision and recall are
   computed over the scenarios. The loops are far below the default 50 ms of server time on an idle localhost
   server (50 child lookups take ~2 ms), so this proxy runs with n_plus_one_min_total_ms = 0; the other rules
   keep their defaults.
   (2-4: /queries statistics, fingerprints and partially fetched portals, in test_insights_queries.py.)
"""
import asyncio
import json
import re
import time

import psycopg

from conftest import metric, run_async
from insights_common import (CHILDREN, CHUNKS, COUNT, ENTITY, ENTITY_IDS, FILES, FILES_NORMALIZED, LEAVES, LEAVES_NORMALIZED,
                             LOW_MIN_TOTAL, NO_ROOTS, PAGE, PAGE_FETCH, PARENT_TITLE, ROOTS, RUNS, apg, findings,
                             literals_in, pg3, ppg, queries)

# --- 1. labelled N+1 workload -------------------------------------------------------------------------------------
# Each scenario: async fn(ctx, label, run) -> number of loop iterations (for true N+1s: the expected finding count).

async def tp_children(ctx, label, run):
    """The seed's get_work_items_with_children: root items, then one query per root."""
    async with apg(ctx.proxy, "workflow", label) as c:
        roots = await c.fetch(ROOTS, 8 + 4 * run)
        for r in roots:
            await c.fetch(CHILDREN, r["id"])
    return len(roots)


async def tp_children_in_transaction(ctx, label, run):
    async with apg(ctx.proxy, "workflow", label) as c:
        async with c.transaction():
            roots = await c.fetch(ROOTS, 10 + 5 * run)
            for r in roots:
                await c.fetch(CHILDREN, r["id"])
    return len(roots)


async def tp_children_transaction_each(ctx, label, run):
    """Only BEGIN/COMMIT between the lookups: still one loop."""
    async with apg(ctx.proxy, "workflow", label) as c:
        roots = await c.fetch(ROOTS, 6 + 2 * run)
        for r in roots:
            async with c.transaction():
                await c.fetch(CHILDREN, r["id"])
    return len(roots)


async def tp_children_twice(ctx, label, run):
    """The same loop twice on one connection: one finding, two occurrences."""
    async with apg(ctx.proxy, "workflow", label) as c:
        for _ in range(2):
            roots = await c.fetch(ROOTS, 7 + run)
            for r in roots:
                await c.fetch(CHILDREN, r["id"])
    return len(roots)


async def tp_file_chunks(ctx, label, run):
    """codebase: list the files, then the chunks of each file."""
    async with apg(ctx.proxy, "codebase", label) as c:
        files = await c.fetch(FILES, 6 + 3 * run)
        for f in files:
            await c.fetch(CHUNKS, f["id"])
    return len(files)


async def tp_entity_lookups(ctx, label, run):
    """Entity ids, then fetchrow per id."""
    async with apg(ctx.proxy, "workflow", label) as c:
        ids = await c.fetch(ENTITY_IDS, ["vendor", "service", "deployment"][run], 7 + 2 * run)
        for r in ids:
            await c.fetchrow(ENTITY, r["entity_id"])
    return len(ids)


async def tp_parent_titles(ctx, label, run):
    """Leaf items, then fetchval of each one's parent title."""
    async with apg(ctx.proxy, "workflow", label) as c:
        leaves = await c.fetch(LEAVES, 9 + run)
        for r in leaves:
            await c.fetchval(PARENT_TITLE, r["parent_id"])
    return len(leaves)


async def tp_psycopg_chunks(ctx, label, run):
    """psycopg defaults: an implicit transaction, the lookup prepared from its 5th execution on."""
    async with ppg(ctx.proxy, "codebase", label) as c:
        files = await (await c.execute(pg3(FILES), (7 + 2 * run,))).fetchall()
        for (file_id, _) in files:
            await (await c.execute(pg3(CHUNKS), (file_id,))).fetchall()
        await c.commit()
    return len(files)


async def tp_psycopg_client_cursor(ctx, label, run):
    """psycopg ClientCursor: simple Query messages with the literals inlined."""
    async with ppg(ctx.proxy, "workflow", label, autocommit=True, cursor_factory=psycopg.AsyncClientCursor) as c:
        roots = await (await c.execute(pg3(ROOTS), (9 + 3 * run,))).fetchall()
        for (root_id, _) in roots:
            await (await c.execute(pg3(CHILDREN), (root_id,))).fetchall()
    return len(roots)


async def neg_executemany_insert(ctx, label, run):
    async with apg(ctx.proxy, "app", label) as c:
        rows = await c.fetch("SELECT g, 'note ' || g AS note FROM generate_series(1, $1) g", 12 + run)
        await c.executemany(f"INSERT INTO {ctx.table} (task, seq, note) VALUES ($1, $2, $3)",
                            [(run, r["g"], r["note"]) for r in rows])
    return len(rows)


async def neg_executemany_select(ctx, label, run):
    """One batch (Bind/Execute pipelined before one Sync), not a loop that waits for each result."""
    async with apg(ctx.proxy, "workflow", label) as c:
        roots = await c.fetch(ROOTS, 15 + run)
        await c.executemany(CHILDREN, [(r["id"],) for r in roots])
    return len(roots)


async def neg_psycopg_pipeline(ctx, label, run):
    async with ppg(ctx.proxy, "workflow", label, autocommit=True) as c:
        roots = await (await c.execute(pg3(ROOTS), (12 + run,))).fetchall()
        async with c.pipeline():
            cursors = [await c.execute(pg3(CHILDREN), (root_id,)) for (root_id, _) in roots]
        for cur in cursors:
            await cur.fetchall()
    return len(roots)


async def neg_identical_parameters(ctx, label, run):
    async with apg(ctx.proxy, "workflow", label) as c:
        roots = await c.fetch(ROOTS, 20)
        for _ in range(10):
            await c.fetch(CHILDREN, roots[run]["id"])
    return 10


async def neg_pagination_by_count(ctx, label, run):
    """A count, then LIMIT/OFFSET pages until the count is reached (or 8 pages)."""
    async with apg(ctx.proxy, "workflow", label) as c:
        total = await c.fetchval(COUNT)
        pages = 0
        for offset in range(0, min(total, 8 * 25), 25):
            await c.fetch(PAGE, 25, offset)
            pages += 1
    return pages


async def neg_pagination_after_list(ctx, label, run):
    """LIMIT/OFFSET pages right after a read of 50 rows: only the pagination rule keeps it out."""
    async with apg(ctx.proxy, "workflow", label) as c:
        await c.fetch(ROOTS, 50)
        for page in range(8):
            await c.fetch(PAGE, 20 + run, page * (20 + run))
    return 8


async def neg_offset_fetch_first(ctx, label, run):
    """OFFSET ... FETCH NEXT ... ROWS ONLY pages after a read of 50 rows, through psycopg."""
    async with ppg(ctx.proxy, "workflow", label, autocommit=True) as c:
        await (await c.execute(pg3(ROOTS), (50,))).fetchall()
        for page in range(8):
            await (await c.execute(pg3(PAGE_FETCH), (page * 10 + run,))).fetchall()
    return 8


async def neg_short_loop(ctx, label, run):
    async with apg(ctx.proxy, "workflow", label) as c:
        roots = await c.fetch(ROOTS, 2 + run)  # 2, 3 and 4 rows
        for r in roots:
            await c.fetch(CHILDREN, r["id"])
    return len(roots)


async def neg_no_source(ctx, label, run):
    """Ids known up front: nothing read on this connection before the lookups."""
    async with apg(ctx.proxy, "workflow", label) as c:
        for root_id in ctx.root_ids[run * 10:run * 10 + 10]:
            await c.fetch(CHILDREN, root_id)
    return 10


async def neg_empty_source(ctx, label, run):
    """The preceding read returned no rows: the lookups do not iterate over it."""
    async with apg(ctx.proxy, "workflow", label) as c:
        assert await c.fetch(NO_ROOTS) == []
        for root_id in ctx.root_ids[run * 10:run * 10 + 10]:
            await c.fetch(CHILDREN, root_id)
    return 10


async def neg_more_than_source_rows(ctx, label, run):
    """A 2-row read followed by 10 lookups of ids it did not return."""
    async with apg(ctx.proxy, "workflow", label) as c:
        await c.fetch(ROOTS, 2)
        for root_id in ctx.root_ids[20 + run * 10:30 + run * 10]:
            await c.fetch(CHILDREN, root_id)
    return 10


async def neg_slower_than_window(ctx, label, run):
    """0.6 s of client work between lookups (window 500 ms)."""
    async with apg(ctx.proxy, "workflow", label) as c:
        roots = await c.fetch(ROOTS, 6)
        for r in roots:
            await asyncio.sleep(0.6)
            await c.fetch(CHILDREN, r["id"])
    return len(roots)


# (scenario, expected source query, expected repeated query, occurrences per run)
TRUE_N_PLUS_ONE = [
    (tp_children, ROOTS, CHILDREN, 1),
    (tp_children_in_transaction, ROOTS, CHILDREN, 1),
    (tp_children_transaction_each, ROOTS, CHILDREN, 1),
    (tp_children_twice, ROOTS, CHILDREN, 2),
    (tp_file_chunks, FILES_NORMALIZED, CHUNKS, 1),
    (tp_entity_lookups, ENTITY_IDS, ENTITY, 1),
    (tp_parent_titles, LEAVES_NORMALIZED, PARENT_TITLE, 1),
    (tp_psycopg_chunks, FILES_NORMALIZED, CHUNKS, 1),
    # ClientCursor renders a uuid as '...'::uuid: the normalized text keeps the cast
    (tp_psycopg_client_cursor, ROOTS, CHILDREN + "::uuid", 1),
]
LOOK_ALIKES = [neg_executemany_insert, neg_executemany_select, neg_psycopg_pipeline, neg_identical_parameters,
               neg_pagination_by_count, neg_pagination_after_list, neg_offset_fetch_first, neg_short_loop,
               neg_no_source, neg_empty_source, neg_more_than_source_rows, neg_slower_than_window]


def label_of(fn, run):
    return f"{fn.__name__.replace('_', '-')}-{run}"


class Ctx:
    def __init__(self, proxy, table, root_ids):
        self.proxy, self.table, self.root_ids = proxy, table, root_ids


def test_n_plus_one_precision_and_recall(start_proxy, pg_admin, table):
    proxy = start_proxy(extra_toml=LOW_MIN_TOTAL)
    with pg_admin.connect("workflow") as admin:  # ids for the loops that have no source (read bypassing pgpilot)
        root_ids = [r[0] for r in admin.execute(
            "SELECT id FROM work_items WHERE parent_id IS NULL AND deleted_at IS NULL ORDER BY id").fetchall()]
    assert len(root_ids) >= 50, "the workflow seed has 50 root items"
    ctx = Ctx(proxy, table, root_ids)
    truth = {}       # label -> True (N+1) / False (look-alike)
    iterations = {}  # label -> loop length
    expected = {}    # label -> (source, repeated, occurrences)

    async def main():
        slow = [s for s in LOOK_ALIKES if s is neg_slower_than_window]
        # the slow look-alike's runs (3.6 s each) go concurrently with everything else, on their own connections
        background = asyncio.gather(*(s(ctx, label_of(s, run), run) for s in slow for run in range(RUNS)))
        for run in range(RUNS):
            for fn, src, rep, occ in TRUE_N_PLUS_ONE:
                label = label_of(fn, run)
                truth[label], expected[label] = True, (src, rep, occ)
                iterations[label] = await fn(ctx, label, run)
            for fn in LOOK_ALIKES:
                if fn in slow:
                    continue
                label = label_of(fn, run)
                truth[label] = False
                iterations[label] = await fn(ctx, label, run)
        for s, n in zip([(s, run) for s in slow for run in range(RUNS)], await background):
            truth[label_of(*s)] = False
            iterations[label_of(*s)] = n

    run_async(main(), timeout=120)
    assert all(iterations[lbl] >= 5 for lbl, t in truth.items() if t), iterations
    time.sleep(0.2)
    found = findings(proxy)
    by_label = {}
    for f in found:
        by_label.setdefault(f["application_name"], []).append(f)
    stray = sorted(set(by_label) - set(truth))
    assert not stray, f"findings for connections that are not scenarios: {stray}\n{json.dumps(found, indent=1)}"

    # --- precision / recall over the scenarios, and the confusion table ---
    tp = sorted(lbl for lbl, t in truth.items() if t and lbl in by_label)
    fn_ = sorted(lbl for lbl, t in truth.items() if t and lbl not in by_label)
    fp = sorted(lbl for lbl, t in truth.items() if not t and lbl in by_label)
    tn = sorted(lbl for lbl, t in truth.items() if not t and lbl not in by_label)
    precision = len(tp) / (len(tp) + len(fp)) if tp or fp else 0.0
    recall = len(tp) / (len(tp) + len(fn_)) if tp or fn_ else 0.0
    lines = [f"{'scenario':<36} {'truth':>6} {'flagged':>8}  findings (count, repeated query)"]
    for lbl in sorted(truth):
        detail = "; ".join(f"{f['count']}x {f['repeated_query'][:60]}" for f in by_label.get(lbl, []))
        lines.append(f"{lbl:<36} {'N+1' if truth[lbl] else 'no':>6} {'yes' if lbl in by_label else 'no':>8}  {detail}")
    lines.append(f"\n              flagged  not flagged\nN+1          {len(tp):>7}  {len(fn_):>11}\n"
                 f"look-alike   {len(fp):>7}  {len(tn):>11}")
    lines.append(f"precision {precision:.3f}  recall {recall:.3f}  ({len(truth)} scenarios)")
    table_text = "\n".join(lines)
    print(table_text)
    assert precision >= 0.95 and recall >= 0.95, (
        f"precision {precision:.3f}, recall {recall:.3f}\nmissed N+1: {fn_}\nflagged look-alikes: {fp}\n"
        f"{table_text}\nfindings:\n{json.dumps([f for lbl in fp for f in by_label[lbl]], indent=1)}")

    # --- the findings themselves ---
    for f in found:
        where = json.dumps(f, indent=1)
        assert re.fullmatch(r"[0-9a-f]{16}", f["fingerprint"]), where
        assert f["user"] == "app", where
        for key in ("source_query", "repeated_query"):
            assert "$1" in f[key] and not literals_in(f[key]), f"{key} keeps literals {literals_in(f[key])}: {where}"
        assert f["count"] >= 5 and f["occurrences"] >= 1 and f["total_ms"] >= 0, where
        assert f["suggestion"] and re.search(r"ANY|JOIN|WITH RECURSIVE", f["suggestion"]), where
    for lbl in tp:
        if not truth[lbl]:
            continue
        src, rep, occ = expected[lbl]
        fs = by_label[lbl]
        where = json.dumps(fs, indent=1)
        assert len(fs) == 1, f"{lbl}: one (source, repeated) pair expected: {where}"
        f = fs[0]
        assert (f["source_query"], f["repeated_query"]) == (src, rep), f"{lbl}: {where}"
        assert f["count"] == iterations[lbl], f"{lbl}: the loop ran {iterations[lbl]} lookups: {where}"
        assert f["occurrences"] == occ, f"{lbl}: {where}"
        assert f["database"] == ("codebase" if "chunks" in lbl else "workflow"), where

    # the seed's loop: fields, suggestion and the fingerprint /queries shows for the repeated query
    seed = by_label[label_of(tp_children, 0)][0]
    assert "WITH RECURSIVE" in seed["suggestion"] or "ANY" in seed["suggestion"], seed
    row = [q for q in queries(proxy) if q["query"] == CHILDREN and q["database"] == "workflow"]
    assert len(row) == 1 and row[0]["fingerprint"] == seed["fingerprint"], (row, seed)
    detected = metric(proxy, "pgpilot_n_plus_one_detected_total")
    assert detected > 0 and detected == sum(f["occurrences"] for f in found), (detected, found)
