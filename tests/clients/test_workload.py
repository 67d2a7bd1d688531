"""The shared MCP-shaped load driver (../shared/workload/mcp_load.py) through pgpilot: asyncpg pools on codebase and
workflow (user app) over pgpilot pools of 5 server connections per database. --statement-cache 0 because named
prepared statements are not pooled yet.

Stale reads are checked in a separate single-client run: mcp_load.py's write-then-read check races with itself when
two clients upsert the same key (the value is a timestamp taken before the write, so a slower writer can commit an
older value after a faster one). Against PostgreSQL directly, 20 clients report stale_reads=1 in about half the runs.
With one client there is no concurrent writer, so any stale read there is the proxy's.
"""
import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

LOAD = REPO_ROOT.parent / "shared" / "workload" / "mcp_load.py"
ALL_BUT_READBACK = "search=30,registry=15,hierarchy=15,list=10,entity=10,nplus1=2,write=10"


def mcp_load(proxy, tmp_path, name, *args, duration):
    assert LOAD.is_file(), f"{LOAD} is missing (../shared is part of the test setup)"
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, str(LOAD), "--host", proxy.host, "--port", str(proxy.port), "--user", "app",
           "--password", "app", "--codebase-db", "codebase", "--workflow-db", "workflow",
           "--statement-cache", "0", "--duration", str(duration), "--json", str(out), *args]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 110)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mcp_load.py did not finish within {exc.timeout}s; output so far:\n{exc.stdout}\n{exc.stderr}")
    report = f"{' '.join(cmd)}\nexit {run.returncode}\nstdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-4000:]}"
    assert out.is_file(), f"mcp_load.py wrote no JSON summary; {report}"
    summary = json.loads(out.read_text())
    assert summary["errors"] == 0, f"errors: {summary['error_samples']}\n{report}"
    assert summary["stale_reads"] == 0, report
    assert run.returncode == 0, report
    assert summary["target"] == f"{proxy.host}:{proxy.port}", summary
    done = {op["op"]: op["ok"] for op in summary["ops"]}
    assert done and all(n > 0 for n in done.values()), f"some operations never completed: {done}"
    return done


def test_mcp_load_through_pool_of_five(start_proxy, tmp_path):
    proxy = start_proxy(pool_size=5, mode="transaction")
    done = mcp_load(proxy, tmp_path, "mixed", "--clients", "20", "--mix", ALL_BUT_READBACK, duration=10)
    assert set(done) == set(ALL_BUT_READBACK.replace("=", ",").split(",")[::2])
    done = mcp_load(proxy, tmp_path, "readback", "--clients", "1", "--mix", "readback=1", duration=3)
    assert set(done) == {"readback"}
