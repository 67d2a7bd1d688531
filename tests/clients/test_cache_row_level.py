"""Row-level invalidation: a cached read whose only key predicate is its table's primary key (`WHERE id = $1`)
depends on that key alone, so a committed write to another key (through pgpilot, or with `invalidation =
"replication"` straight to the server) leaves it hitting. Writes whose keys pgpilot cannot tell (another predicate,
a key-changing UPDATE, a range) invalidate the whole table, as before. Keys are compared by value: asyncpg sends
int and uuid parameters in binary, psycopg in text, the replication stream prints them; all name the same row.
The staleness checkers run writers on single keys and on ranges against readers that keep every key cached."""
import asyncio
import random
import uuid

import asyncpg
import psycopg
import pytest

from conftest import cache_status, run_async, wait_cache_ready

NO_ADMISSION = "[cache]\nskip_unrepeated = false\n"


def hits(proxy):
    return cache_status(proxy)["hits"]


@pytest.fixture
def keyed_tables(pg_admin, admin_cleanup):
    """Three tables keyed by int, uuid and text primary keys (rows 1..20), owned by app."""
    tag = uuid.uuid4().hex[:8]
    names = {"int": f"rl_int_{tag}", "uuid": f"rl_uuid_{tag}", "text": f"rl_text_{tag}"}
    keys = {"int": list(range(1, 21)), "uuid": [uuid.UUID(int=i) for i in range(1, 21)],
            "text": [f"k{i}" for i in range(1, 21)]}
    types = {"int": "int", "uuid": "uuid", "text": "text"}
    for kind, name in names.items():
        pg_admin.execute(f"CREATE TABLE {name} (id {types[kind]} PRIMARY KEY, v text)")
        for k in keys[kind]:
            pg_admin.execute(f"INSERT INTO {name} VALUES (%s, %s)", (k, f"v-{k}"))
        pg_admin.execute(f"ALTER TABLE {name} OWNER TO app")
        admin_cleanup(f"DROP TABLE IF EXISTS {name}")
    return names, keys


def test_a_write_to_one_key_leaves_the_others_hitting(keyed_tables, cached_proxy):
    names, keys = keyed_tables
    proxy = cached_proxy("transaction", 4, NO_ADMISSION)
    wait_cache_ready(proxy, names["int"])

    async def main():
        c = await asyncpg.connect(proxy.dsn())
        try:
            for kind, table in names.items():
                read = f"SELECT v FROM {table} WHERE id = $1"
                ks = keys[kind][:5]
                for _ in range(2):
                    assert [await c.fetchval(read, k) for k in ks] == [f"v-{k}" for k in ks]
                await c.execute(f"UPDATE {table} SET v = $1 WHERE id = $2", "new", ks[0])
                before = hits(proxy)
                got = [await c.fetchval(read, k) for k in ks]
                assert got == ["new"] + [f"v-{k}" for k in ks[1:]], kind
                assert hits(proxy) - before == 4, f"{kind}: the four other keys still hit"
                # A write whose keys pgpilot cannot tell invalidates the table.
                await c.execute(f"UPDATE {table} SET v = $1 WHERE v = $2", "by-value", f"v-{ks[1]}")
                before = hits(proxy)
                got = [await c.fetchval(read, k) for k in ks]
                assert got == ["new", "by-value"] + [f"v-{k}" for k in ks[2:]], kind
                assert hits(proxy) == before, f"{kind}: a table-level write leaves no hit"
        finally:
            await c.close()

    run_async(main(), 60)


def test_inserts_deletes_upserts_and_key_changes_are_never_stale(keyed_tables, cached_proxy):
    names, _ = keyed_tables
    table = names["int"]
    proxy = cached_proxy("transaction", 4, NO_ADMISSION)
    wait_cache_ready(proxy, table)
    read = f"SELECT v FROM {table} WHERE id = $1"

    async def main():
        c = await asyncpg.connect(proxy.dsn())
        try:
            async def twice(k):
                first = await c.fetchval(read, k)
                assert await c.fetchval(read, k) == first
                return first

            assert await twice(100) is None  # a cached empty result for a key not there yet
            await c.execute(f"INSERT INTO {table} (id, v) VALUES ($1, $2)", 100, "inserted")
            assert await twice(100) == "inserted"
            await c.execute(f"INSERT INTO {table} (id, v) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = "
                            "EXCLUDED.v", 100, "upserted")
            assert await twice(100) == "upserted"
            await c.execute(f"DELETE FROM {table} WHERE id = $1", 100)
            assert await twice(100) is None
            assert (await twice(3), await twice(50)) == ("v-3", None)
            await c.execute(f"UPDATE {table} SET id = $1 WHERE id = $2", 50, 3)  # moves a row to another key
            assert (await twice(3), await twice(50)) == (None, "v-3")
            await c.executemany(f"INSERT INTO {table} (id, v) VALUES ($1, $2)", [(201, "a"), (202, "b")])
            async with c.transaction():  # two keys in one transaction, committed together
                await c.execute(f"UPDATE {table} SET v = $1 WHERE id = $2", "tx", 4)
                await c.execute(f"DELETE FROM {table} WHERE id = $1", 5)
            assert [await twice(k) for k in (4, 5, 201, 202)] == ["tx", None, "a", "b"]
        finally:
            await c.close()

    run_async(main(), 60)


