"""Isolation between clients that share pooled server connections and the result cache: session state
(custom settings, SET ROLE, search_path, advisory locks) stays with the client that set it, and a cached
result is never served where PostgreSQL would answer differently (other settings, other role, a table the
statement reads that the cache did not see, a table an RLS policy reads).

Every test runs in transaction and in session mode, with the result cache on (the default) and a pool of 2
server connections, which clients running one statement at a time share. The same steps run directly against
PostgreSQL first and the proxy must give the same observations.
"""
import uuid

import psycopg
import pytest

from conftest import direct_dsn

MODES = ["transaction", "session"]


def uid():
    return uuid.uuid4().hex[:10]


def connect(dsn):
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def sessions_pool(mode):
    """2 server connections: two clients can be connected at once in session mode (a session holds its server
    connection until it disconnects) and in transaction mode when the proxy pins a client whose state it cannot
    replay; otherwise clients running one statement at a time share the most recently used connection."""
    return 2


def outcome(conn, sql):
    """Rows of `sql`, or the SQLSTATE it failed with."""
    try:
        return conn.execute(sql).fetchall()
    except psycopg.Error as exc:
        return exc.sqlstate


# --- 1. custom settings (RLS tenant) --------------------------------------------------------------------------

TENANT_WAYS = {
    "set": "SET app.tenant = '{t}'",
    "set_config": "SELECT set_config('app.tenant', '{t}', false)",
    "user_function": "SELECT {fn}('{t}')",
    "do_block": "DO $$BEGIN PERFORM set_config('app.tenant', '{t}', false); END$$",
    "mixed_case": "SET App.Tenant = '{t}'",
    "quoted_name": "SET \"app\".\"tenant\" = '{t}'",
}


def tenant_story(dsn, table, set_tenant):
    read = f"SELECT secret FROM {table} ORDER BY secret"
    seen = {}
    with connect(dsn) as a:
        a.execute(set_tenant("t1"))
        seen["a reads"] = [a.execute(read).fetchall() for _ in range(2)]
        with connect(dsn) as b:
            b.execute(set_tenant("t2"))
            seen["b setting"] = b.execute("SELECT current_setting('app.tenant')").fetchone()[0]
            seen["b reads"] = [b.execute(read).fetchall() for _ in range(2)]
            seen["a reads again"] = a.execute(read).fetchall()
            seen["a setting"] = a.execute("SELECT current_setting('app.tenant')").fetchone()[0]
    with connect(dsn) as c:
        seen["new client reads"] = c.execute(read).fetchall()
        value = c.execute("SELECT current_setting('app.tenant', true)").fetchone()[0]
        # A fresh backend says NULL; one where the placeholder was once set and then RESET says ''
        # (PostgreSQL keeps the placeholder): both mean "never set by this client".
        seen["new client setting"] = None if value == "" else value
    return seen


@pytest.mark.parametrize("way", list(TENANT_WAYS))
@pytest.mark.parametrize("mode", MODES)
def test_custom_setting_stays_with_its_client(mode, way, pg_admin, admin_cleanup, cached_proxy):
    """A custom setting (app.tenant, however it is set) used by a row-level-security policy reaches neither
    another client's cached reads nor a later client of the same server connection, exactly as on direct
    connections."""
    n = uid()
    table, fn = f"pgpilot_iso_rls_{n}", f"pgpilot_iso_tenant_{n}"
    admin_cleanup(f"DROP FUNCTION IF EXISTS {fn}(text)")
    admin_cleanup(f"DROP TABLE IF EXISTS {table}")
    pg_admin.execute(f"CREATE TABLE {table} (tenant text, secret text)")  # owned by postgres: app is subject to RLS
    pg_admin.execute(f"INSERT INTO {table} VALUES ('t1', 'secret of t1'), ('t2', 'secret of t2')")
    pg_admin.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    pg_admin.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    pg_admin.execute(f"CREATE POLICY tenant_only ON {table} USING (tenant = current_setting('app.tenant', true))")
    pg_admin.execute(f"GRANT SELECT ON {table} TO app")
    pg_admin.execute(f"CREATE FUNCTION {fn}(t text) RETURNS text LANGUAGE sql"
                     f" AS $$ SELECT set_config('app.tenant', t, false) $$")

    def set_tenant(t):
        return TENANT_WAYS[way].format(t=t, fn=fn)

    expected = {
        "a reads": [[("secret of t1",)]] * 2,
        "b setting": "t2",
        "b reads": [[("secret of t2",)]] * 2,
        "a reads again": [("secret of t1",)],
        "a setting": "t1",
        "new client reads": [],
        "new client setting": None,
    }
    assert tenant_story(direct_dsn(), table, set_tenant) == expected, "direct PostgreSQL"
    proxy = cached_proxy(mode, sessions_pool(mode))
    assert tenant_story(proxy.dsn(), table, set_tenant) == expected


