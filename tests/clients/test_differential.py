"""Differential tests: every scenario of diff_scenarios.py runs once directly against PostgreSQL and once
(twice with the result cache on) through pgpilot, and every backend message must be identical, field by
field, after the normalizations of the one EXCEPTIONS table below.

Why: a pooling proxy's promise is that clients cannot tell it is there. Driver tests check what drivers
happen to look at; this compares the raw protocol (tests/clients/wire.py, no driver), so a reordered
message, a missing NoticeResponse, an extra ParameterStatus, a changed error field or a row from another
client's state is a failure, reported as a message-by-message diff.

Each (scenario, pool mode, cache on/off) is its own test with its own pgpilot (pool of 3) and its own
scratch tables, so a failure points at one combination and state never leaks between tests.
"""
import difflib
import hashlib
import time
import uuid
from collections import namedtuple

import psycopg
import pytest

import wire
from conftest import metric, pg_host, pg_port
from diff_scenarios import RESET_SQL, SCENARIOS

POOL_SIZE = 3  # more than any scenario's concurrently open clients, so session mode never waits
BASE_PARAMS = {"application_name": "pgpilot-diff"}
ROLE = "pgpilot_diff_tenant"
CACHE = {"cache_on": "", "cache_off": "[cache]\nenabled = false\n"}
MAX_DIFF_LINES = 160
WARM_TABLES = {"bench": "pgbench_branches", "codebase": "projects", "workflow": "entity_types"}

# --- the exceptions: the only differences allowed, each inherent to any pooling proxy -------------------

Exc = namedtuple("Exc", "message what why normalize")


def _scram_server_first(data):
    attrs = dict(part.split("=", 1) for part in data.decode().split(","))
    attrs["r"], attrs["s"] = "<nonce>", "<salt>"
    return ",".join(f"{k}={v}" for k, v in attrs.items()).encode()


# (SQLSTATE, start of message) of the errors pgpilot raises itself where PostgreSQL would.
PROXY_RAISED = [("42P05", "prepared statement"), ("0A000", "cached plan must not change result type")]


def _proxy_raised(fields):
    if any(fields.get("C") == code and fields.get("M", "").startswith(m) for code, m in PROXY_RAISED):
        return {k: v for k, v in fields.items() if k not in ("F", "L", "R")}
    return fields


EXCEPTIONS = [
    Exc("BackendKeyData", "process id and secret key",
        "random per server process directly; a proxy must issue its own keys (a client's session spans many "
        "server processes and cancels are routed through it)", lambda f: ("<pid>", "<key>")),
    Exc("AuthenticationSASLContinue", "SCRAM nonce r= and salt s= (the iteration count i= is compared)",
        "the nonce is random on every login, also between two direct logins; the salt is that of the proxy's "
        "own verifier, because a proxy authenticates clients itself (it cannot replay one client's SCRAM "
        "exchange to a server connection another client opened)", _scram_server_first),
    Exc("AuthenticationSASLFinal", "SCRAM server signature v=",
        "an HMAC over the nonce and salt above, so it differs whenever they do (every login)",
        lambda f: b"v=<server signature>"),
    Exc("ParameterStatus", "order in the startup reply only (compared as a sorted multiset; values compared)",
        "PostgreSQL sends them in its GUC table's order, a proxy from its cache of the server's values; the "
        "protocol gives the order no meaning. ParameterStatus after startup (SET) is compared in order", None),
    Exc("ErrorResponse", "source location fields F, L, R of the two errors pgpilot raises in the server's place: "
        "42P05 'prepared statement ... already exists' and 0A000 'cached plan must not change result type'",
        "in transaction mode a client's statement names never reach a server (they map to pgpilot's own), and a "
        "stale description is found by pgpilot comparing a fresh Describe, so pgpilot itself answers with the "
        "SQLSTATE, message and severity PostgreSQL uses; PostgreSQL's source file and line (which change between "
        "server versions) are not a proxy's to know. Every other field is compared", _proxy_raised),
    Exc("NotificationResponse", "sender process id",
        "the notifying server process differs between any two runs (and is a pooled server's)",
        lambda f: ("<pid>",) + tuple(f[1:])),
]
# Not exceptions (nothing is normalized) but what the corpus avoids, for the same reason: the value differs
# between any two direct runs, or between a new and a reused server process, whoever is in between.
CORPUS_RULES = [
    "no now(), random(), pg_backend_pid(), clock or OID values in compared output (ORDER BY everywhere)",
    "current_setting('app.tenant', true) is read through nullif(.., ''): NULL in a new backend, '' in one where "
    "an earlier session defined the placeholder (no RESET or DISCARD undefines it), so it tells a reused "
    "server process apart even when no setting leaked",
    "writes are rolled back, undone, idempotent, or to the scratch table that reset() restores before each run",
]
_NORMALIZERS = {e.message: e.normalize for e in EXCEPTIONS if e.normalize}


