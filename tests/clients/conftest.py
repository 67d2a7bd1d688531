"""Fixtures for the driver tests: a real pgpilot process in front of the harness's PostgreSQL.

Environment (exported by tests/run.sh via tests/harness.sh):
  PGPILOT_BIN                  the built proxy (target/release/pgpilot); missing -> the tests FAIL, never skip
  TEST_PG_HOST, TEST_PG_PORT   the throwaway PostgreSQL (roles app/app, postgres trusted)
  PG_BIN                       directory with psql / pgbench matching that server

Fixtures:
  proxy        module-scoped pgpilot, pool max_size 5, transaction mode
  start_proxy  factory: start_proxy(pool_size=5, mode="transaction", extra_toml="", upstream_port=None,
               upstream=None, upstream_toml="", server_toml="") -> Proxy, stopped after the test
  pg_admin     helper opening direct psycopg connections to PostgreSQL as the superuser (bypassing pgpilot)
  table        a fresh table (task, seq, note) in database app owned by app, dropped afterwards
A proxy that dies, panics, ignores SIGTERM or exits non-zero after it is reported as an error at teardown.
"""
import asyncio
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# codebase-mcp's vector search, as ../shared/workload/mcp_load.py sends it (used by several test modules).
SEARCH_SQL = """
SELECT code_chunks.id AS chunk_id, code_chunks.content, code_chunks.start_line, code_chunks.end_line,
       code_files.path AS file_path, code_files.relative_path,
       $1::INTEGER - (code_chunks.embedding <=> $2::vector) / CAST($3::INTEGER AS NUMERIC) AS similarity
FROM code_chunks JOIN code_files ON code_chunks.code_file_id = code_files.id
WHERE code_chunks.embedding IS NOT NULL AND code_files.is_deleted = false
  AND code_files.relative_path LIKE $4::VARCHAR
ORDER BY code_chunks.embedding <=> $2::vector LIMIT $5::INTEGER"""
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def require_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the driver tests through tests/run.sh (it exports it)", pytrace=False)
    return value


def pg_host():
    return os.environ.get("TEST_PG_HOST", "127.0.0.1")


def pg_port():
    return int(require_env("TEST_PG_PORT"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_async(coro, timeout):
    """Runs a coroutine to completion, failing (not hanging) after `timeout` seconds."""
    async def bounded():
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=10)
            pytest.fail(f"test body did not finish within {timeout}s (hang?)", pytrace=False)
        return task.result()  # the body's own exceptions (assertions, driver errors) propagate unchanged
    return asyncio.run(bounded())


class Proxy:
    """One pgpilot process. `port` is the client port, `http_port` the /health + /metrics port."""

    def __init__(self, workdir, pool_size=5, mode="transaction", extra_toml="", upstream_port=None):
        self.workdir = Path(workdir)
        self.upstream = f"postgres://app:app@{pg_host()}:{upstream_port or pg_port()}"
        self.pool_size = pool_size
        self.mode = mode
        self.extra_toml = extra_toml
        self.upstream_toml = ""  # more [upstream] keys (sslmode, ...)
        self.server_toml = ""  # more [server] keys (tcp_user_timeout_ms, ...)
        self.host = "127.0.0.1"
        self.port = self.http_port = None
        self.proc = None
        self.started_at = None
        self.stderr_path = self.workdir / "pgpilot.stderr"

    def dsn(self, db="app", user="app", password="app"):
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{db}"

    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _config(self):
        return (f"[server]\nshutdown_timeout_ms = 2000\n{self.server_toml}\n\n"
                f"[upstream]\nurl = \"{self.upstream}\"\n{self.upstream_toml}\n\n"
                f"[pool]\nmode = \"{self.mode}\"\nmax_size = {self.pool_size}\n"
                f"{self.extra_toml}\n")

    def start(self):
        binary = require_env("PGPILOT_BIN")
        if not os.access(binary, os.X_OK):
            pytest.fail(f"PGPILOT_BIN={binary} is not an executable file (was `cargo build --release` run?)",
                        pytrace=False)
        config = self.workdir / "pgpilot.toml"
        config.write_text(self._config())
        # Only the flags and the file configure the instance: drop PGPILOT_* / DATABASE_URL from the environment
        # (but PGPILOT_LOG, the log filter, passes: `PGPILOT_LOG=pgpilot::cache=trace pytest ...` to debug).
        env = {k: v for k, v in os.environ.items() if (not k.startswith("PGPILOT_") or k == "PGPILOT_LOG") and k != "DATABASE_URL"}
        env.setdefault("RUST_LOG", "info")
        for attempt in range(3):  # a free port can be taken between probing and binding: retry on new ports
            self.port, self.http_port = free_port(), free_port()
            self.started_at = dt.datetime.now(dt.timezone.utc)
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [binary, "--config", str(config), "--listen", f"127.0.0.1:{self.port}",
                     "--http-listen", f"127.0.0.1:{self.http_port}",
                     "--upstream", self.upstream, "--pool-mode", self.mode],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, env=env)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    socket.create_connection((self.host, self.port), timeout=0.5).close()
                    return self
                except OSError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                self._kill()
                pytest.fail(f"pgpilot did not accept TCP connections on {self.port} within {STARTUP_TIMEOUT}s;"
                            f" output:\n{self.stderr_text()}", pytrace=False)
            text = self.stderr_text()
            if "in use" not in text.lower() or attempt == 2:
                pytest.fail(f"pgpilot exited with code {self.proc.returncode} during startup; output:\n{text}",
                            pytrace=False)

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self):
        """SIGTERM, wait, SIGKILL. Returns a list of problems (crash, panic, unclean exit) for the caller to report."""
        if self.proc is None:
            return []
        problems = []
        if self.proc.poll() is not None:
            problems.append(f"pgpilot died during the test (exit code {self.proc.returncode})")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=STOP_TIMEOUT)
                if rc != 0:
                    problems.append(f"pgpilot exited with code {rc} after SIGTERM (expected 0)")
            except subprocess.TimeoutExpired:
                self._kill()
                problems.append(f"pgpilot ignored SIGTERM for {STOP_TIMEOUT}s and was killed")
        text = self.stderr_text()
        if "panicked at" in text:
            problems.append("pgpilot panicked")
        if problems:
            problems.append("pgpilot output (last 4000 chars):\n" + text[-4000:])
        self.proc = None
        return problems

    # --- HTTP side -------------------------------------------------------------------------------------------
    def http_get(self, path, timeout=5.0):
        """(status, body text) of GET http://127.0.0.1:<http_port><path>; non-2xx statuses are returned, not raised."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def pool_status(self):
        status, body = self.http_get("/health/status")
        assert status in (200, 503), f"/health/status answered {status}: {body[:500]}"
        return json.loads(body)["connection_pool"]


def wait_until(predicate, timeout, interval=0.05, message="condition"):
    """Polls `predicate` until it returns a truthy value; fails after `timeout` seconds. Returns that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{message} not reached within {timeout}s (last value: {last!r})", pytrace=False)


