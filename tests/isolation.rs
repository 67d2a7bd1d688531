//! Isolation rules that need pgpilot's internals in view (the Python tests in
//! tests/clients/test_isolation_*.py cover the drivers' side).

mod common;

use common::cache::{hits, make_table, text_rows, until_hit};
use common::raw::{self, Raw};
use common::{direct, pool_toml, rows, Proxy};

/// The prepared copies of pgpilot's server-prepared statements on the server connection.
const COPIES: &str = "SELECT count(*)::text FROM pg_prepared_statements WHERE name LIKE 'pgpilot%'";

/// The custom setting the tests' leaks set, as the client asking sees it.
const TENANT: &str = "SELECT coalesce(current_setting('app.tenant', true), '')";

/// Whether, within 5 s, a run of `work` leaves the server connection unreset: `b` (a client of
/// the same pool of one) still sees the prepared copies. The table list loads in the
/// background; until then every transaction is reset.
async fn survives_without_reset<F: std::future::Future<Output = ()>>(
    b: &tokio_postgres::Client,
    mut work: impl FnMut(i32) -> F,
) -> bool {
    for i in 0..50 {
        work(i).await;
        if text_rows(b, COPIES).await != ["0"] {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// While standard_conforming_strings is off, a backslash escapes in plain strings, which
/// libpg_query (and so the analysis) does not assume: such a text is never read for its tables,
/// so it is never served from the cache (the same read without a backslash is).
#[tokio::test]
async fn backslash_strings_are_opaque_while_standard_conforming_strings_is_off() {
    make_table("iso_scs", 3).await;
    let proxy = Proxy::start(&pool_toml(2, ""));
    let c = proxy.connect("app").await;
    until_hit(&proxy, &c, "SELECT v FROM iso_scs WHERE id = 1").await;
    c.batch_execute("SET standard_conforming_strings = off").await.unwrap();
    let plain = "SELECT v FROM iso_scs WHERE v <> 'a' ORDER BY id";
    until_hit(&proxy, &c, plain).await;
    let escaped = r"SELECT v FROM iso_scs WHERE v <> 'a\'b' ORDER BY id";
    for _ in 0..5 {
        let before = hits(&proxy);
        assert_eq!(text_rows(&c, escaped).await, ["v1", "v2", "v3"]);
        assert_eq!(hits(&proxy), before, "a backslash text was answered from the cache");
    }
    c.batch_execute("RESET standard_conforming_strings").await.unwrap();
    let c2 = proxy.connect("app").await;
    let on: Vec<String> = text_rows(&c2, "SHOW standard_conforming_strings").await;
    assert_eq!(on, ["on"], "the setting stayed with its client");
}

/// PostgreSQL ends a `--` comment at a carriage return as at a line feed: a statement after
/// `\r` is a statement, and its effect on the session stays with its client (the token pass once
/// read it as comment, so the text shared the shape, and the cached analysis, of `SELECT 1`).
#[tokio::test]
async fn a_statement_behind_a_carriage_return_is_seen() {
    let proxy = Proxy::start(&pool_toml(1, ""));
    let a = proxy.connect("app").await;
    a.simple_query("SELECT 1").await.unwrap();
    a.simple_query("SELECT 1 -- note\r; SET app.tenant = 'a'").await.unwrap();
    let b = proxy.connect("app").await;
    assert_eq!(text_rows(&b, TENANT).await, [""], "another client's setting leaked");
    assert_eq!(text_rows(&a, TENANT).await, ["a"], "the setting stayed with its client");
}

/// In a client encoding other than UTF8 the server lexes the converted text: in SJIS the bytes
/// `95 5C` are one character, where a UTF-8 reading sees a backslash that escapes the quote
/// after it (and so read the SET below as part of a string: unseen, the setting was lost to its
/// client when the connection went to another, or kept for the next). Such a text is read as
/// opaque: its session effects unknown, the client pinned to its connection.
#[tokio::test]
async fn a_statement_hidden_by_a_client_encoding_is_not_missed() {
    for pipelined in [false, true] {
        hidden_by_sjis(pipelined).await;
    }
}

/// `pipelined`: the SET of the encoding and the text go in one write, the text read before the
/// SET's ParameterStatus arrives.
async fn hidden_by_sjis(pipelined: bool) {
    let proxy = Proxy::start("[pool]\nmax_size = 1\ncheckout_timeout_ms = 300\n");
    let a = proxy.connect("app").await;
    a.batch_execute("SELECT 1").await.unwrap();
    // C3 (a one-byte katakana in SJIS), then 95 5C (one SJIS character): valid UTF-8 as sent.
    let (set, hidden) = ("SET client_encoding = 'SJIS'", "SELECT E'\u{d5}\\' ; SET app.tenant TO evil -- '");
    if pipelined {
        let (x, y) = tokio::join!(a.batch_execute(set), a.batch_execute(hidden));
        x.unwrap();
        y.unwrap();
    } else {
        a.batch_execute(set).await.unwrap();
        a.batch_execute(hidden).await.unwrap();
    }
    let b = proxy.connect("app").await;
    match b.simple_query(TENANT).await {
        // The pool's one connection stays with the pinned client.
        Err(e) => assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS), "{e}"),
        Ok(rows) => assert_eq!(common::rows(&rows), [[""]], "another client's setting leaked (pipelined: {pipelined})"),
    }
    assert_eq!(text_rows(&a, TENANT).await, ["evil"], "the statement ran, for its own client");
}

/// Code that runs when a statement touches a relation (a trigger, a view's query) can change the
/// session unseen: a trigger's `set_config`, a view calling it, a trigger made in the same
/// transaction. The transaction's server connection is reset before another client gets it; one
/// that only read a plain table or a table whose code runs on writes, or wrote a table whose only
/// trigger sets a timestamp, is not (a prepared copy survives on it), cache on or off.
#[tokio::test]
async fn what_a_trigger_or_a_view_did_to_the_session_does_not_reach_the_next_client() {
    for cache in ["", "[cache]\nenabled = false"] {
        attached_code_resets(cache).await;
    }
}

async fn attached_code_resets(cache: &str) {
    let d = direct("app").await;
    d.batch_execute(
        "DROP TABLE IF EXISTS iso_plain, iso_hooked CASCADE; DROP VIEW IF EXISTS iso_view, iso_wview;
         CREATE TABLE iso_plain (a int); CREATE TABLE iso_hooked (a int);
         CREATE OR REPLACE FUNCTION iso_leak() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN PERFORM set_config('app.tenant', 'trigger', false); RETURN NEW; END$$;
         CREATE TRIGGER iso_leak BEFORE INSERT ON iso_hooked FOR EACH ROW EXECUTE FUNCTION iso_leak();
         DROP TABLE IF EXISTS iso_stamped; CREATE TABLE iso_stamped (a int, at timestamptz);
         CREATE OR REPLACE FUNCTION iso_stamp() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN IF (TG_OP = 'INSERT') THEN NEW.at := now(); END IF; RETURN NEW; END$$;
         CREATE TRIGGER iso_stamp BEFORE INSERT ON iso_stamped FOR EACH ROW EXECUTE FUNCTION iso_stamp();
         ALTER TABLE iso_stamped OWNER TO app;
         DROP TABLE IF EXISTS iso_fielded CASCADE; CREATE TABLE iso_fielded (a int);
         CREATE OR REPLACE FUNCTION iso_field(iso_fielded) RETURNS int LANGUAGE plpgsql AS
           $$BEGIN PERFORM set_config('app.tenant', 'field', false); RETURN 1; END$$;
         CREATE OR REPLACE FUNCTION iso_fielding() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN NEW.a := (NEW).iso_field; RETURN NEW; END$$;
         CREATE TRIGGER iso_fielding BEFORE INSERT ON iso_fielded FOR EACH ROW EXECUTE FUNCTION iso_fielding();
         ALTER TABLE iso_fielded OWNER TO app;
         CREATE VIEW iso_view AS SELECT set_config('app.tenant', 'view', false) AS x;
         CREATE VIEW iso_wview AS SELECT * FROM iso_plain WHERE set_config('app.tenant', 'wview', false) IS NOT NULL;
         ALTER TABLE iso_plain OWNER TO app; ALTER TABLE iso_hooked OWNER TO app; ALTER VIEW iso_view OWNER TO app;
         ALTER VIEW iso_wview OWNER TO app;",
    )
    .await
    .expect("creating the relations");
    let proxy = Proxy::start(&pool_toml(1, cache));
    let (a, b) = (proxy.connect("app").await, proxy.connect("app").await);
    let read = |_| async { a.query("SELECT a FROM iso_plain", &[]).await.map(drop).unwrap() };
    assert!(survives_without_reset(&b, read).await, "a transaction on a plain table reset its connection ({cache:?})");
    a.simple_query("INSERT INTO iso_hooked VALUES (1)").await.unwrap();
    assert_eq!(text_rows(&b, TENANT).await, [""], "a trigger's setting leaked ({cache:?})");
    a.query("SELECT x FROM iso_view", &[]).await.unwrap();
    assert_eq!(text_rows(&b, TENANT).await, [""], "a view's setting leaked ({cache:?})");
    a.query("SELECT a FROM iso_hooked", &[]).await.unwrap();
    assert_ne!(text_rows(&b, COPIES).await, ["0"], "a read of a table whose code runs on writes reset ({cache:?})");
    a.execute("INSERT INTO iso_stamped (a) VALUES ($1)", &[&1i32]).await.unwrap();
    assert_ne!(text_rows(&b, COPIES).await, ["0"], "a timestamp trigger's write reset ({cache:?})");
    a.simple_query("INSERT INTO iso_fielded VALUES (1)").await.unwrap();
    assert_eq!(text_rows(&b, TENANT).await, [""], "a function called as a field leaked ({cache:?})");
    d.batch_execute("INSERT INTO iso_plain VALUES (-1)").await.unwrap(); // a row the view's filter reads
    a.simple_query("DELETE FROM iso_wview").await.unwrap();
    assert_eq!(text_rows(&b, TENANT).await, [""], "a write through a view leaked its setting ({cache:?})");
    a.batch_execute(
        "BEGIN; CREATE TRIGGER iso_leak_too BEFORE INSERT ON iso_plain FOR EACH ROW EXECUTE FUNCTION iso_leak();
         INSERT INTO iso_plain VALUES (1); COMMIT",
    )
    .await
    .unwrap();
    assert_eq!(text_rows(&b, TENANT).await, [""], "a new trigger's setting leaked ({cache:?})");
    a.simple_query("INSERT INTO iso_plain VALUES (2)").await.unwrap();
    assert_eq!(text_rows(&b, TENANT).await, [""], "a trigger made through pgpilot was missed ({cache:?})");
}

/// Two replicas sharing Redis: a trigger made through one runs on writes through the other,
/// whose table list (loaded before, refreshed once a minute) does not have it. The DDL is
/// announced through Redis when its transaction ends (or its client leaves before that), and the
/// other replica stops trusting its list of that database until it reads it again.
#[tokio::test]
async fn a_trigger_made_through_another_replica_is_not_trusted_as_absent() {
    let d = direct("app").await;
    d.batch_execute(
        "DROP TABLE IF EXISTS iso_repl, iso_repl2 CASCADE; CREATE TABLE iso_repl (a int); ALTER TABLE iso_repl OWNER TO app;
         CREATE TABLE iso_repl2 (a int); ALTER TABLE iso_repl2 OWNER TO trustuser; GRANT ALL ON iso_repl2 TO app;
         CREATE OR REPLACE FUNCTION iso_repl_leak() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN PERFORM set_config('app.tenant', 'replica', false); RETURN NEW; END$$;
         ALTER FUNCTION iso_repl_leak() OWNER TO app;",
    )
    .await
    .unwrap();
    let redis = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL is not set: run the suite through tests/run.sh");
    let trust = "[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n\n[[users]]\nname = \"app\"\npassword = \"app\"\n";
    let toml = pool_toml(1, &format!("[cache]\nredis_url = \"{redis}\"\n{trust}"));
    let (one, other) = (Proxy::start(&toml), Proxy::start(&toml));
    let (b1, b2) = (other.connect("app").await, other.connect("app").await);
    let read = |_| async { b1.query("SELECT a FROM iso_repl", &[]).await.map(drop).unwrap() };
    assert!(survives_without_reset(&b2, read).await, "the other replica's table list never loaded");
    let a = one.connect("app").await;
    a.batch_execute(
        "CREATE TRIGGER iso_repl_leak BEFORE INSERT ON iso_repl FOR EACH ROW EXECUTE FUNCTION iso_repl_leak()",
    )
    .await
    .unwrap();
    // (The announcement is published before the DDL's client is answered; the other replica
    // applies it as its subscription delivers it, within milliseconds.)
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    b1.simple_query("INSERT INTO iso_repl VALUES (1)").await.unwrap();
    assert_eq!(text_rows(&b2, TENANT).await, [""], "the trigger's setting reached the next client");
    // The DDL's client leaves before its reply: announced at its end all the same.
    let read = |_| async { b1.query("SELECT a FROM iso_repl2", &[]).await.map(drop).unwrap() };
    assert!(survives_without_reset(&b2, read).await, "the other replica's table list was never read again");
    let mut gone = Raw::login_trust(one.port, "trustuser", "app").await;
    let create =
        "CREATE TRIGGER iso_repl_leak BEFORE INSERT ON iso_repl2 FOR EACH ROW EXECUTE FUNCTION iso_repl_leak()";
    gone.send(&raw::query(create)).await;
    drop(gone);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let made =
        "SELECT count(*)::text FROM pg_trigger WHERE tgname = 'iso_repl_leak' AND tgrelid = 'iso_repl2'::regclass";
    assert_eq!(text_rows(&d, made).await, ["1"], "the DDL of the client gone at once did not run");
    b1.simple_query("INSERT INTO iso_repl2 VALUES (1)").await.unwrap();
    assert_eq!(text_rows(&b2, TENANT).await, [""], "the trigger of a client gone at once leaked");
    d.batch_execute("DROP TABLE iso_repl, iso_repl2 CASCADE; DROP FUNCTION iso_repl_leak()").await.unwrap();
}

/// A table `name` owned by app (afresh), and a function of app's (`function`: its signature and
/// the rest) whose code sets a custom setting for the session.
async fn leaky_table(d: &tokio_postgres::Client, name: &str, function: &str) {
    let signature = &function[..function.find(')').unwrap() + 1];
    d.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name} CASCADE; CREATE TABLE {name} (a int); ALTER TABLE {name} OWNER TO app;
         CREATE OR REPLACE FUNCTION {function}; ALTER FUNCTION {signature} OWNER TO app;"
    ))
    .await
    .unwrap();
}

