#!/usr/bin/env python3
"""Memory per idle client: starts pgpilot, logs N clients in (SCRAM, transaction mode) and leaves them idle, and
reads pgpilot's RSS (/proc/PID/status VmRSS) idle, with the N clients held, and after they left.

  bench/idle_clients.py --upstream postgres://app:app@127.0.0.1:PORT [--clients 10000] [--bin target/release/pgpilot]

Prints one line per reading and the figures docs/RELIABILITY.md records: KB per idle client, and the RSS after
they left as a ratio of the idle RSS. The client side raises its own open-file limit (root) and logs in
sequentially (pgpilot's SCRAM work is the cost being measured, not the client's concurrency).
"""
import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "clients"))
import wire  # noqa: E402


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settle(pid, seconds=3.0):
    """RSS once it stops moving (allocator trims and lazy frees land within a second or two)."""
    time.sleep(seconds)
    return rss_kb(pid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--bin", default=str(Path(__file__).resolve().parents[1] / "target" / "release" / "pgpilot"))
    ap.add_argument("--user", default="app")
    ap.add_argument("--password", default="app")
    ap.add_argument("--database", default="app")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(a.clients + 1000, hard)  # each side holds one descriptor per client
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    port, http = free_port(), free_port()
    cfg = Path(tempfile.mkdtemp()) / "pgpilot.toml"
    cfg.write_text(f"[server]\nmax_client_conn = {a.clients + 100}\n[upstream]\nurl = \"{a.upstream}\"\n")
    proc = subprocess.Popen([a.bin, "--config", str(cfg), "--listen", f"127.0.0.1:{port}",
                             "--http-listen", f"127.0.0.1:{http}"], stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard)))
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        first = wire.connect("127.0.0.1", port, a.user, a.database, a.password)
        wire.simple(first, "SELECT 1")
        idle = settle(proc.pid)
        print(f"idle (one client, one server connection): {idle} KB")
        conns, t0 = [], time.monotonic()
        for i in range(a.clients):
            c = wire.connect("127.0.0.1", port, a.user, a.database, a.password)
            if c.startup[-1][0] != "ReadyForQuery":
                raise SystemExit(f"login {i} failed: {c.startup[-1]}")
            conns.append(c)
        took = time.monotonic() - t0
        held = settle(proc.pid, 12.0)  # past one idle sweep (10 s)
        per = (held - idle) / a.clients
        print(f"{a.clients} idle clients held: {held} KB (+{held - idle} KB, {per:.2f} KB per client; "
              f"logins took {took:.1f} s)")
        for c in conns:
            c.sock.close()
        conns.clear()
        after = settle(proc.pid, 12.0)
        print(f"after they left: {after} KB ({after / idle:.2f}x the idle RSS)")
        print(f"RESULT clients={a.clients} idle_kb={idle} held_kb={held} per_client_kb={per:.2f} "
              f"after_kb={after} after_ratio={after / idle:.2f}")
        first.terminate()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