def normalize(transcript):
    """Applies EXCEPTIONS; startup replies get their ParameterStatus messages sorted in place."""
    out = []
    for header, msgs in transcript:
        msgs = [(name, _NORMALIZERS[name](f)) if name in _NORMALIZERS else (name, f) for name, f in msgs]
        if header.endswith("startup"):
            statuses = sorted(m for m in msgs if m[0] == "ParameterStatus")
            if statuses:
                first = next(i for i, m in enumerate(msgs) if m[0] == "ParameterStatus")
                rest = [m for m in msgs if m[0] != "ParameterStatus"]
                msgs = rest[:first] + statuses + rest[first:]
        out.append((header, msgs))
    return out


# --- running a scenario ----------------------------------------------------------------------------------

def _short(value):
    if value is None:
        return "NULL"
    if len(value) <= 80:
        return repr(value)
    return f"<{len(value)} bytes sha1:{hashlib.sha1(value).hexdigest()[:12]} {value[:32]!r}...>"


def fmt(msg):
    name, f = msg
    if name in ("DataRow",):
        return f"{name} [{', '.join(_short(v) for v in f)}]"
    if name in ("CopyData", "FunctionCallResponse") or isinstance(f, bytes):
        return f"{name} {_short(f)}"
    if isinstance(f, dict):  # ErrorResponse / NoticeResponse fields, in the order received
        return f"{name} " + " ".join(f"{k}={v!r}" for k, v in f.items())
    return name if f is None else f"{name} {f!r}"


def reset(host, port, ctx):
    """Restores the scratch table on the target itself (through pgpilot too, so its cache sees the write), and
    only when its content differs from the seeded one: an unneeded write would invalidate the cache and keep
    the second cache_on run of a read scenario from being answered from it. The check bypasses the cache."""
    conn = wire.connect(host, port, "app", "app", "app", BASE_PARAMS)
    try:
        if conn.startup[-1][0] != "ReadyForQuery":
            raise wire.WireError(f"reset login failed: {conn.startup}")
        if ctx.seeded is None or wire.simple(conn, CHECK_SQL.format(t=ctx.t)) != ctx.seeded:
            wire.simple(conn, RESET_SQL.format(t=ctx.t))
    finally:
        conn.terminate()


def run_scenario(host, port, scenario, ctx):
    """Runs the scenario on fresh connections; returns [(header, [decoded backend messages])]."""
    reset(host, port, ctx)
    conns, transcript = {}, []
    try:
        for i, step in enumerate(scenario.build(ctx)):
            if step.msgs is None:
                transcript.append((f"#{i} conn {step.conn}: Terminate", conns.pop(step.conn).terminate()))
                continue
            if step.conn not in conns:
                params = {**BASE_PARAMS, **scenario.conn_params.get(step.conn, {})}
                conns[step.conn] = wire.connect(host, port, "app", scenario.db, "app", params)
                transcript.append((f"conn {step.conn}: startup", conns[step.conn].startup))
            sent = " ".join(wire.summarize(m) for m in step.msgs)
            header = f"#{i} conn {step.conn}: {sent[:300]}{'...' if len(sent) > 300 else ''}"
            transcript.append((header, conns[step.conn].exchange(step.msgs, step.until)))
    finally:
        for n in sorted(conns):
            transcript.append((f"end conn {n}: Terminate", conns[n].terminate()))
    return transcript


def _lines(transcript):
    lines = []
    for header, msgs in transcript:
        lines.append(f"== {header}")
        lines.extend(f"   {fmt(m)}" for m in msgs)
    return lines