/// DDL committed by COMMIT PREPARED: the PREPARE TRANSACTION ended its transaction (and told the
/// table list so), and a list read before the commit does not have the trigger; the commit of a
/// transaction prepared with DDL makes the list untrusted again, from any session.
#[tokio::test]
async fn a_trigger_committed_by_commit_prepared_is_not_trusted_as_absent() {
    let d = direct("app").await;
    // (One left by a failed run would hold its lock on the table: rolled back first.)
    d.batch_execute("SET lock_timeout = '5s'").await.unwrap();
    if text_rows(&d, "SELECT count(*)::text FROM pg_prepared_xacts WHERE gid = 'iso_2pc'").await == ["1"] {
        d.batch_execute("ROLLBACK PREPARED 'iso_2pc'").await.unwrap();
    }
    let function = "iso_2pc_leak() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN PERFORM set_config('app.tenant', 'prepared', false); RETURN NEW; END$$";
    leaky_table(&d, "iso_2pc", function).await;
    let proxy = Proxy::start(&pool_toml(1, ""));
    let (a, b1, b2) = (proxy.connect("app").await, proxy.connect("app").await, proxy.connect("app").await);
    let read = |_| async { b1.query("SELECT a FROM iso_2pc", &[]).await.map(drop).unwrap() };
    assert!(survives_without_reset(&b2, read).await, "the table list never loaded");
    let create = "CREATE TRIGGER iso_2pc_leak BEFORE INSERT ON iso_2pc FOR EACH ROW EXECUTE FUNCTION iso_2pc_leak()";
    a.batch_execute(&format!("BEGIN; {create}; PREPARE TRANSACTION 'iso_2pc'")).await.unwrap();
    assert!(survives_without_reset(&b2, read).await, "the table list was not read again after the PREPARE");
    // Committed by another client of the same pgpilot, a statement prepared in one round trip
    // and run in the next (noted when it runs, not when it is parsed).
    let c = proxy.connect("app").await;
    let commit = c.prepare("COMMIT PREPARED 'iso_2pc'").await.unwrap();
    assert!(survives_without_reset(&b2, read).await, "a reload the Parse may have started has not finished");
    c.execute(&commit, &[]).await.unwrap();
    let made = "SELECT count(*)::text FROM pg_trigger WHERE tgname = 'iso_2pc_leak'";
    assert_eq!(text_rows(&d, made).await, ["1"], "the prepared trigger was committed");
    b1.simple_query("INSERT INTO iso_2pc VALUES (1)").await.unwrap();
    assert_eq!(text_rows(&b2, TENANT).await, [""], "the committed trigger's setting reached the next client");
    d.batch_execute("DROP TABLE iso_2pc CASCADE; DROP FUNCTION iso_2pc_leak()").await.unwrap();
}