# --- 2. SET ROLE ------------------------------------------------------------------------------------------------

def role_story(dsn, table, role):
    read = f"SELECT v FROM {table}"
    seen = {}
    with connect(dsn) as a:
        seen["a reads"] = [outcome(a, read) for _ in range(2)]
        a.execute(f"SET ROLE {role}")
        seen["a current_user"] = a.execute("SELECT current_user").fetchone()[0]
        seen["a reads as role"] = [outcome(a, read) for _ in range(2)]
        with connect(dsn) as b:
            seen["b current_user"] = b.execute("SELECT current_user").fetchone()[0]
            seen["b reads"] = outcome(b, read)
        seen["a current_user again"] = a.execute("SELECT current_user").fetchone()[0]
    with connect(dsn) as c:
        seen["new client users"] = c.execute("SELECT current_user, session_user").fetchone()
        seen["new client reads"] = outcome(c, read)
    return seen


@pytest.mark.parametrize("mode", MODES)
def test_set_role_stays_with_its_client(mode, pg_admin, admin_cleanup, cached_proxy):
    """After SET ROLE to a role that may not read a table, that client's reads fail with 42501 as on a direct
    connection (never a cached result of the login role), and no other or later client runs as that role."""
    n = uid()
    table, role = f"pgpilot_iso_secret_{n}", f"pgpilot_iso_low_{n}"
    admin_cleanup(f"DROP ROLE IF EXISTS {role}")
    admin_cleanup(f"DROP TABLE IF EXISTS {table}")
    pg_admin.execute(f"CREATE ROLE {role} NOLOGIN")
    pg_admin.execute(f"GRANT {role} TO app")
    pg_admin.execute(f"CREATE TABLE {table} (v text)")
    pg_admin.execute(f"INSERT INTO {table} VALUES ('only app may read this')")
    pg_admin.execute(f"ALTER TABLE {table} OWNER TO app")
    rows = [("only app may read this",)]
    expected = {
        "a reads": [rows, rows],
        "a current_user": role,
        "a reads as role": ["42501", "42501"],
        "b current_user": "app",
        "b reads": rows,
        "a current_user again": role,
        "new client users": ("app", "app"),
        "new client reads": rows,
    }
    assert role_story(direct_dsn(), table, role) == expected, "direct PostgreSQL"
    proxy = cached_proxy(mode, sessions_pool(mode))
    assert role_story(proxy.dsn(), table, role) == expected


# Logins through the proxy: app (the upstream URL's user) and the superuser postgres (trusted upstream), so that
# SET SESSION AUTHORIZATION can be tried.
SUPERUSER_LOGIN = """
[[users]]
name = "app"
password = "app"

[[users]]
name = "postgres"
password = "pgpilot-iso"
server_password = ""
"""


def session_authorization_story(dsn, table, role):
    read = f"SELECT v FROM {table}"
    users = "SELECT current_user, session_user"
    seen = {}
    with connect(dsn) as a:
        seen["a reads"] = [outcome(a, read) for _ in range(2)]
        a.execute(f"SET SESSION AUTHORIZATION {role}")
        seen["a users"] = a.execute(users).fetchone()
        seen["a reads as role"] = [outcome(a, read) for _ in range(2)]
        with connect(dsn) as b:
            seen["b users"] = b.execute(users).fetchone()
            seen["b reads"] = outcome(b, read)
        seen["a users again"] = a.execute(users).fetchone()
    with connect(dsn) as c:
        seen["new client users"] = c.execute(users).fetchone()
        seen["new client reads"] = outcome(c, read)
    return seen


