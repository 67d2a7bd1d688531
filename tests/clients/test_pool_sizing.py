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


async def load(dsn, clients, seconds):
    async def one():
        c = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await c.execute("SELECT pg_sleep(0.05)")
        finally:
            await c.close()
    await asyncio.gather(*(one() for _ in range(clients)))


def test_a_step_load_grows_the_target_and_it_shrinks_after(start_proxy):
    proxy = start_proxy(pool_size=30)
    run_async(load(proxy.dsn(), 2, 4), 30)
    low = pool_status(proxy)
    assert low["target"] <= 8, low
    peak = {}

    async def step():
        task = asyncio.ensure_future(load(proxy.dsn(), 24, 5))
        await asyncio.sleep(3)  # a few ticks into the step
        peak.update(pool_status(proxy))
        await task
    run_async(step(), 30)
    assert peak["target"] >= 20 and peak["size"] >= 20, peak
    assert "growing" in peak["decision"]["reason"], peak["decision"]
    rec = peak["recommendation"]
    assert rec["qps"] > 0 and rec["mean_ms"] >= 40 and rec["max_size"] >= rec["min_size"] >= 5, rec
    # The load drops back: after the window of recent ticks the target steps down, closing idle connections.
    run_async(load(proxy.dsn(), 2, 1), 30)
    wait_until(lambda: pool_status(proxy)["target"] <= peak["target"] - 5, 25, interval=0.5,
               message="the target shrinking after the step")
    after = pool_status(proxy)
    assert "shrinking" in after["decision"]["reason"], after["decision"]
    wait_until(lambda: pool_status(proxy)["size"] <= pool_status(proxy)["target"], 5, message="idle connections closed")
    with psycopg.connect(proxy.dsn("pgpilot"), autocommit=True) as console:
        cur = console.execute("SHOW POOLS")
        cols = [d.name for d in cur.description]
        row = dict(zip(cols, next(r for r in cur.fetchall() if r[0] == "app")))
    assert int(row["pool_target"]) == pool_status(proxy)["target"] and "shrinking" in row["sizing"], row
    _, metrics = proxy.http_get("/metrics")
    assert 'pgpilot_pool_target{database="app",user="app"}' in metrics