class PgAdmin:
    """Direct superuser access to the harness PostgreSQL (never through pgpilot)."""

    def connect(self, db="app"):
        return psycopg.connect(host=pg_host(), port=pg_port(), user="postgres", dbname=db, autocommit=True,
                               connect_timeout=10)

    def execute(self, sql, params=None, db="app"):
        with self.connect(db) as conn:
            conn.execute(sql, params)

    def scalar(self, sql, params=None, db="app"):
        with self.connect(db) as conn:
            return conn.execute(sql, params).fetchone()[0]

    def app_backends(self, db, since):
        """Live backends of user app on `db` that started at/after `since` (i.e. opened by that proxy)."""
        return self.scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = %s"
                           " AND backend_start >= %s", (db, since))


class BackendSampler:
    """Samples the number of upstream app backends in a background thread; `.max` is the highest count seen."""

    def __init__(self, admin, db, since, interval=0.02):
        self.admin, self.db, self.since, self.interval = admin, db, since, interval
        self.max = 0
        self.samples = 0
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            with self.admin.connect(self.db) as conn:
                while not self._stop.is_set():
                    n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'"
                                     " AND datname = %s AND backend_start >= %s", (self.db, self.since)).fetchone()[0]
                    self.max = max(self.max, n)
                    self.samples += 1
                    self._stop.wait(self.interval)
        except Exception as exc:  # reported by __exit__
            self.error = exc

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        assert self.error is None, f"backend sampler failed: {self.error!r}"
        assert self.samples > 0, "backend sampler took no samples"


@pytest.fixture(scope="session")
def pg_admin():
    return PgAdmin()


@pytest.fixture
def table(pg_admin):
    """A fresh table (task int, seq int, note text, PK (task, seq)) in database app, owned by app; dropped after."""
    name = f"pgpilot_t_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f"CREATE TABLE {name} (task int NOT NULL, seq int NOT NULL, note text, PRIMARY KEY (task, seq))")
    pg_admin.execute(f"ALTER TABLE {name} OWNER TO app")
    yield name
    pg_admin.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    p = Proxy(tmp_path_factory.mktemp("pgpilot")).start()
    yield p
    problems = p.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def start_proxy(tmp_path):
    started = []

    def start(pool_size=5, mode="transaction", extra_toml="", upstream_port=None, upstream=None, upstream_toml="",
              server_toml=""):
        p = Proxy(tempfile.mkdtemp(dir=tmp_path), pool_size=pool_size, mode=mode, extra_toml=extra_toml,
                  upstream_port=upstream_port)
        if upstream:  # a whole URL: another host name or user (the TLS tests)
            p.upstream = upstream
        p.upstream_toml, p.server_toml = upstream_toml, server_toml
        started.append(p)
        return p.start()

    yield start
    problems = [msg for p in started for msg in p.stop()]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ../shared/workload/mcp_load.py, the MCP-shaped asyncpg load driver.