async def staleness_run(proxy_dsns, connect_writer, table, keys, seconds, settle_s):
    """Writers own disjoint keys and write them one at a time or as a range, then read them back through a
    proxy (after `settle_s` when the writes bypass it); readers keep every key cached meanwhile, spread over
    `proxy_dsns` (replicas). Returns (stale reads, reads checked)."""
    stale, checked = 0, 0
    expected, seen = {}, []
    deadline = asyncio.get_running_loop().time() + seconds
    owners = [keys[i::4] for i in range(4)]

    async def writer(i, mine):
        nonlocal stale, checked
        w = await connect_writer()
        r = await asyncpg.connect(proxy_dsns[(i + 1) % len(proxy_dsns)])
        try:
            while asyncio.get_running_loop().time() < deadline:
                value = uuid.uuid4().hex
                if random.random() < 0.7:
                    targets = [random.choice(mine)]
                    await w.execute(f"UPDATE {table} SET v = $1 WHERE id = $2", value, targets[0])
                else:
                    lo = random.choice(mine)
                    targets = [k for k in mine if lo <= k <= lo + 12]
                    await w.execute(f"UPDATE {table} SET v = $1 WHERE id = ANY($2::int[])", value, targets)
                wrote = asyncio.get_running_loop().time()
                for k in targets:
                    expected[k] = value
                if settle_s:
                    await asyncio.sleep(settle_s)
                for k in targets:
                    checked += 1
                    got = await r.fetchval(f"SELECT v FROM {table} WHERE id = $1", k)
                    if got != value:
                        stale += 1
                        late = asyncio.get_running_loop().time() - wrote
                        seen.append(f"key {k} of {len(targets)}: {got!r}, not {value!r}, {late * 1000:.1f} ms after")
        finally:
            await w.close()
            await r.close()

    async def reader(i):
        r = await asyncpg.connect(proxy_dsns[i % len(proxy_dsns)])
        try:
            while asyncio.get_running_loop().time() < deadline:
                await r.fetchval(f"SELECT v FROM {table} WHERE id = $1", random.choice(keys))
        finally:
            await r.close()

    await asyncio.gather(*(writer(i, m) for i, m in enumerate(owners)), *(reader(i) for i in range(4)))
    return stale, checked, seen


def test_staleness_checker_with_single_key_and_range_writers(keyed_tables, cached_proxy):
    names, keys = keyed_tables
    proxy = cached_proxy("transaction", 6, NO_ADMISSION)
    wait_cache_ready(proxy, names["int"])
    before = hits(proxy)
    writer = lambda: asyncpg.connect(proxy.dsn())  # noqa: E731
    stale, checked, seen = run_async(staleness_run([proxy.dsn()], writer, names["int"], keys["int"], 6, 0), 60)
    assert checked > 200 and stale == 0, f"{stale} stale of {checked}: {seen[:5]}"
    assert hits(proxy) - before > 100, "the readers' keys kept hitting between writes"


