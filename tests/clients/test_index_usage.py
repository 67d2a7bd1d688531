"""Index usage (src/index_usage.rs) against real PostgreSQL with pgvector: a table with a vector column and no
HNSW/ivfflat index gets the seed's advice in /health/status and its scans in /metrics; once the index exists the
advice goes away at the next reading."""
import json

import psycopg

from conftest import wait_until


def usage(proxy, table):
    _, body = proxy.http_get("/health/status")
    return next((t for t in json.loads(body)["index_usage"] if t["table"] == table), None)


def test_a_vector_column_without_an_index_gets_advice_until_it_has_one(start_proxy, pg_admin):
    pg_admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
    pg_admin.execute("DROP TABLE IF EXISTS pgpilot_vec")
    pg_admin.execute("CREATE TABLE pgpilot_vec (id int PRIMARY KEY, embedding vector(3))")
    pg_admin.execute("INSERT INTO pgpilot_vec SELECT g, ARRAY[g, g, g]::vector FROM generate_series(1, 50) g")
    pg_admin.execute("ANALYZE pgpilot_vec")
    pg_admin.execute("ALTER TABLE pgpilot_vec OWNER TO app")
    try:
        proxy = start_proxy(extra_toml="[insights]\nindex_usage_interval_s = 1\n")
        with psycopg.connect(proxy.dsn(), autocommit=True) as c:  # the pool for app exists from here
            c.execute("SELECT id FROM pgpilot_vec ORDER BY embedding <-> '[1,1,1]' LIMIT 3").fetchall()
        row = wait_until(lambda: (u := usage(proxy, "pgpilot_vec")) and u["advice"] and u, 10, interval=0.2,
                         message="advice for the unindexed vector column")
        assert "hnsw" in row["advice"][0] and row["rows"] == 50 and row["seq_scans"] >= 1, row
        _, metrics = proxy.http_get("/metrics")
        assert 'pgpilot_table_scans_total{database="app",table="pgpilot_vec",kind="seq"}' in metrics
        pg_admin.execute("CREATE INDEX ON pgpilot_vec USING hnsw (embedding vector_l2_ops)")
        wait_until(lambda: (u := usage(proxy, "pgpilot_vec")) and not u["advice"], 10, interval=0.2,
                   message="the advice gone once the index exists")
    finally:
        pg_admin.execute("DROP TABLE IF EXISTS pgpilot_vec")


def index(proxy, name):
    _, body = proxy.http_get("/health/status")
    return next((i for i in json.loads(body)["indexes"] if i["index"] == name), None)


def test_a_btree_emptied_by_deletes_shows_its_bloat_and_the_seeds_reindex_advice(start_proxy, pg_admin):
    """100,000 keys, 90% deleted and vacuumed: the index keeps its pages (~2.2 MB) for a tenth of the tuples. A
    fresh index of the same table reads near 0% (the estimate is within 1% of a fresh pgbench_accounts_pkey)."""
    pg_admin.execute("DROP TABLE IF EXISTS pgpilot_bloat")
    pg_admin.execute("CREATE TABLE pgpilot_bloat (id int PRIMARY KEY, v text)")
    pg_admin.execute("INSERT INTO pgpilot_bloat SELECT g, 'x' FROM generate_series(1, 100000) g")
    pg_admin.execute("CREATE INDEX pgpilot_bloat_fresh ON pgpilot_bloat (id)")
    pg_admin.execute("CREATE INDEX pgpilot_bloat_expr ON pgpilot_bloat (id, lower(v))")
    pg_admin.execute("DELETE FROM pgpilot_bloat WHERE id % 10 <> 0")
    pg_admin.execute("VACUUM ANALYZE pgpilot_bloat")
    pg_admin.execute("REINDEX INDEX pgpilot_bloat_fresh")
    pg_admin.execute("ALTER TABLE pgpilot_bloat OWNER TO app")
    try:
        proxy = start_proxy(extra_toml="[insights]\nindex_usage_interval_s = 1\n")
        with psycopg.connect(proxy.dsn(), autocommit=True) as c:
            c.execute("SELECT v FROM pgpilot_bloat WHERE id = 10").fetchall()
        bloated = wait_until(lambda: index(proxy, "pgpilot_bloat_pkey"), 10, interval=0.2, message="indexes read")
        assert bloated["method"] == "btree" and bloated["bloat_percent"] > 80, bloated
        assert "REINDEX INDEX CONCURRENTLY pgpilot_bloat_pkey" in bloated["advice"][0], bloated
        fresh = index(proxy, "pgpilot_bloat_fresh")
        assert fresh["size_bytes"] < 300_000 and (fresh["bloat_percent"] is None or fresh["bloat_percent"] < 20), fresh
        assert not fresh["advice"], fresh
        expr = index(proxy, "pgpilot_bloat_expr")  # no width known for lower(v): no estimate, no advice
        assert expr["bloat_percent"] is None and not expr["advice"], expr
        _, metrics = proxy.http_get("/metrics")
        line = next(l for l in metrics.splitlines()
                    if l.startswith("pgpilot_index_bloat_percent{") and 'index="pgpilot_bloat_pkey"' in l)
        assert float(line.rsplit(" ", 1)[1]) > 80, line
    finally:
        pg_admin.execute("DROP TABLE IF EXISTS pgpilot_bloat")
