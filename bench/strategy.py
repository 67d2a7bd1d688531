"""Static pools against pgpilot's adaptive layer (slow lane, deferred BEGIN, adaptive size) with one server budget.

Run by bench/strategy.sh (which builds pgpilot and starts a seeded throwaway PostgreSQL); prints ratios.
Part A: ../shared/workload/mcp_load.py's default mix plus a flood of 300 ms statements that hold connections
without using CPU (pg_sleep on the codebase database), static pool vs adaptive, interleaved.
Part B: a step load (few -> many -> few clients); checkout-wait p95 and the server connections held on average,
for several static sizes and the adaptive pool.
"""
import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import asyncpg

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD = os.path.join(HERE, "..", "..", "shared", "workload", "mcp_load.py")
FLOOD_SQL = "SELECT pg_sleep(0.3), count(*) FROM code_files WHERE size_bytes = $1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    def __init__(self, binary, upstream, toml):
        self.port, self.http = free_port(), free_port()
        self.cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        self.cfg.write(toml)
        self.cfg.close()
        env = dict(os.environ, PGPILOT_LOG="error")
        self.proc = subprocess.Popen([binary, "--config", self.cfg.name, "--listen", f"127.0.0.1:{self.port}",
                                      "--http-listen", f"127.0.0.1:{self.http}", "--upstream", upstream], env=env)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("pgpilot did not start")

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5) as r:
            return r.read().decode()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        os.unlink(self.cfg.name)


async def flood(port, clients, seconds):
    """Clients looping a 300 ms statement on the codebase database; returns how many ran."""
    stop = time.monotonic() + seconds
    done = 0

    async def one(i):
        nonlocal done
        c = await asyncpg.connect(host="127.0.0.1", port=port, user="app", password="app", database="codebase")
        try:
            while time.monotonic() < stop:
                await c.fetchval(FLOOD_SQL, i)
                done += 1
        finally:
            await c.close()
    await asyncio.gather(*(one(i) for i in range(clients)))
    return done


def mcp_load(port, clients, seconds, out, pool_max=None):
    cmd = [sys.executable, LOAD, "--port", str(port), "--clients", str(clients), "--duration", str(seconds),
           "--json", out]
    if pool_max:
        cmd += ["--pool-max", str(pool_max)]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    with open(out) as fh:
        return json.load(fh)


async def lane_run(port, seconds, clients, flood_clients, out):
    loop = asyncio.get_running_loop()
    load = loop.run_in_executor(None, mcp_load, port, clients, seconds, out)
    slow = await flood(port, flood_clients, seconds)
    return await load, slow


def part_a(binary, upstream, args):
    base = f"[pool]\nmax_size = {args.pool}\nmax_server_connections = {2 * args.pool}\n"
    configs = {
        "static": base + "adaptive = false\n[strategy]\nenabled = false\n",
        "adaptive": base,
    }
    results = {name: [] for name in configs}
    proxies = {name: Proxy(binary, upstream, toml) for name, toml in configs.items()}
    try:
        for name, p in proxies.items():
            # Warm: the buffer cache, the HNSW index, and (adaptive) what the strategy learns.
            asyncio.run(lane_run(p.port, 6, args.clients, args.flood, tempfile.mktemp()))
        for rep in range(args.repeat):
            for name, p in proxies.items():  # interleaved
                out = tempfile.mktemp(suffix=".json")
                summary, slow = asyncio.run(lane_run(p.port, args.duration, args.clients, args.flood, out))
                results[name].append((summary, slow))
                line = "  ".join(f"{r['op']} {r['p95_ms'] or 0:.1f}" for r in summary["ops"])
                print(f"A {name} rep {rep}: {summary['ops_per_s']:.0f} ops/s, {slow} slow statements, "
                      f"errors {summary['errors']}, stale {summary['stale_reads']}; p95 ms: {line}", flush=True)
        for name, p in proxies.items():
            status = json.loads(p.get("/health/status"))
            lanes = [(q["database"], q.get("slow_lane_waited")) for q in status["pools"]]
            print(f"A {name}: slow-lane waits per pool {lanes}")
    finally:
        for p in proxies.values():
            p.stop()

    def mean(name, f):
        xs = [f(s) for s, _ in results[name]]
        return sum(xs) / len(xs)

    def p95(op):
        return lambda s: next(r["p95_ms"] or 0 for r in s["ops"] if r["op"] == op)
    ops = mean("adaptive", lambda s: s["ops_per_s"]) / mean("static", lambda s: s["ops_per_s"])
    print(f"A ratio adaptive/static: mcp ops/s {ops:.2f}x")
    for op in ("registry", "search", "hierarchy", "list", "entity", "write", "readback"):
        st, ad = mean("static", p95(op)), mean("adaptive", p95(op))
        print(f"A p95 {op:<9} static {st:8.1f} ms  adaptive {ad:8.1f} ms  static/adaptive {st / max(ad, 1e-9):5.1f}x")