MCP_LOAD = REPO_ROOT.parent / "shared" / "workload" / "mcp_load.py"
# Every operation but readback: the script's stale-read check races between concurrent clients
# (two writers of one key), so readback runs separately with one client.
ALL_BUT_READBACK = "search=30,registry=15,hierarchy=15,list=10,entity=10,nplus1=2,write=10"


def run_mcp_load(proxy, tmp_path, name, *args, duration, statement_cache="0"):
    """Runs mcp_load.py through `proxy` and checks it ran clean; returns (summary, ok count per op).
    statement_cache=None keeps asyncpg's default cache (named prepared statements)."""
    assert MCP_LOAD.is_file(), f"{MCP_LOAD} is missing (../shared is part of the test setup)"
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, str(MCP_LOAD), "--host", proxy.host, "--port", str(proxy.port), "--user", "app",
           "--password", "app", "--codebase-db", "codebase", "--workflow-db", "workflow",
           "--duration", str(duration), "--json", str(out), *args]
    if statement_cache is not None:
        cmd += ["--statement-cache", statement_cache]
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
    return summary, done


async def connect_all(connect, n, close):
    """Opens n client connections at once with `connect()`; fails the test (closing the ones that
    opened) if any of them fails."""
    conns = await asyncio.gather(*(connect() for _ in range(n)), return_exceptions=True)
    failed = [repr(c) for c in conns if isinstance(c, BaseException)]
    if failed:
        await close([c for c in conns if not isinstance(c, BaseException)])
        pytest.fail(f"{len(failed)} of {n} connects failed: {failed[:3]}")
    return conns


async def asyncpg_close_all(conns):
    await asyncio.gather(*(c.close(timeout=5) for c in conns), return_exceptions=True)


# --- isolation tests (test_isolation_*.py) ---------------------------------------------------------------------

def direct_dsn(db="app", user="app", password="app"):
    """A DSN straight to the harness PostgreSQL (bypassing pgpilot)."""
    return f"postgresql://{user}:{password}@{pg_host()}:{pg_port()}/{db}"


def metrics(proxy):
    """{series name: value} from /metrics, each series summed over its label sets."""
    status, body = proxy.http_get("/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:500]}"
    values = {}
    for line in body.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            values[m.group(1)] = values.get(m.group(1), 0.0) + float(m.group(3))
    return values


def metric(proxy, name):
    """One series from /metrics, summed over its label sets; it must be exported."""
    values = metrics(proxy)
    assert name in values, f"{name} is not exported at /metrics"
    return values[name]


def cache_status(proxy):
    """The `cache` object of /health/status."""
    status, body = proxy.http_get("/health/status")
    assert status in (200, 503), f"/health/status answered {status}: {body[:500]}"
    return json.loads(body)["cache"]


def wait_cache_ready(proxy, table, db="app", timeout=10):
    """Waits until a repeated `SELECT count(*) FROM table` through `proxy` is a cache hit (the database's
    list of ordinary tables loads in the background on first use, on a server connection of its own; until then
    nothing is cached). Each attempt is a new client, so that in session mode a pool of 1 is free in between."""
    def warmed():
        with psycopg.connect(proxy.dsn(db), autocommit=True, connect_timeout=10) as c:
            before = cache_status(proxy)["hits"]
            c.execute(f"SELECT count(*) FROM {table}", prepare=False)
            return cache_status(proxy)["hits"] > before
    wait_until(warmed, timeout, message=f"the result cache answering reads of {table}")


@pytest.fixture
def admin_cleanup(pg_admin):
    """Collects superuser SQL to run (in reverse order, each on its own, errors ignored) after the test.
    Request it before `start_proxy` so that it runs after the proxies have stopped."""
    statements = []
    yield statements.append
    for sql in reversed(statements):
        try:
            pg_admin.execute(sql)
        except psycopg.Error:
            pass


@pytest.fixture
def cached_proxy(admin_cleanup, start_proxy, pg_admin):
    """Factory: cached_proxy(mode, pool_size, extra_toml="") -> a started Proxy whose result cache is already
    answering reads (warmed on a table of its own). Create the test's tables before calling it: the list of
    cacheable tables is read when the cache is first used."""
    def start(mode, pool_size, extra_toml=""):
        warm = f"pgpilot_iso_warm_{uuid.uuid4().hex[:10]}"
        pg_admin.execute(f"CREATE TABLE {warm} (a int)")
        pg_admin.execute(f"ALTER TABLE {warm} OWNER TO app")
        admin_cleanup(f"DROP TABLE IF EXISTS {warm}")
        proxy = start_proxy(pool_size=pool_size, mode=mode, extra_toml=extra_toml)
        wait_cache_ready(proxy, warm)
        return proxy
    return start