def _comparable(transcript):
    """Error/notice fields as ordered pairs: their order is compared too (dicts would ignore it)."""
    return [(h, [(n, tuple(f.items()) if isinstance(f, dict) else f) for n, f in msgs]) for h, msgs in transcript]


def diff(direct, proxied, label):
    """'' when equal after normalization, else a unified message-by-message diff (direct = '-')."""
    a, b = normalize(direct), normalize(proxied)
    if _comparable(a) == _comparable(b):
        return ""
    lines = list(difflib.unified_diff(_lines(a), _lines(b), "direct PostgreSQL", label, lineterm="", n=4))
    if not lines:  # equal text, unequal values (e.g. two long values with the same prefix and hash prefix)
        lines = [f"{label}: transcripts differ in values the formatted text does not show"]
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... ({len(lines) - MAX_DIFF_LINES} more diff lines)"]
    return "\n".join(lines)


# --- fixtures --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def diff_env(pg_admin):
    """Module setup: the tenant role app may SET ROLE to, workflow's load_markers (as mcp_load.py creates
    it) and three work_items roots. The role is dropped afterwards."""
    pg_admin.execute(f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN"
                     f" CREATE ROLE {ROLE} NOLOGIN; END IF; END$$")
    pg_admin.execute(f"GRANT {ROLE} TO app")
    pg_admin.execute("CREATE TABLE IF NOT EXISTS load_markers (k TEXT PRIMARY KEY, v BIGINT NOT NULL)", db="workflow")
    pg_admin.execute("GRANT ALL ON load_markers TO app", db="workflow")
    with pg_admin.connect("workflow") as conn:
        roots = [str(r[0]) for r in conn.execute(
            "SELECT id FROM work_items WHERE parent_id IS NULL AND deleted_at IS NULL ORDER BY created_at, id"
            " LIMIT 3").fetchall()]
    assert len(roots) == 3, f"workflow database has too few root work_items: {roots}"
    yield {"roots": roots}
    try:
        pg_admin.execute(f"DROP ROLE IF EXISTS {ROLE}")
    except psycopg.Error:  # still referenced by a table another test is using: harmless, recreated next time
        pass


Ctx = namedtuple("Ctx", "t t_rls role roots seeded")
CHECK_SQL = "/* pgpilot:nocache */ SELECT count(*), md5(string_agg(s::text, ',' ORDER BY id)) FROM {t} s"


@pytest.fixture
def ctx(diff_env):
    """Fresh scratch tables for one test, created (and dropped) by app in database app over the wire."""
    t = f"diff_{uuid.uuid4().hex[:10]}"
    conn = wire.connect(pg_host(), pg_port(), "app", "app", "app")
    for sql in (f"CREATE TABLE {t} (id int PRIMARY KEY, tenant text NOT NULL, note text, amount numeric(10,2),"
                f" payload bytea)",
                f"GRANT SELECT (id, tenant) ON {t} TO {ROLE}",
                f"CREATE TABLE {t}_rls (id int PRIMARY KEY, tenant text NOT NULL)",
                f"INSERT INTO {t}_rls SELECT g, CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 9) g",
                f"ALTER TABLE {t}_rls ENABLE ROW LEVEL SECURITY", f"ALTER TABLE {t}_rls FORCE ROW LEVEL SECURITY",
                f"CREATE POLICY tenant_only ON {t}_rls USING (tenant = current_setting('app.tenant', true))"):
        wire.simple(conn, sql)
    wire.simple(conn, RESET_SQL.format(t=t))
    seeded = wire.simple(conn, CHECK_SQL.format(t=t))
    conn.terminate()
    yield Ctx(t, f"{t}_rls", ROLE, diff_env["roots"], seeded)
    conn = wire.connect(pg_host(), pg_port(), "app", "app", "app")
    wire.simple(conn, f"DROP TABLE IF EXISTS {t}, {t}_rls")
    conn.terminate()


# --- the tests -------------------------------------------------------------------------------------------