/// DDL committed by COMMIT AND CHAIN: the transaction status stays 'T', so the commit was seen
/// only when the chain ended, and a list read while the DDL was uncommitted (it has no trigger)
/// was trusted meanwhile; the COMMIT tag makes it untrusted at the commit.
#[tokio::test]
async fn a_trigger_committed_by_commit_and_chain_is_not_trusted_as_absent() {
    for cache in ["", "[cache]\nenabled = false"] {
        committed_by_chain(cache).await;
    }
}

async fn committed_by_chain(cache: &str) {
    let d = direct("app").await;
    let function = "iso_chain_leak() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN PERFORM set_config('app.tenant', 'chained', false); RETURN NEW; END$$";
    leaky_table(&d, "iso_chain", function).await;
    // Two connections: `a` keeps one for its chain, b1 and b2 share the other.
    let proxy = Proxy::start(&pool_toml(2, cache));
    let (a, b1, b2) = (proxy.connect("app").await, proxy.connect("app").await, proxy.connect("app").await);
    let read = |_| async { b1.query("SELECT a FROM iso_chain", &[]).await.map(drop).unwrap() };
    assert!(survives_without_reset(&b2, read).await, "the table list never loaded");
    let create =
        "CREATE TRIGGER iso_chain_leak BEFORE INSERT ON iso_chain FOR EACH ROW EXECUTE FUNCTION iso_chain_leak()";
    a.batch_execute(&format!("BEGIN; {create}")).await.unwrap();
    assert!(survives_without_reset(&b2, read).await, "the table list was not read again while the DDL was uncommitted");
    a.batch_execute("COMMIT AND CHAIN").await.unwrap();
    let made = "SELECT count(*)::text FROM pg_trigger WHERE tgname = 'iso_chain_leak'";
    assert_eq!(text_rows(&d, made).await, ["1"], "the trigger was committed");
    b1.simple_query("INSERT INTO iso_chain VALUES (1)").await.unwrap();
    assert_eq!(
        text_rows(&b2, TENANT).await,
        [""],
        "{cache}: the chained commit's trigger setting reached the next client"
    );
    a.batch_execute("COMMIT").await.unwrap();
    d.batch_execute("DROP TABLE iso_chain CASCADE; DROP FUNCTION iso_chain_leak()").await.unwrap();
}

