"""A real packet blackhole between pgpilot and PostgreSQL: the path runs through a network namespace (a veth pair
and two socat forwarders), and taking the namespace's end of the link down drops every packet on it. Unlike the fault relay, nothing
ACKs what pgpilot sends, which is what TCP_USER_TIMEOUT (`server.tcp_user_timeout_ms`) is for: a statement
sent into the blackhole fails after it, instead of waiting out the kernel's ~15 minutes of retransmissions.

  pgpilot -> 10.211.N.2:5432 (socat in the namespace) -> 10.211.N.1:P (socat on the host) -> PostgreSQL

Needs root (ip netns), as CI has; elsewhere the module is skipped, saying why.
"""
import os
import shutil
import signal
import subprocess
import time

import psycopg
import pytest

from conftest import free_port, pg_port, wait_until

USER_TIMEOUT_MS = 2000


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@pytest.fixture(scope="module")
def path():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("socat"):
        pytest.skip("needs root, ip and socat (CI has them)")
    n = os.getpid() % 200 + 20
    ns, host_if, ns_if = f"pgpilot-bh{n}", f"pgbh{n}h", f"pgbh{n}n"
    host_ip, ns_ip = f"10.211.{n}.1", f"10.211.{n}.2"
    sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", host_if, check=False)
    sh("ip", "netns", "add", ns)
    procs = []
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        hop = free_port()
        # Own process groups: socat forks a child per connection, and a half-open connection left by the
        # blackhole keeps its child (and the PostgreSQL backend behind it) alive until the group is killed.
        procs.append(subprocess.Popen(["socat", f"TCP-LISTEN:{hop},bind={host_ip},fork,reuseaddr",
                                       f"TCP:127.0.0.1:{pg_port()}"], stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "socat", "TCP-LISTEN:5432,fork,reuseaddr",
                                       f"TCP:{host_ip}:{hop}"], stderr=subprocess.DEVNULL, start_new_session=True))
        time.sleep(0.5)
        # The namespace's end goes down: the host's end loses its carrier and drops what it is given, with no
        # error to the sender (tc netem would do the same; this kernel has no netem module).
        link = lambda state: sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, state)  # noqa: E731

        def heal():
            link("up")
            sh("ip", "neigh", "flush", "dev", host_if, check=False)  # neighbour entries that failed while down

        yield {"host": ns_ip, "port": 5432, "drop": lambda: link("down"), "heal": heal,
               "close": lambda: _kill_groups(procs)}
    finally:
        _kill_groups(procs)
        sh("ip", "link", "del", host_if, check=False)
        sh("ip", "netns", "del", ns, check=False)


def _kill_groups(procs):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=5)


def test_tcp_user_timeout_ends_a_statement_sent_into_a_blackhole(start_proxy, path, pg_admin):
    proxy = start_proxy(pool_size=2, upstream=f"postgres://app:app@{path['host']}:{path['port']}",
                        upstream_toml="sslmode = \"disable\"",
                        server_toml=f"tcp_user_timeout_ms = {USER_TIMEOUT_MS}", extra_toml="[cache]\nenabled = false\n")
    with psycopg.connect(proxy.dsn(), autocommit=True, connect_timeout=10) as c:
        c.execute("BEGIN")
        assert c.execute("SELECT 1").fetchone()[0] == 1  # the path works; the server connection is held
        path["drop"]()
        try:
            t0 = time.monotonic()
            with pytest.raises(psycopg.Error) as err:
                c.execute("SELECT 2")
            took = time.monotonic() - t0
        finally:
            path["heal"]()
    assert err.value.sqlstate == "08006", (err.value.sqlstate, str(err.value))
    assert USER_TIMEOUT_MS / 1000 - 0.5 <= took < USER_TIMEOUT_MS / 1000 + 8, took
    # The path is back (once the link's neighbour entries are relearnt): new statements get a fresh server
    # connection; until then each attempt fails with a clear error.
    def works():
        try:
            with psycopg.connect(proxy.dsn(), autocommit=True, connect_timeout=10) as c:
                return c.execute("SELECT 3").fetchone()[0] == 3
        except psycopg.OperationalError as e:
            assert e.sqlstate == "08001", (e.sqlstate, str(e))
            return False
    wait_until(works, 15, interval=0.5, message="statements through the healed path")
    wait_until(lambda: proxy.pool_status()["active"] == 0, 10, message="pool back to no active connection")
    # The blackholed connection's backend hangs on behind the relays' half-open connection (the network lost
    # pgpilot's close): gone with them, so no server connection stays in its transaction.
    path["close"]()
    wait_until(lambda: pg_admin.scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND"
                                       " backend_start >= %s AND state LIKE 'idle in transaction%%'",
                                       (proxy.started_at,), db="postgres") == 0, 15,
               message="no server connection left in a transaction")
