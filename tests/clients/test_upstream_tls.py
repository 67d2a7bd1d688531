"""TLS toward the server (`[upstream] sslmode`, sslrootcert, sslcert/sslkey) against a throwaway PostgreSQL with
ssl = on and a test CA made here with openssl, and PostgreSQL restarted under pgpilot (on that same cluster,
since a restart would disturb the harness's).

The cluster's pg_hba accepts app only over TLS, and certapp only with a client certificate (clientcert=
verify-full: its CN must be the user). The server certificate names DNS:localhost only, so 127.0.0.1 is a
wrong host name for verify-full.
"""
import glob
import os
import shutil
import subprocess
import tempfile
import time

import psycopg
import pytest

from conftest import free_port, pg_port, wait_until

PASSWORD = "tlspass"


def _bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not found:
        pytest.fail("no /usr/lib/postgresql/*/bin (the distribution's PostgreSQL, built with OpenSSL)", pytrace=False)
    return found[-1]


def _as_postgres(*args, **kw):
    cmd = (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{args[0]} failed: {r.stderr or r.stdout}"
    return r


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def _make_pki(d):
    for ca in ("ca", "wrongca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=pgpilot test {ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, cn, ext in (("server", "localhost", "subjectAltName=DNS:localhost"), ("client", "certapp", None)):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        extfile = os.path.join(d, f"{name}.ext")
        with open(extfile, "w") as f:
            f.write((ext + "\n" if ext else "") + "basicConstraints=CA:FALSE\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-out", f"{name}.crt", "-extfile", extfile, cwd=d)


@pytest.fixture(scope="module")
def tls_pg():
    d = tempfile.mkdtemp(prefix="pgpilot-tlspg-")  # pytest's tmp dirs are 0700: the postgres user needs a way in
    os.chmod(d, 0o755)
    _make_pki(d)
    data, port, pg = os.path.join(d, "data"), free_port(), _bin()
    os.makedirs(data)
    subprocess.run(["chown", "-R", "postgres:", d], check=False)
    for key in ("server.key", "client.key"):
        os.chmod(os.path.join(d, key), 0o600)
    _as_postgres(f"{pg}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
    with open(os.path.join(data, "pg_hba.conf"), "w") as f:
        f.write("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                "hostssl all certapp 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n"
                "hostssl all app 127.0.0.1/32 scram-sha-256\n")
    opts = (f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={d}/server.crt"
            f" -c ssl_key_file={d}/server.key -c ssl_ca_file={d}/ca.crt -c fsync=off")
    ctl = lambda *a: _as_postgres(f"{pg}/pg_ctl", "-D", data, "-l", os.path.join(d, "log"), "-w", *a)  # noqa: E731
    ctl("start", "-o", opts)
    psql = [f"{pg}/psql", "-h", d, "-p", str(port), "-U", "postgres", "-d", "postgres", "-qtAX", "-v", "ON_ERROR_STOP=1"]
    _as_postgres(*psql, "-c", "SET password_encryption = 'scram-sha-256'",
                 "-c", f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'", "-c", f"CREATE ROLE certapp LOGIN PASSWORD '{PASSWORD}'",
                 "-c", "CREATE DATABASE app OWNER app")
    env = {"dir": d, "port": port, "restart": lambda: ctl("restart", "-m", "fast", "-o", opts),
           "admin": lambda: psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                            autocommit=True, sslmode="require")}
    yield env
    ctl("stop", "-m", "immediate")
    shutil.rmtree(d, ignore_errors=True)


def _start(start_proxy, tls_pg, host="localhost", user="app", **upstream):
    lines = "".join(f"{k} = \"{v.format(d=tls_pg['dir'])}\"\n" for k, v in upstream.items())
    return start_proxy(pool_size=3, upstream=f"postgres://{user}:{PASSWORD}@{host}:{tls_pg['port']}",
                       upstream_toml=lines, extra_toml="[cache]\nenabled = false\n")


def _query(proxy, user="app", sql="SELECT 1"):
    with psycopg.connect(proxy.dsn(user=user, password=PASSWORD), autocommit=True, connect_timeout=10) as c:
        return c.execute(sql).fetchone()[0]


def _error(proxy, user="app"):
    with pytest.raises(psycopg.Error) as err:
        _query(proxy, user)
    return str(err.value)


def test_verify_full_connects_encrypted(start_proxy, tls_pg):
    proxy = _start(start_proxy, tls_pg, sslmode="verify-full", sslrootcert="{d}/ca.crt")
    assert _query(proxy, sql="SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True


def test_verify_full_refuses_a_wrong_host_name(start_proxy, tls_pg):
    proxy = _start(start_proxy, tls_pg, host="127.0.0.1", sslmode="verify-full", sslrootcert="{d}/ca.crt")
    msg = _error(proxy)
    assert "TLS with the server" in msg and "not valid for name" in msg, msg


def test_verify_ca_accepts_any_name_but_only_its_ca(start_proxy, tls_pg):
    ok = _start(start_proxy, tls_pg, host="127.0.0.1", sslmode="verify-ca", sslrootcert="{d}/ca.crt")
    assert _query(ok) == 1
    wrong = _start(start_proxy, tls_pg, sslmode="verify-ca", sslrootcert="{d}/wrongca.crt")
    msg = _error(wrong)
    assert "TLS with the server" in msg and "UnknownIssuer" in msg, msg


def test_require_and_prefer_encrypt_without_checking(start_proxy, tls_pg):
    for mode in ("require", "prefer"):
        proxy = _start(start_proxy, tls_pg, host="127.0.0.1", sslmode=mode)
        assert _query(proxy, sql="SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True, mode


def test_disable_is_refused_by_a_tls_only_server(start_proxy, tls_pg):
    proxy = _start(start_proxy, tls_pg, sslmode="disable")
    msg = _error(proxy)
    assert "no encryption" in msg, msg


def test_require_against_a_server_without_tls(start_proxy):
    proxy = start_proxy(upstream_toml="sslmode = \"require\"")
    with pytest.raises(psycopg.Error) as err:
        with psycopg.connect(proxy.dsn(), connect_timeout=10) as c:
            c.execute("SELECT 1")
    assert "does not accept TLS" in str(err.value), str(err.value)
    plain = start_proxy(upstream_toml="sslmode = \"prefer\"", upstream=f"postgres://app:app@127.0.0.1:{pg_port()}")
    with psycopg.connect(plain.dsn(), connect_timeout=10) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_client_certificate(start_proxy, tls_pg):
    with_cert = _start(start_proxy, tls_pg, user="certapp", sslmode="verify-full", sslrootcert="{d}/ca.crt",
                       sslcert="{d}/client.crt", sslkey="{d}/client.key")
    assert _query(with_cert, user="certapp", sql="SELECT current_user") == "certapp"
    without = _start(start_proxy, tls_pg, user="certapp", sslmode="verify-full", sslrootcert="{d}/ca.crt")
    assert "certificate" in _error(without, user="certapp")


def test_check_names_a_missing_root_certificate():
    binary = os.environ["PGPILOT_BIN"]
    r = subprocess.run([binary, "--check", "--upstream", "postgres://a:b@localhost:5432"], capture_output=True,
                       text=True, env={**os.environ, "PGPILOT_UPSTREAM_SSLMODE": "verify-full"})
    assert r.returncode == 2 and "sslrootcert" in r.stderr, r.stderr


def test_postgres_restart_under_clients(start_proxy, tls_pg):
    """Clients in a transaction get a clear error (no hang); idle clients and new ones work once the server is
    back; the pool refills; all over verify-full TLS."""
    proxy = _start(start_proxy, tls_pg, sslmode="verify-full", sslrootcert="{d}/ca.crt")
    dsn = proxy.dsn(password=PASSWORD)
    with psycopg.connect(dsn, autocommit=True) as idle, psycopg.connect(dsn, autocommit=True) as tx:
        idle.execute("SELECT 1")
        tx.execute("BEGIN")
        tx.execute("SELECT 1")
        tls_pg["restart"]()
        t0 = time.monotonic()
        with pytest.raises(psycopg.Error) as err:
            tx.execute("SELECT 2")
        assert time.monotonic() - t0 < 5
        assert err.value.sqlstate in ("57P01", "08006"), (err.value.sqlstate, str(err.value))
        for i in range(5):  # the pooled connections died with the server: never handed out dead
            assert idle.execute("SELECT %s::int", (i,)).fetchone()[0] == i
    assert _query(proxy) == 1
    wait_until(lambda: proxy.pool_status()["active"] == 0, 10, message="pool back to no active connection")
    with tls_pg["admin"]() as admin:
        left = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'"
                             " AND state LIKE 'idle in transaction%%'").fetchone()[0]
    assert left == 0
