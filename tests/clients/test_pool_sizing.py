"""Adaptive pool sizing (src/pool/sizing.rs): a step load grows a pool's target within a few ticks and the target
shrinks again after the load is gone, with every decision and its reason visible in /health/status and SHOW POOLS."""
import asyncio
import json
import time

import asyncpg
import psycopg

from conftest import run_async, wait_until


def pool_status(proxy, db="app"):
    _, body = proxy.http_get("/health/status")
    return next((p for p in json.loads(body)["pools"] if p["database"] == db), None)


async def load(dsn, clients, seconds, stop=None):
    """`clients` connections each running 50 ms statements back to back for `seconds` (or until `stop` is set)."""
    async def one():
        c = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end and not (stop and stop.is_set()):
                await c.execute("SELECT pg_sleep(0.05)")
        finally:
            await c.close()
    await asyncio.gather(*(one() for _ in range(clients)))


def test_a_step_load_grows_the_target_and_it_shrinks_after(start_proxy):
    """The issue's step: 5 -> 100 -> 5 clients (a pool of at most 60 against a demand of ~100)."""
    proxy = start_proxy(pool_size=60)
    run_async(load(proxy.dsn(), 5, 4), 30)
    low = pool_status(proxy)
    assert low["target"] <= 8, low  # 5 busy: 5 / 0.75 rounds up to 7
    peak, grown_after, reasons = {}, [], set()

    async def step():
        t0 = time.monotonic()
        task = asyncio.ensure_future(load(proxy.dsn(), 100, 8))
        while time.monotonic() - t0 < 7:
            await asyncio.sleep(0.25)
            status = pool_status(proxy)
            reasons.add(status["decision"]["reason"])
            if status["size"] >= 50 and not grown_after:
                grown_after.append(time.monotonic() - t0)
            if status["target"] >= peak.get("target", 0):
                peak.update(status)
        await task
    run_async(step(), 60)
    # 100 clients connect over the first second or so; the pool opens two connections at a time.
    assert grown_after and grown_after[0] <= 5.0, (grown_after, pool_status(proxy))
    assert peak["target"] >= 50, peak
    # Checkouts that wait grow the pool between ticks; the ticks say why.
    assert any("growing" in r for r in reasons), reasons
    rec = peak["recommendation"]
    assert rec["qps"] > 0 and rec["mean_ms"] >= 40 and rec["max_size"] >= rec["min_size"] >= 5, rec

    # Back to 5 clients: after the window of recent ticks the target steps down to their demand,
    # closing idle connections.
    async def low_again():
        stop = asyncio.Event()
        task = asyncio.ensure_future(load(proxy.dsn(), 5, 30, stop))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 25 and pool_status(proxy)["target"] > 10:
            await asyncio.sleep(0.5)
        shrunk = pool_status(proxy)
        stop.set()
        await task
        return time.monotonic() - t0, shrunk
    took, after = run_async(low_again(), 60)
    assert after["target"] <= 10, (took, after)
    assert "shrinking" in after["decision"]["reason"], after["decision"]
    wait_until(lambda: pool_status(proxy)["size"] <= pool_status(proxy)["target"], 5, message="idle connections closed")
    # (the sizing tick may move the target between the two reads: read /health/status around it)
    t_before = pool_status(proxy)["target"]
    with psycopg.connect(proxy.dsn("pgpilot"), autocommit=True) as console:
        cur = console.execute("SHOW POOLS")
        cols = [d.name for d in cur.description]
        row = dict(zip(cols, next(r for r in cur.fetchall() if r[0] == "app")))
    t_after = pool_status(proxy)["target"]
    assert min(t_before, t_after) <= int(row["pool_target"]) <= max(t_before, t_after), (row, t_before, t_after)
    assert "shrinking" in row["sizing"], row
    _, metrics = proxy.http_get("/metrics")
    assert 'pgpilot_pool_target{database="app",user="app"}' in metrics


def test_two_pools_share_the_server_budget(start_proxy, pg_admin):
    """pool.max_server_connections bounds the server connections of all pools together: two databases' pools, each
    allowed 10, with 8 busy clients each, never hold more than the budget of 6 (pg_stat_activity sampled
    throughout), and both make progress without a checkout timing out."""
    proxy = start_proxy(pool_size=10, extra_toml="max_server_connections = 6\n")  # (in [pool])
    done = {"app": 0, "bench": 0}
    peak = 0

    async def client(db, seconds):
        c = await asyncpg.connect(proxy.dsn(db), statement_cache_size=0)
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await c.execute("SELECT pg_sleep(0.03)")
                done[db] += 1
        finally:
            await c.close()

    async def sample(seconds):
        nonlocal peak
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n = pg_admin.scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                                "AND datname IN ('app', 'bench') AND backend_start >= %s", (proxy.started_at,))
            peak = max(peak, n)
            await asyncio.sleep(0.05)

    async def main():
        await asyncio.gather(*(client(db, 4) for db in ("app", "bench") for _ in range(8)), sample(4.5))
    run_async(main(), 60)
    assert peak <= 6, f"{peak} server connections with a budget of 6"
    assert done["app"] > 20 and done["bench"] > 20, done
    _, body = proxy.http_get("/health/status")
    assert json.loads(body)["connection_pool"]["server_budget"]["limit"] == 6


def test_the_budget_is_derived_from_the_server(start_proxy):
    proxy = start_proxy(pool_size=4)
    with psycopg.connect(proxy.dsn(), autocommit=True) as c:
        c.execute("SELECT 1")
        max_conn = int(c.execute("SHOW max_connections").fetchone()[0])
        reserved = int(c.execute("SHOW superuser_reserved_connections").fetchone()[0])
    _, body = proxy.http_get("/health/status")
    budget = json.loads(body)["connection_pool"]["server_budget"]
    assert budget["limit"] == int((max_conn - reserved) * 0.9) and budget["used"] >= 1, budget