@pytest.mark.parametrize("mode", MODES)
def test_set_session_authorization_stays_with_its_client(mode, pg_admin, admin_cleanup, cached_proxy):
    """A superuser client's SET SESSION AUTHORIZATION to a role that may not read a table makes that client's
    reads fail with 42501 as on a direct connection, and no other or later client runs as that role."""
    n = uid()
    table, role = f"pgpilot_iso_su_secret_{n}", f"pgpilot_iso_auth_{n}"
    admin_cleanup(f"DROP ROLE IF EXISTS {role}")
    admin_cleanup(f"DROP TABLE IF EXISTS {table}")
    pg_admin.execute(f"CREATE ROLE {role} NOLOGIN")
    pg_admin.execute(f"CREATE TABLE {table} (v text)")  # owned by postgres, no grants
    pg_admin.execute(f"INSERT INTO {table} VALUES ('only postgres may read this')")
    rows = [("only postgres may read this",)]
    expected = {
        "a reads": [rows, rows],
        "a users": (role, role),
        "a reads as role": ["42501", "42501"],
        "b users": ("postgres", "postgres"),
        "b reads": rows,
        "a users again": (role, role),
        "new client users": ("postgres", "postgres"),
        "new client reads": rows,
    }
    assert session_authorization_story(direct_dsn(user="postgres", password=""), table, role) == expected, \
        "direct PostgreSQL"
    proxy = cached_proxy(mode, sessions_pool(mode), extra_toml=SUPERUSER_LOGIN)
    assert session_authorization_story(proxy.dsn(user="postgres", password="pgpilot-iso"), table, role) == expected


# --- 3. spellings the statement scan must not miss ----------------------------------------------------------------

SEARCH_PATH_WAYS = {
    "mixed_case": "SELECT Set_Config('search_path', 'evil', false)",
    "quoted": "SELECT \"set_config\"('search_path', 'evil', false)",
    "schema_qualified": "SELECT pg_catalog.set_config('search_path', 'evil', false)",
}


def search_path_story(dsn, statement):
    seen = {}
    with connect(dsn) as a:
        a.execute(statement)
        seen["a"] = a.execute("SHOW search_path").fetchone()[0]
        with connect(dsn) as b:
            seen["b"] = b.execute("SHOW search_path").fetchone()[0]
        seen["a again"] = a.execute("SHOW search_path").fetchone()[0]
    with connect(dsn) as c:
        seen["new client"] = c.execute("SHOW search_path").fetchone()[0]
    return seen


@pytest.mark.parametrize("way", list(SEARCH_PATH_WAYS))
@pytest.mark.parametrize("mode", MODES)
def test_set_config_spellings_do_not_leak_search_path(mode, way, cached_proxy):
    """set_config('search_path', ...) spelt in mixed case, quoted or schema-qualified stays with its client:
    another or a later client of the same server connection sees the default search_path, as direct."""
    expected = {"a": "evil", "b": '"$user", public', "a again": "evil", "new client": '"$user", public'}
    assert search_path_story(direct_dsn(), SEARCH_PATH_WAYS[way]) == expected, "direct PostgreSQL"
    proxy = cached_proxy(mode, sessions_pool(mode))
    assert search_path_story(proxy.dsn(), SEARCH_PATH_WAYS[way]) == expected


ADVISORY_WAYS = {
    "mixed_case": "SELECT Pg_Advisory_Lock({k})",
    "quoted": "SELECT \"pg_advisory_lock\"({k})",
    "schema_qualified": "SELECT pg_catalog.pg_advisory_lock({k})",
}


