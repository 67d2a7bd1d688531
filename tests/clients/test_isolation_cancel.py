"""Cancel requests through the proxy with psycopg 3's Connection.cancel(): a cancel reaches only the statement
its client is running, as on a direct connection; one sent while the client runs nothing cancels nothing (not
that client's next statement, not another client's statement on the same server connection), and one sent
during a long statement or a streamed large result still cancels it promptly.

Every test runs in transaction and in session mode, with the result cache on (the default) and a pool of 1
server connection (2 in session mode where two clients must be connected at once).
"""
import threading
import time

import psycopg
import pytest
from psycopg import errors

from conftest import direct_dsn

MODES = ["transaction", "session"]
ROUNDS = 20


def connect(dsn, autocommit=True):
    return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)


def sleeps_cancelled(conn):
    """Runs `select pg_sleep(0.05)` once: 1 if it was cancelled, else 0."""
    try:
        conn.execute("select pg_sleep(0.05)")
        return 0
    except errors.QueryCanceled:
        return 1


def idle_cancel_then_other_client(dsn):
    cancelled = {"a": 0, "b": 0}
    with connect(dsn, autocommit=False) as a, connect(dsn) as b:
        for _ in range(ROUNDS):
            try:
                a.execute("select 1")
            except errors.QueryCanceled:  # hit by its own earlier cancel, delivered late
                cancelled["a"] += 1
                a.rollback()
                continue
            a.cancel()  # a is idle in its transaction: nothing to cancel
            a.commit()
            cancelled["b"] += sleeps_cancelled(b)
    return cancelled


@pytest.mark.parametrize("mode", MODES)
def test_cancel_of_an_idle_client_does_not_hit_the_next_client(mode, cached_proxy):
    """A cancel sent by a client idle in a transaction, which then commits, never cancels the statement another
    client runs next on the same server connection, nor the sender's own next one (0 of 20 cancelled, as direct)."""
    assert idle_cancel_then_other_client(direct_dsn()) == {"a": 0, "b": 0}, "direct PostgreSQL"
    proxy = cached_proxy(mode, 1 if mode == "transaction" else 2)
    assert idle_cancel_then_other_client(proxy.dsn()) == {"a": 0, "b": 0}


def idle_cancel_then_own_statement(dsn, autocommit):
    cancelled = 0
    with connect(dsn, autocommit=autocommit) as a:
        for _ in range(ROUNDS):
            a.execute("select 1")
            a.cancel()  # a runs nothing: nothing to cancel
            cancelled += sleeps_cancelled(a)
            if not autocommit:
                a.rollback()
    return cancelled


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in_transaction"])
@pytest.mark.parametrize("mode", MODES)
def test_cancel_of_an_idle_client_does_not_hit_its_next_statement(mode, autocommit, cached_proxy):
    """A cancel sent while the client runs nothing (in autocommit, or idle in a transaction) does not cancel that
    client's next statement (0 of 20 cancelled, as direct)."""
    assert idle_cancel_then_own_statement(direct_dsn(), autocommit) == 0, "direct PostgreSQL"
    proxy = cached_proxy(mode, 1)
    assert idle_cancel_then_own_statement(proxy.dsn(), autocommit) == 0


def cancel_later(conn, delay):
    timer = threading.Timer(delay, conn.cancel)
    timer.daemon = True
    timer.start()
    return timer


@pytest.mark.parametrize("mode", MODES)
def test_cancel_during_a_long_statement(mode, cached_proxy):
    """A cancel sent 0.3 s into `select pg_sleep(5)` from another thread ends it with 57014 within about a second
    (under 2 s), and the client and the pool go on working."""
    proxy = cached_proxy(mode, 1)
    with connect(proxy.dsn()) as a:
        start = time.monotonic()
        timer = cancel_later(a, 0.3)
        try:
            with pytest.raises(errors.QueryCanceled):
                a.execute("select pg_sleep(5)")
        finally:
            timer.cancel()
        elapsed = time.monotonic() - start
        assert elapsed < 2, f"the cancelled pg_sleep(5) ended after {elapsed:.2f}s"
        assert a.execute("select 1").fetchone() == (1,)
    with connect(proxy.dsn()) as b:
        assert sleeps_cancelled(b) == 0


@pytest.mark.parametrize("mode", MODES)
def test_cancel_during_a_streamed_large_result(mode, cached_proxy):
    """A cancel sent 0.3 s into a large result the client is streaming row by row ends it with 57014 within
    about a second (under 2 s), and the client and the pool go on working."""
    proxy = cached_proxy(mode, 1)
    with connect(proxy.dsn()) as a:
        a.execute("SET statement_timeout = '20s'")  # a backstop: the test fails on the elapsed time long before
        rows = 0
        timer = start = None
        # 200M rows that stream from the first (each generate_series is small enough to materialize at once)
        big = "SELECT a, b, repeat('x', 200) FROM generate_series(1, 20000) a, generate_series(1, 10000) b"
        try:
            with pytest.raises(errors.QueryCanceled):
                for _ in a.cursor().stream(big):
                    rows += 1
                    if timer is None:
                        start = time.monotonic()
                        timer = cancel_later(a, 0.3)
                    elif rows % 1000 == 0 and time.monotonic() - start > 5:
                        pytest.fail(f"still streaming {time.monotonic() - start:.1f}s after the cancel ({rows} rows)")
        finally:
            if timer is not None:
                timer.cancel()
        assert start is not None, "the stream was cancelled before its first row"
        elapsed = time.monotonic() - start
        assert rows > 1 and elapsed < 2, f"the cancelled stream ended after {elapsed:.2f}s ({rows} rows)"
        a.execute("RESET statement_timeout")
        assert a.execute("select 1").fetchone() == (1,)
    with connect(proxy.dsn()) as b:
        assert sleeps_cancelled(b) == 0