/// DDL whose parse-tree node is not named Create*: an index on an expression runs the
/// expression's function on every write to its table, so CREATE INDEX makes the table list
/// untrusted as a trigger does (it did not: the list loaded before said the table runs no code).
#[tokio::test]
async fn an_index_on_user_code_is_not_trusted_as_absent() {
    let d = direct("app").await;
    let function = "iso_idx_leak(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS
        $$BEGIN PERFORM set_config('app.tenant', 'index', false); RETURN $1; END$$";
    leaky_table(&d, "iso_idx", function).await;
    let proxy = Proxy::start(&pool_toml(1, ""));
    let (a, b1, b2) = (proxy.connect("app").await, proxy.connect("app").await, proxy.connect("app").await);
    let read = |_| async { b1.query("SELECT a FROM iso_idx", &[]).await.map(drop).unwrap() };
    assert!(survives_without_reset(&b2, read).await, "the table list never loaded");
    a.batch_execute("CREATE INDEX iso_idx_leak ON iso_idx (iso_idx_leak(a))").await.unwrap();
    // (The statement calls a user function: `a` keeps its connection, reset when it leaves; the
    // INSERT's checkout waits for it.)
    drop(a);
    b1.simple_query("INSERT INTO iso_idx VALUES (1)").await.unwrap();
    assert_eq!(text_rows(&b2, TENANT).await, [""], "the index function's setting reached the next client");
    d.batch_execute("DROP TABLE iso_idx CASCADE; DROP FUNCTION iso_idx_leak(int)").await.unwrap();
}