def wait_buckets(metrics):
    out = []
    for line in metrics.splitlines():
        if line.startswith("pgpilot_pool_wait_time_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return out


def wait_p95(metrics, since=""):
    """p95 of pgpilot_pool_wait_time_seconds from its buckets (linear inside a bucket, as histogram_quantile),
    over what happened after the `since` scrape."""
    old = dict(wait_buckets(since))
    buckets = [(le, n - old.get(le, 0.0)) for le, n in wait_buckets(metrics)]
    total = buckets[-1][1]
    rank, prev_le, prev_n = 0.95 * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9)
        prev_le, prev_n = le, n
    return prev_le


def step_run(binary, upstream, toml, args):
    """One step load on a fresh pgpilot: (checkout wait p95 s, mean server connections, ops/s)."""
    p = Proxy(binary, upstream, toml)
    samples, stop = [], []
    timeline = []

    def sample():
        t0 = time.monotonic()
        while not stop:
            status = json.loads(p.get("/health/status"))
            samples.append(status["connection_pool"]["size"])
            timeline.append((time.monotonic() - t0, [(q["size"], q["target"]) for q in status["pools"]]))
            time.sleep(0.25)

    t = threading.Thread(target=sample)
    t.start()
    ops = 0.0
    # A service's pools have seen a peak before (a static pool keeps what it opened): one burst
    # first, not measured, then few -> many -> few.
    mcp_load(p.port, args.high, args.warm_s, tempfile.mktemp(suffix=".json"), pool_max=args.high)
    samples.clear()
    timeline.clear()
    before = p.get("/metrics")
    try:
        for clients, seconds in ((args.low, args.low_s), (args.high, args.high_s), (args.low, args.low_s)):
            out = tempfile.mktemp(suffix=".json")
            s = mcp_load(p.port, clients, seconds, out, pool_max=clients)
            ops += s["ok"]
    finally:
        stop.append(1)
        t.join()
        metrics = p.get("/metrics")
        p.stop()
    row = (wait_p95(metrics, before), sum(samples) / max(len(samples), 1), ops / (2 * args.low_s + args.high_s))
    if args.trace:
        for at, pools in timeline[::4]:
            print(f"  {at:5.1f}s  (size, target) per pool: {pools}")
    return row


def part_b(binary, upstream, args):
    budget = 2 * args.pool
    configs = {f"static-{n}": f"[pool]\nmax_size = {n}\nadaptive = false\nmax_server_connections = {budget}\n"
               for n in args.static_sizes}
    # The adaptive pool may grow as far as the largest static one: what it holds is its own choice.
    ceiling = args.adaptive_max or max(args.static_sizes)
    configs["adaptive"] = f"[pool]\nmax_size = {ceiling}\nmax_server_connections = {budget}\n"
    runs = {name: [] for name in configs}
    for rep in range(args.repeat):
        for name, toml in configs.items():  # interleaved: one step of each per repetition
            row = step_run(binary, upstream, toml, args)
            runs[name].append(row)
            print(f"B {name} rep {rep}: checkout wait p95 {row[0] * 1000:.2f} ms, server connections on average "
                  f"{row[1]:.1f}, {row[2]:.0f} ops/s", flush=True)

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]
    rows = {n: tuple(median([r[i] for r in rs]) for i in range(3)) for n, rs in runs.items()}
    for n, r in rows.items():
        print(f"B {n} (median of {args.repeat}): wait p95 {r[0] * 1000:.2f} ms, connections {r[1]:.1f}, {r[2]:.0f} ops/s")
    best = min((r for n, r in rows.items() if n != "adaptive"), key=lambda r: r[0])
    ad = rows["adaptive"]
    print(f"B adaptive vs best static (wait p95 {best[0] * 1000:.2f} ms): wait p95 {ad[0] / max(best[0], 1e-9):.2f}x, "
          f"connections {ad[1] / max(best[1], 1e-9):.2f}x")


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--bin", required=True)
    a.add_argument("--pg-port", type=int, required=True)
    a.add_argument("--pool", type=int, default=10)
    a.add_argument("--clients", type=int, default=10)
    a.add_argument("--flood", type=int, default=20)
    a.add_argument("--duration", type=int, default=15)
    a.add_argument("--repeat", type=int, default=2)
    a.add_argument("--static-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 16])
    a.add_argument("--low", type=int, default=5)
    a.add_argument("--high", type=int, default=50)
    a.add_argument("--low-s", type=int, default=15)
    a.add_argument("--high-s", type=int, default=10)
    a.add_argument("--parts", default="AB")
    a.add_argument("--warm-s", type=int, default=5)
    a.add_argument("--adaptive-max", type=int, default=0, help="part B: the adaptive pool's max_size (0: largest static)")
    a.add_argument("--trace", action="store_true", help="part B: print each pool's size and target every second")
    args = a.parse_args()
    upstream = f"postgres://app:app@127.0.0.1:{args.pg_port}"
    if "A" in args.parts:
        part_a(args.bin, upstream, args)
    if "B" in args.parts:
        part_b(args.bin, upstream, args)


if __name__ == "__main__":
    main()