def advisory_story(dsn, statement, key):
    seen = {}
    with connect(dsn) as a:
        a.execute(statement.format(k=key))
        with connect(dsn) as b:
            seen["b try"] = b.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            if seen["b try"]:
                b.execute("SELECT pg_advisory_unlock(%s)", (key,))
        seen["a unlock"] = a.execute("SELECT pg_advisory_unlock(%s)", (key,)).fetchone()[0]
        a.execute(statement.format(k=key))  # held again when a disconnects
    with connect(dsn) as c:
        seen["new client try"] = c.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        seen["new client unlock"] = c.execute("SELECT pg_advisory_unlock(%s)", (key,)).fetchone()[0]
    return seen


@pytest.mark.parametrize("way", list(ADVISORY_WAYS))
@pytest.mark.parametrize("mode", MODES)
def test_advisory_lock_spellings_pin(mode, way, cached_proxy):
    """A session advisory lock taken with pg_advisory_lock spelt in mixed case, quoted or schema-qualified
    keeps the client on its server connection: another client cannot take it, its holder can release it, and
    it is gone when its holder disconnects, as direct."""
    key = 4711_000 + uuid.uuid4().int % 1_000_000
    expected = {"b try": False, "a unlock": True, "new client try": True, "new client unlock": True}
    assert advisory_story(direct_dsn(), ADVISORY_WAYS[way], key) == expected, "direct PostgreSQL"
    proxy = cached_proxy(mode, 2)  # two server connections: a client that is not pinned lands on the holder's
    assert advisory_story(proxy.dsn(), ADVISORY_WAYS[way], key) == expected


# --- 4. a backslash in a standard string ----------------------------------------------------------------------------

def backslash_story(dsn, statement, kv2, twin):
    seen = {}
    with connect(dsn) as a, connect(dsn) as w:
        seen["scs"] = a.execute("SHOW standard_conforming_strings").fetchone()[0]
        if twin:
            a.execute(twin).fetchall()
        seen["before"] = [sorted(a.execute(statement).fetchall()) for _ in range(2)]
        w.execute(f"INSERT INTO {kv2} VALUES ('x', 'new')")
        seen["after insert"] = sorted(a.execute(statement).fetchall())
    return seen


# (statement read twice, then after an INSERT into kv2; a statement run first, or None). {kv} {kv2} {kv3}: tables.
BACKSLASH_CASES = {
    # PostgreSQL: the first literal is one backslash, the second branch reads kv2.
    "alone": (r"SELECT v FROM {kv} WHERE k::text = '\' UNION ALL SELECT v FROM {kv2} WHERE k = 'x'", None),
    # The same text after one that differs only inside what a backslash-escaping scanner takes for one literal.
    "after_twin_reading_another_table": (
        r"SELECT v FROM {kv} WHERE k::text = '\' UNION ALL SELECT v FROM {kv2} WHERE k = 'x'",
        r"SELECT v FROM {kv} WHERE k::text = '\' UNION ALL SELECT v FROM {kv3} WHERE k = 'x'"),
    # An innocent read of kv alone first, then a text that a backslash-escaping scanner reads as the same
    # statement with other literals ('\' UNION ... <> ' as one literal).
    "after_benign_twin": (
        r"SELECT v FROM {kv} WHERE k = '\' UNION ALL SELECT v FROM {kv2} WHERE k <> ' OR k = '",
        "SELECT v FROM {kv} WHERE k = 'a' OR k = 'b'"),
}