/// A FunctionCall names its function by OID: `set_config` called that way is not seen in any
/// text, so the connection is reset after it; also when the call is too large to be read whole
/// (streamed to the server as it comes: only its first bytes are seen).
#[tokio::test]
async fn a_function_called_by_oid_leaves_nothing_to_the_next_client() {
    let proxy = Proxy::start("[pool]\nmax_size = 1\n\n[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n");
    let long = "x".repeat(2 * 64 * 1024);
    for value in ["fastpath", long.as_str()] {
        let mut a = Raw::login_trust(proxy.port, "trustuser", "app").await;
        let mut call = 2078u32.to_be_bytes().to_vec(); // pg_catalog.set_config(text, text, bool)
        call.extend(0i16.to_be_bytes()); // every argument in text format
        call.extend(3i16.to_be_bytes());
        for arg in ["app.tenant", value, "false"] {
            call.extend((arg.len() as i32).to_be_bytes());
            call.extend(arg.as_bytes());
        }
        call.extend(0i16.to_be_bytes());
        a.send(&raw::msg(b'F', &call)).await;
        assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "VZ", "the call answered");
        let mut b = Raw::login_trust(proxy.port, "trustuser", "app").await;
        b.send(&raw::query("SELECT coalesce(current_setting('app.tenant', true), '')")).await;
        let got = b.messages_until_ready().await;
        let row = got.iter().find(|(t, _)| *t == b'D').expect("a row").1.clone();
        assert_eq!(row, [0, 1, 0, 0, 0, 0], "one empty column: the setting ({} bytes) did not leak", value.len());
    }
}