def test_literal_keys_in_the_simple_protocol(keyed_tables, cached_proxy):
    """psql, pgbench -M simple and drivers that inline values send the key as a literal: read from the text, it keys
    the read and the write the same way a bound parameter does (psycopg sends a text without parameters as a simple
    Query)."""
    names, keys = keyed_tables
    proxy = cached_proxy("transaction", 4, NO_ADMISSION)
    wait_cache_ready(proxy, names["int"])
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        for kind, quote in (("int", ""), ("text", "'")):
            table, ks = names[kind], keys[kind][:5]
            read = lambda k: c.execute(f"SELECT v FROM {table} WHERE id = {quote}{k}{quote}").fetchone()[0]  # noqa: E731
            for _ in range(2):
                assert [read(k) for k in ks] == [f"v-{k}" for k in ks]
            c.execute(f"UPDATE {table} SET v = 'lit' WHERE id = {quote}{ks[0]}{quote}")
            before = hits(proxy)
            assert [read(k) for k in ks] == ["lit"] + [f"v-{k}" for k in ks[1:]], kind
            assert hits(proxy) - before == 4, f"{kind}: the other keys still hit"
            # Two keys in one statement: not read as a key, the table is invalidated.
            c.execute(f"DELETE FROM {table} WHERE id = {quote}{ks[1]}{quote} OR id = {quote}{ks[2]}{quote}")
            before = hits(proxy)
            assert [read(k) for k in ks[3:]] == [f"v-{k}" for k in ks[3:]]
            assert hits(proxy) == before, f"{kind}: a table-level write"
            assert c.execute(f"SELECT v FROM {table} WHERE id = {quote}{ks[1]}{quote}").fetchone() is None


def test_a_cascade_from_one_keyed_write_reaches_rows_of_another_keyed_table(pg_admin, admin_cleanup, cached_proxy):
    """One commit deletes a parent by key (ON DELETE CASCADE removes its children) and updates one child by key: the
    cascade changed children nobody named, so the child table is invalidated as a whole, not only at the updated key.
    An UPDATE of a parent that keeps its key fires no ON DELETE action: the children's keys keep hitting."""
    tag = uuid.uuid4().hex[:8]
    parent, child = f"rl_par_{tag}", f"rl_ch_{tag}"
    pg_admin.execute(f"CREATE TABLE {parent} (id int PRIMARY KEY, v text)")
    pg_admin.execute(f"CREATE TABLE {child} (id int PRIMARY KEY, "
                     f"parent_id int REFERENCES {parent} ON DELETE CASCADE, v text)")
    pg_admin.execute(f"INSERT INTO {parent} VALUES (1, 'p1'), (2, 'p2')")
    pg_admin.execute(f"INSERT INTO {child} VALUES (10, 1, 'c10'), (11, 2, 'c11'), (12, 2, 'c12')")
    for t in (parent, child):
        pg_admin.execute(f"ALTER TABLE {t} OWNER TO app")
    admin_cleanup(f"DROP TABLE IF EXISTS {child}, {parent}")
    proxy = cached_proxy("transaction", 4, NO_ADMISSION)
    wait_cache_ready(proxy, child)
    read = f"SELECT v FROM {child} WHERE id = $1"

    async def main():
        c = await asyncpg.connect(proxy.dsn())
        try:
            for _ in range(2):
                assert [await c.fetchval(read, k) for k in (10, 12)] == ["c10", "c12"]
            await c.execute(f"UPDATE {parent} SET v = $1 WHERE id = $2", "p2b", 2)
            before = hits(proxy)
            assert [await c.fetchval(read, k) for k in (10, 12)] == ["c10", "c12"]
            assert hits(proxy) - before == 2, "a parent's UPDATE keeping its key leaves the children cached"
            async with c.transaction():
                await c.execute(f"DELETE FROM {parent} WHERE id = $1", 1)
                await c.execute(f"UPDATE {child} SET v = $1 WHERE id = $2", "c11b", 11)
            assert await c.fetchval(read, 10) is None, "child 10 went with its parent (not served from the cache)"
            assert await c.fetchval(read, 12) == "c12"
        finally:
            await c.close()

    run_async(main(), 60)


def test_a_literal_key_is_the_top_level_comparison_not_another_mention(keyed_tables, cached_proxy):
    """`(id) = 5 AND (id = 7 OR ...)` writes row 5: the only `id = literal` the text shows is 7, inside an OR. Reading
    the key from the text alone would invalidate key 7 and leave row 5's cached read stale."""
    names, _ = keyed_tables
    table = names["int"]
    proxy = cached_proxy("transaction", 4, NO_ADMISSION)
    wait_cache_ready(proxy, table)
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        read = lambda k: c.execute(f"SELECT v FROM {table} WHERE id = {k}").fetchone()[0]  # noqa: E731
        for _ in range(2):
            assert [read(5), read(7)] == ["v-5", "v-7"]
        c.execute(f"UPDATE {table} SET v = 'hidden' WHERE (id) = 5 AND (id = 7 OR v IS NOT NULL)")
        assert read(5) == "hidden", "row 5 was written: its cached read must not be served"
        assert read(7) == "v-7"