@pytest.mark.parametrize("case", list(BACKSLASH_CASES))
@pytest.mark.parametrize("mode", MODES)
def test_backslash_string_does_not_hide_a_table_from_invalidation(mode, case, pg_admin, admin_cleanup, cached_proxy):
    """With standard_conforming_strings on, '\\' is a one-character literal, so a cached read whose second
    UNION branch reads kv2 depends on kv2 (alone, or after a statement a backslash-escaping scanner would take
    for the same one): an INSERT into kv2 through the proxy makes the next read see the new row, as direct."""
    n = uid()
    tables = {"kv": f"pgpilot_iso_kv_{n}", "kv2": f"pgpilot_iso_kv2_{n}", "kv3": f"pgpilot_iso_kv3_{n}"}
    for t in tables.values():
        admin_cleanup(f"DROP TABLE IF EXISTS {t}")
        pg_admin.execute(f"CREATE TABLE {t} (k text, v text)")
        pg_admin.execute(f"ALTER TABLE {t} OWNER TO app")
    statement, twin = (sql and sql.format(**tables) for sql in BACKSLASH_CASES[case])
    kv, kv2, kv3 = tables.values()

    def seed():
        pg_admin.execute(f"TRUNCATE {kv}, {kv2}, {kv3}")
        pg_admin.execute(f"INSERT INTO {kv} VALUES ('\\', 'kv backslash'), ('a', 'kv a')")
        pg_admin.execute(f"INSERT INTO {kv2} VALUES ('x', 'old')")
        pg_admin.execute(f"INSERT INTO {kv3} VALUES ('x', 'kv3')")

    expected = {"scs": "on", "before": [[("kv backslash",), ("old",)]] * 2,
                "after insert": [("kv backslash",), ("new",), ("old",)]}
    seed()
    assert backslash_story(direct_dsn(), statement, kv2, twin) == expected, "direct PostgreSQL"
    seed()
    proxy = cached_proxy(mode, sessions_pool(mode))
    assert backslash_story(proxy.dsn(), statement, kv2, twin) == expected


# --- 5. an RLS policy that reads another table ------------------------------------------------------------------------

def acl_story(dsn, docs, acl):
    read = f"SELECT id, body FROM {docs} ORDER BY id"
    seen = {}
    with connect(dsn) as a, connect(dsn) as w:
        seen["before"] = [a.execute(read).fetchall() for _ in range(2)]
        seen["deleted"] = w.execute(f"DELETE FROM {acl}").rowcount
        seen["after delete"] = [a.execute(read).fetchall() for _ in range(2)]
    with connect(dsn) as c:
        seen["new client"] = c.execute(read).fetchall()
    return seen


@pytest.mark.parametrize("mode", MODES)
def test_rls_policy_reading_another_table_invalidates(mode, pg_admin, admin_cleanup, cached_proxy):
    """When a row-level-security policy reads another table (an ACL), deleting the ACL rows through the proxy
    hides the rows from the next read, as direct: the cache never serves rows the policy no longer allows."""
    n = uid()
    docs, acl = f"pgpilot_iso_docs_{n}", f"pgpilot_iso_acl_{n}"
    admin_cleanup(f"DROP TABLE IF EXISTS {acl}")
    admin_cleanup(f"DROP TABLE IF EXISTS {docs}")
    pg_admin.execute(f"CREATE TABLE {docs} (id int PRIMARY KEY, body text)")
    pg_admin.execute(f"CREATE TABLE {acl} (doc int, who name)")
    pg_admin.execute(f"INSERT INTO {docs} VALUES (1, 'doc one'), (2, 'doc two')")
    pg_admin.execute(f"ALTER TABLE {docs} ENABLE ROW LEVEL SECURITY")
    pg_admin.execute(f"CREATE POLICY by_acl ON {docs} USING (EXISTS (SELECT 1 FROM {acl}"
                     f" WHERE {acl}.doc = {docs}.id AND {acl}.who = current_user))")
    pg_admin.execute(f"GRANT SELECT ON {docs} TO app")
    pg_admin.execute(f"GRANT SELECT, DELETE ON {acl} TO app")

    def seed():
        pg_admin.execute(f"TRUNCATE {acl}")
        pg_admin.execute(f"INSERT INTO {acl} VALUES (1, 'app'), (2, 'app')")

    rows = [(1, "doc one"), (2, "doc two")]
    expected = {"before": [rows, rows], "deleted": 2, "after delete": [[], []], "new client": []}
    seed()
    assert acl_story(direct_dsn(), docs, acl) == expected, "direct PostgreSQL"
    seed()
    proxy = cached_proxy(mode, sessions_pool(mode))
    assert acl_story(proxy.dsn(), docs, acl) == expected