/// With a reset query that is not DISCARD ALL (none, as converted PgBouncer configs often have;
/// one that drops the prepared statements; one that keeps them), a reset after attached code
/// still leaves nothing behind: the settings are replayed over a RESET ALL for the next client,
/// and the prepared copies are dropped with DEALLOCATE ALL, so that none is prepared twice under
/// one name nor run after the server dropped it.
#[tokio::test]
async fn a_reset_without_discard_all_leaves_no_setting_and_no_stale_copy() {
    let d = direct("app").await;
    d.batch_execute(
        "DROP TABLE IF EXISTS iso2_hooked CASCADE;
         CREATE TABLE iso2_hooked (a int);
         CREATE OR REPLACE FUNCTION iso2_leak() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN PERFORM set_config('app.tenant', 'trigger2', false); RETURN NEW; END$$;
         CREATE TRIGGER iso2_leak BEFORE INSERT ON iso2_hooked FOR EACH ROW EXECUTE FUNCTION iso2_leak();
         ALTER TABLE iso2_hooked OWNER TO app;",
    )
    .await
    .expect("creating the relations");
    for reset in ["", "DEALLOCATE ALL", "RESET ALL"] {
        let proxy = Proxy::start(&pool_toml(1, &format!("reset_query = \"{reset}\"")));
        let (a, b) = (proxy.connect("app").await, proxy.connect("app").await);
        for i in 0..3 {
            let n: i64 = a.query_one("SELECT count(*) FROM iso2_hooked", &[]).await.unwrap().get(0);
            a.execute("INSERT INTO iso2_hooked VALUES ($1)", &[&i]).await.unwrap();
            let m: i64 = b.query_one("SELECT count(*) FROM iso2_hooked", &[]).await.unwrap().get(0);
            assert_eq!(m, n + 1, "the same statement prepared again on the reset connection ({reset:?})");
            assert_eq!(text_rows(&b, TENANT).await, [""], "a trigger's setting leaked ({reset:?})");
        }
    }
}

