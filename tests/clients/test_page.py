"""The page at GET / in a real browser (Debian's headless Chromium) against a pgpilot under load: live pools and
utilization, the cache hit ratio, top queries with their p50/p95/p99 and strategy and an N+1 finding with its suggested rewrite appear, the page loads nothing from
elsewhere and logs no console error, and without the token it is refused. A screenshot is kept in
target/page.png (a CI artifact)."""
import asyncio
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "page-test-token"
CHILD = "SELECT tbalance FROM pgbench_tellers WHERE tid = $1"


def load(dsn, seconds):
    async def main():
        c = await asyncpg.connect(dsn)
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                tellers = await c.fetch("SELECT tid FROM pgbench_tellers ORDER BY tid LIMIT 8")
                for t in tellers:  # N+1: one query per row of the first
                    await c.fetchval(CHILD, t["tid"])
                await c.fetchval("SELECT count(*) FROM pgbench_branches")
                await asyncio.sleep(0.05)
        finally:
            await c.close()
    asyncio.run(main())


def chromium(*args):
    return subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-dev-shm-usage", "--window-size=1280,1100", "--enable-logging=stderr", "--v=0",
                           *args], capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (.ci/run installs it)")
def test_the_page_shows_live_numbers_in_a_real_browser(start_proxy):
    toml = f"[insights]\nn_plus_one_min_total_ms = 0\n[http]\ntoken = \"{TOKEN}\"\n"
    proxy = start_proxy(pool_size=4, extra_toml=toml)
    worker = threading.Thread(target=load, args=(proxy.dsn("bench"), 12))
    worker.start()
    try:
        time.sleep(2)  # statistics and a finding to show
        base = f"http://{proxy.host}:{proxy.http_port}"
        assert proxy.http_get("/")[0] == 401, "the page is behind the token"
        url = f"{base}/?token={TOKEN}"
        run = chromium("--virtual-time-budget=8000", "--dump-dom", url)
        dom = run.stdout
        shot = chromium("--virtual-time-budget=8000", f"--screenshot={ROOT / 'target' / 'page.png'}", url)
    finally:
        worker.join()
    assert "Updated " in dom, f"the page never refreshed:\n{dom[:2000]}\n{run.stderr[-2000:]}"
    assert '<span id="error" class="err"></span>' in dom, "an endpoint failed: " + dom.split('id="error"')[1][:200]
    assert "<td>app</td>" in dom and "<td>bench</td>" in dom, "the pool row"
    assert "pgbench_tellers WHERE tid = $1" in dom, "the top queries"
    assert "pgbench_branches" in dom and ("cache" in dom or "pass-through" in dom), "strategies shown"
    # Live numbers, not placeholders: the cards and the child lookup's row (calls, p50 <= p95 <= p99).
    util, conns, hit = (re.search(p, dom) for p in (r'id="util">(\d+\.\d)%<', r'id="conns">(\d+) / (\d+)<',
                                                     r'id="hit">(\d+\.\d)%<'))
    assert util and conns and hit, re.findall(r'<div class="card">.*?</div>', dom)
    assert 1 <= int(conns.group(1)) <= int(conns.group(2)) == 4 and float(hit.group(1)) > 0, (conns.groups(), hit[1])
    row = re.search(re.escape(CHILD) + r'</code></td><td class="n">(\d+)</td>' + r'<td class="n">([\d.]+)</td>' * 3, dom)
    assert row, dom.split(CHILD)[1][:300]
    calls, p50, p95, p99 = int(row[1]), float(row[2]), float(row[3]), float(row[4])
    assert calls >= 8 and 0 <= p50 <= p95 <= p99 and p99 > 0, row.groups()  # mostly cache hits: p50 ~0
    assert "JOIN" in dom or "ANY" in dom, "the N+1 finding's suggested rewrite"
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, "console messages:\n" + "\n".join(console)
    assert shot.returncode == 0 and (ROOT / "target" / "page.png").stat().st_size > 10_000, shot.stderr[-1000:]
