"""The shared MCP-shaped load driver (../shared/workload/mcp_load.py) through pgpilot: asyncpg pools on codebase and
workflow (user app) over pgpilot pools of 5 server connections per database. --statement-cache 0: this file covers
the unnamed-statement path (test_prepared.py runs the driver with its default named statement cache).

Stale reads are checked in a separate single-client run: mcp_load.py's write-then-read check races with itself when
two clients upsert the same key (the value is a timestamp taken before the write, so a slower writer can commit an
older value after a faster one). Against PostgreSQL directly, 20 clients report stale_reads=1 in about half the runs.
With one client there is no concurrent writer, so any stale read there is the proxy's.
"""
from conftest import ALL_BUT_READBACK, run_mcp_load


def mcp_load(proxy, tmp_path, name, *args, duration):
    return run_mcp_load(proxy, tmp_path, name, *args, duration=duration)[1]


def test_mcp_load_through_pool_of_five(start_proxy, tmp_path):
    proxy = start_proxy(pool_size=5, mode="transaction")
    done = mcp_load(proxy, tmp_path, "mixed", "--clients", "20", "--mix", ALL_BUT_READBACK, duration=10)
    assert set(done) == set(ALL_BUT_READBACK.replace("=", ",").split(",")[::2])
    done = mcp_load(proxy, tmp_path, "readback", "--clients", "1", "--mix", "readback=1", duration=3)
    assert set(done) == {"readback"}