# --- a prepared statement that changes state, executed again ------------------------------------------------

def rebound_story(dsn):
    """psycopg prepares set_config once (Parse) and then only binds it: every execution changes the tenant."""
    seen = []
    probe = "SELECT nullif(current_setting('app.tenant', true), '')"
    with connect(dsn) as a, connect(dsn) as b:
        for t in ("t1", "t2", "t3"):
            a.execute("SELECT set_config('app.tenant', %s, false)", (t,), prepare=True)
            seen.append((t, a.execute(probe).fetchone()[0], b.execute(probe).fetchone()[0]))
    return seen


@pytest.mark.parametrize("mode", MODES)
def test_prepared_set_config_changes_state_each_time_it_runs(mode, cached_proxy):
    """A prepared `set_config('app.tenant', $1, false)` executed again with new values leaves each value with
    its client only, every time: the client reads its latest tenant, another client none, as direct."""
    expected = [("t1", "t1", None), ("t2", "t2", None), ("t3", "t3", None)]
    assert rebound_story(direct_dsn()) == expected
    proxy = cached_proxy(mode, sessions_pool(mode))
    assert rebound_story(proxy.dsn()) == expected


# --- a client encoding given at login, back after RESET --------------------------------------------------------

# In SJIS, C3 is one character and 95 5C another (a backslash as its second byte): the server's string ends at
# the quote after them. Read as UTF-8 the same bytes are "Õ\", whose backslash escapes that quote, so a proxy
# lexing in UTF-8 would take the SET for part of the string.
HIDDEN_IN_SJIS = b"SELECT E'\xc3\x95\x5c' ; SET app.tenant TO evil -- '"

ENCODING_RESETS = {
    "reset": "RESET client_encoding",
    "reset_all": "RESET ALL",
    "discard_all": "DISCARD ALL",
}


def login_encoding_story(dsn, reset):
    """A client logged in with client_encoding SJIS switches to UTF8 and back by `reset`, then sends a text
    whose second statement only SJIS shows (raw bytes, simple Query)."""
    probe = "SELECT coalesce(current_setting('app.tenant', true), '')"
    seen = {}
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10, client_encoding="SJIS") as a:
        a.execute("SET client_encoding = 'UTF8'")
        with connect(dsn) as other:  # the server connection may change hands in between
            other.execute("SELECT 1")
        a.execute(reset)
        seen["a's encoding"] = a.execute("SHOW client_encoding").fetchone()[0]
        result = a.pgconn.exec_(HIDDEN_IN_SJIS)
        seen["ran"] = result.status == psycopg.pq.ExecStatus.COMMAND_OK
        # What catches a missed SET: pgpilot would have left the setting on the connection `a` ran
        # it on, the most recently used one, which `b` then gets (transaction mode).
        with connect(dsn) as b:
            seen["b"] = b.execute(probe).fetchone()[0]
        seen["a"] = a.execute(probe).fetchone()[0]
    with connect(dsn) as c:
        seen["new client"] = c.execute(probe).fetchone()[0]
    return seen


@pytest.mark.parametrize("reset", list(ENCODING_RESETS))
@pytest.mark.parametrize("mode", MODES)
def test_login_encoding_after_reset_hides_no_statement(mode, reset, cached_proxy):
    """A client encoding given at login holds again after RESET, RESET ALL or DISCARD ALL. On a pooled server
    connection the server goes back to its own default and pgpilot puts the login's value back by a query the
    relay never sees: pgpilot keeps lexing that client's texts as possibly SJIS, so a SET that only SJIS shows
    still counts, and its setting stays with its client, as direct."""
    expected = {"a's encoding": "SJIS", "ran": True, "b": "", "a": "evil", "new client": ""}
    assert login_encoding_story(direct_dsn(), ENCODING_RESETS[reset]) == expected, "direct PostgreSQL"
    proxy = cached_proxy(mode, sessions_pool(mode))
    assert login_encoding_story(proxy.dsn(), ENCODING_RESETS[reset]) == expected