def test_exceptions_table_is_justified():
    """Every exception names what it hides and why; nothing else may differ."""
    for e in EXCEPTIONS:
        assert e.message and e.what and len(e.why) > 40, e
    assert all(len(rule) > 40 for rule in CORPUS_RULES)


def test_wire_client_logins():
    """wire.py itself: SCRAM (app), md5 (md5user) and a wrong password, directly against PostgreSQL."""
    ok = wire.connect(pg_host(), pg_port(), "app", "app", "app")
    assert [m[0] for m in ok.startup[:4]] == ["AuthenticationSASL", "AuthenticationSASLContinue",
                                              "AuthenticationSASLFinal", "AuthenticationOk"], ok.startup
    assert ok.startup[-1] == ("ReadyForQuery", "I") and ok.terminate() == []
    md5 = wire.connect(pg_host(), pg_port(), "md5user", "app", "md5pass")
    assert md5.startup[0][0] == "AuthenticationMD5Password" and md5.startup[-1] == ("ReadyForQuery", "I")
    md5.terminate()
    bad = wire.connect(pg_host(), pg_port(), "app", "app", "wrong")
    assert bad.startup[-1][0] == "ErrorResponse" and bad.startup[-1][1]["C"] == "28P01", bad.startup
    bad.terminate()


def warm_cache(proxy, db, table, timeout=20.0):
    """Waits until pgpilot answers a read of `table` in `db` from its cache. A fresh pgpilot caches nothing
    until it has loaded the database's relation list in the background, so without this the cache_on runs
    of a short scenario would only be relayed. The probe's text differs from every scenario's statements."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = metric(proxy, "pgpilot_cache_hits_total")
        conn = wire.connect(proxy.host, proxy.port, "app", db, "app", BASE_PARAMS)
        for _ in range(2):
            wire.simple(conn, f"SELECT count(*) AS pgpilot_diff_warmup FROM {table}")
        conn.terminate()
        if metric(proxy, "pgpilot_cache_hits_total") > before:
            return
        time.sleep(0.05)
    pytest.fail(f"pgpilot never answered a read of {db}.{table} from its cache within {timeout}s", pytrace=False)


def test_cache_on_runs_are_answered_from_the_cache(start_proxy, ctx):
    """Guards the harness: with the cache on (and warmed), a second run of a read scenario really gets cache
    hits, so the cache_on tests compare cached replies, not only relayed ones."""
    proxy = start_proxy(pool_size=POOL_SIZE)
    warm_cache(proxy, "app", ctx.t)
    run_scenario(proxy.host, proxy.port, SCENARIOS["extended_unnamed"], ctx)
    before = metric(proxy, "pgpilot_cache_hits_total")
    run_scenario(proxy.host, proxy.port, SCENARIOS["extended_unnamed"], ctx)
    assert metric(proxy, "pgpilot_cache_hits_total") > before


@pytest.mark.parametrize("cache", list(CACHE))
@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_differential(name, mode, cache, start_proxy, ctx):
    """Direct, then pgpilot (twice with the cache on: the second run may be answered from the cache)."""
    scenario = SCENARIOS[name]
    proxy = start_proxy(pool_size=POOL_SIZE, mode=mode, extra_toml=CACHE[cache])
    if cache == "cache_on":
        warm_cache(proxy, "app", ctx.t)
        if scenario.db != "app":
            warm_cache(proxy, scenario.db, WARM_TABLES[scenario.db])
    direct = run_scenario(pg_host(), pg_port(), scenario, ctx)
    if any(m[0] in ("TIMEOUT", "EOF") for _, msgs in direct for m in msgs):
        pytest.fail("the direct run itself timed out or lost its connection:\n" + "\n".join(_lines(direct)))
    problems = []
    for run in range(1, 3 if cache == "cache_on" else 2):
        label = f"pgpilot {mode} {cache} run {run}"
        try:
            proxied = run_scenario(proxy.host, proxy.port, scenario, ctx)
        except wire.WireError as exc:  # e.g. the reset before the run failed: state left by the previous run
            problems.append(f"{label}: {exc}")
            break
        text = diff(direct, proxied, label)
        if text:
            problems.append(text)
    if problems:
        pytest.fail(f"{name}: pgpilot's replies differ from PostgreSQL's\n" + "\n\n".join(problems), pytrace=False)