/// A user-made operator, cast or domain check, or a user function named as a built-in, runs its
/// code from the client's own text, which names no such function and maybe no relation (`SELECT
/// 1 === 2`): in a database that has one calling code that changes the session, every
/// transaction's connection is reset. (A database of its own: such code makes every statement of
/// its database count.)
#[tokio::test]
async fn an_operator_cast_domain_or_namesake_that_sets_a_setting_leaves_nothing_to_the_next_client() {
    let admin = direct("postgres").await;
    admin.simple_query("DROP DATABASE IF EXISTS iso_ops WITH (FORCE)").await.unwrap();
    admin.simple_query("CREATE DATABASE iso_ops OWNER app").await.unwrap();
    let d = direct("iso_ops").await;
    d.batch_execute(
        "CREATE TABLE iso_t (a int); ALTER TABLE iso_t OWNER TO app;
         CREATE FUNCTION iso_leak(text) RETURNS text LANGUAGE plpgsql AS
           $$BEGIN PERFORM set_config('app.tenant', $1, false); RETURN $1; END$$;
         CREATE FUNCTION iso_op_leak(int, int) RETURNS int LANGUAGE sql AS $$SELECT length(iso_leak('operator'))$$;
         CREATE TYPE iso_pair AS (a text);
         CREATE FUNCTION iso_cast_leak(text) RETURNS iso_pair LANGUAGE sql AS $$SELECT ROW(iso_leak('cast'))::iso_pair$$;
         CREATE TYPE iso_range AS RANGE (subtype = float8);",
    )
    .await
    .expect("creating the functions");
    let cases = [
        ("operator", "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = iso_op_leak)", "SELECT 1 === 2"),
        (
            "cast",
            "DROP OPERATOR === (int, int); CREATE CAST (text AS iso_pair) WITH FUNCTION iso_cast_leak(text)",
            "SELECT ('x'::text)::iso_pair",
        ),
        (
            "domain",
            "DROP CAST (text AS iso_pair); CREATE DOMAIN iso_dom AS text CHECK (iso_leak('domain') IS NOT NULL)",
            "SELECT 'x'::iso_dom",
        ),
        (
            "namesake",
            "DROP DOMAIN iso_dom; CREATE FUNCTION public.lower(int) RETURNS text LANGUAGE sql AS $$SELECT iso_leak('namesake')$$",
            "SELECT lower(1)",
        ),
    ];
    for (made, create, call) in cases {
        d.batch_execute(create).await.unwrap();
        let proxy = Proxy::start(&pool_toml(1, ""));
        let (a, b) = (proxy.connect("iso_ops").await, proxy.connect("iso_ops").await);
        until_hit(&proxy, &a, "SELECT a FROM iso_t").await; // a read cached: the table list is loaded
        let direct_effect = rows(&a.simple_query(&format!("{call}; {TENANT}")).await.unwrap());
        assert_eq!(direct_effect.last().unwrap(), &[made.to_string()], "the {made} set it for its own client");
        assert_eq!(text_rows(&b, TENANT).await, [""], "the {made}'s setting leaked (simple protocol)");
        a.query(call, &[]).await.unwrap();
        assert_eq!(text_rows(&b, TENANT).await, [""], "the {made}'s setting leaked (extended protocol)");
    }
    // A range type alone (its multirange cast is the server's) runs no code: no reset.
    d.batch_execute("DROP FUNCTION public.lower(int)").await.unwrap();
    let proxy = Proxy::start(&pool_toml(1, ""));
    let (a, b) = (proxy.connect("iso_ops").await, proxy.connect("iso_ops").await);
    until_hit(&proxy, &a, "SELECT a FROM iso_t").await;
    let write = |i: i32| {
        let a = &a;
        async move { a.execute("INSERT INTO iso_t VALUES ($1)", &[&i]).await.map(drop).unwrap() }
    };
    assert!(survives_without_reset(&b, write).await, "a database with only a range type reset its connection");
    drop((a, b, proxy));
    admin.simple_query("DROP DATABASE iso_ops WITH (FORCE)").await.unwrap();
}
