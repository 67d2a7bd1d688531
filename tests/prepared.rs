//! Named prepared statements in transaction mode: tokio-postgres prepares every statement under a
//! name, so these run with more clients than server connections, small server caches, DDL in
//! between, bad SQL and name reuse.

mod common;

use std::time::Duration;

use common::raw::{self, Raw};
use common::{metric, pool_toml, rows, Proxy};
use futures_util::future::join_all;

const TRUST: &str =
    "\n[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n\n[[users]]\nname = \"app\"\npassword = \"app\"\n";

#[tokio::test]
async fn many_clients_share_statements_over_a_small_pool() {
    let proxy = Proxy::start(&pool_toml(2, ""));
    let clients = join_all((0..12).map(|_| proxy.connect("app"))).await;
    let work = clients.iter().enumerate().map(|(ci, c)| async move {
        let texts: Vec<String> = (0..6).map(|k| format!("SELECT $1::int + {k} AS v, 'stmt{k}' AS name")).collect();
        let stmts = futures_util::future::try_join_all(texts.iter().map(|t| c.prepare(t))).await.unwrap();
        for round in 0..15 {
            for (k, s) in stmts.iter().enumerate() {
                let v = (ci * 1000 + round) as i32;
                let row = c.query_one(s, &[&v]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), v + k as i32);
                assert_eq!(row.get::<_, String>(1), format!("stmt{k}"));
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), join_all(work)).await.expect("finished");
    let (_, m) = proxy.http_get("/metrics");
    assert!(metric(&m, "pgpilot_prepared_statements") >= 6.0);
    assert!(metric(&m, "pgpilot_prepared_cache_hits_total") > 0.0);
}

#[tokio::test]
async fn a_small_server_cache_evicts_and_reprepares() {
    let proxy = Proxy::start(&pool_toml(2, "\n[prepared]\nserver_cache_size = 5\n"));
    let a = proxy.connect("app").await;
    let b = proxy.connect("app").await;
    let mut stmts = Vec::new();
    for k in 0..50 {
        stmts.push(a.prepare(&format!("SELECT {k}::int AS k")).await.unwrap());
    }
    for round in 0..2 {
        for (k, s) in stmts.iter().enumerate().rev() {
            assert_eq!(a.query_one(s, &[]).await.unwrap().get::<_, i32>(0), k as i32, "round {round}");
            if k % 7 == 0 {
                b.simple_query("SELECT 1").await.unwrap();
            }
        }
    }
    let (_, m) = proxy.http_get("/metrics");
    assert!(metric(&m, "pgpilot_prepared_cache_evictions_total") >= 45.0);
    assert!(metric(&m, "pgpilot_prepared_reparses_total") > 0.0);
    // The server never holds more than the cache size of pgpilot's statements.
    let held =
        a.query_one("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgpilot_%'", &[]).await.unwrap();
    assert!(held.get::<_, i64>(0) <= 5);
}

#[tokio::test]
async fn ddl_between_executions_gives_a_clear_error_then_recovers() {
    let proxy = Proxy::start(&pool_toml(1, ""));
    let c = proxy.connect("app").await;
    c.batch_execute("DROP TABLE IF EXISTS ddl_t; CREATE TABLE ddl_t (a int); INSERT INTO ddl_t VALUES (1)")
        .await
        .unwrap();
    let s = c.prepare("SELECT * FROM ddl_t").await.unwrap();
    assert_eq!(c.query(&s, &[]).await.unwrap().len(), 1);
    c.batch_execute("ALTER TABLE ddl_t ADD COLUMN b int DEFAULT 2").await.unwrap();
    let err = c.query(&s, &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "0A000", "{err}");
    // Preparing the same text again yields the new shape, on any server connection.
    let s2 = c.prepare("SELECT * FROM ddl_t").await.unwrap();
    assert_eq!(s2.columns().len(), 2);
    let row = c.query_one(&s2, &[]).await.unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (1, 2));
}

#[tokio::test]
async fn parse_errors_are_exact_and_leave_nothing_registered() {
    let proxy = Proxy::start(&pool_toml(1, ""));
    let c = proxy.connect("app").await;
    let (_, before) = proxy.http_get("/metrics");
    let err = c.prepare("SELEC 1").await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42601");
    assert!(db.message().contains("syntax error at or near \"SELEC\""), "{}", db.message());
    let (_, after) = proxy.http_get("/metrics");
    assert_eq!(metric(&before, "pgpilot_prepared_statements"), metric(&after, "pgpilot_prepared_statements"));
    let s = c.prepare("SELECT 1").await.unwrap();
    assert_eq!(c.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test]
async fn close_then_reparse_the_same_name_with_new_text() {
    let proxy = Proxy::start(&pool_toml(1, TRUST));
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut m = raw::parse("s1", "SELECT 1");
    m.extend(raw::sync());
    r.send(&m).await;
    assert_eq!(String::from_utf8_lossy(&r.until_ready().await.unwrap()), "1Z");
    // The same name again is an error, as on the server.
    r.send(&m).await;
    let (tag, body) = r.next().await.unwrap();
    assert_eq!((tag, raw::sqlstate(&body).as_str()), (b'E', "42P05"));
    assert_eq!(r.until_ready().await.unwrap(), b"Z");
    let mut m = raw::msg(b'C', b"Ss1\0");
    m.extend(raw::parse("s1", "SELECT 2"));
    m.extend(raw::bind("", "s1"));
    m.extend(raw::execute(""));
    m.extend(raw::sync());
    r.send(&m).await;
    let mut tags = Vec::new();
    let mut value = Vec::new();
    while let Some((t, b)) = r.next().await {
        tags.push(t);
        if t == b'D' {
            value = b[6..].to_vec();
        }
        if t == b'Z' {
            break;
        }
    }
    assert_eq!(String::from_utf8_lossy(&tags), "312DCZ");
    assert_eq!(value, b"2");
}

#[tokio::test]
async fn describe_statement_replies_are_exact() {
    let proxy = Proxy::start(&pool_toml(1, TRUST));
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut m = raw::parse("d1", "SELECT $1::int AS a, 'x'::text AS b");
    m.extend(raw::msg(b'D', b"Sd1\0"));
    m.extend(raw::sync());
    r.send(&m).await;
    assert_eq!(r.next().await.unwrap().0, b'1');
    let (t, params) = r.next().await.unwrap();
    assert_eq!((t, &params[..2]), (b't', &[0u8, 1][..]));
    assert_eq!(&params[2..], &23u32.to_be_bytes());
    let (t, desc) = r.next().await.unwrap();
    assert_eq!((t, &desc[..2]), (b'T', &[0u8, 2][..]));
    assert_eq!(r.until_ready().await.unwrap(), b"Z");
    // A second session describing the same text on the (one) server gets the same bytes.
    let mut r2 = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut m = raw::parse("other", "SELECT $1::int AS a, 'x'::text AS b");
    m.extend(raw::msg(b'D', b"Sother\0"));
    m.extend(raw::sync());
    r2.send(&m).await;
    assert_eq!(r2.next().await.unwrap().0, b'1');
    assert_eq!(r2.next().await.unwrap(), (b't', params));
    assert_eq!(r2.next().await.unwrap(), (b'T', desc));
}

#[tokio::test]
async fn discard_all_and_sql_prepare_behave_as_on_a_direct_connection() {
    let proxy = Proxy::start(&pool_toml(2, ""));
    let c = proxy.connect("app").await;
    let s = c.prepare("SELECT 5").await.unwrap();
    c.batch_execute("DISCARD ALL").await.unwrap();
    let err = c.query(&s, &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "26000", "{err}");
    // SQL-level PREPARE pins the client to its server, so EXECUTE keeps working.
    c.batch_execute("PREPARE q(int) AS SELECT $1 * 3").await.unwrap();
    let others = join_all((0..3).map(|_| proxy.connect("app"))).await;
    for o in &others {
        o.batch_execute("SELECT 1").await.unwrap();
    }
    for _ in 0..3 {
        let found = rows(&c.simple_query("EXECUTE q(7)").await.unwrap());
        assert_eq!(found, [["21"]]);
    }
}

#[tokio::test]
async fn reuse_unnamed_serves_repeated_unnamed_parses_from_the_server_cache() {
    let proxy = Proxy::start(&pool_toml(1, "\n[prepared]\nreuse_unnamed = true\n"));
    let a = proxy.connect("app").await;
    let b = proxy.connect("app").await;
    use tokio_postgres::types::Type;
    for i in 0..20i32 {
        for c in [&a, &b] {
            let r = c.query_typed("SELECT $1::int * 3", &[(&i, Type::INT4)]).await.unwrap();
            assert_eq!(r[0].get::<_, i32>(0), i * 3);
        }
    }
    let (_, m) = proxy.http_get("/metrics");
    assert!(metric(&m, "pgpilot_prepared_cache_hits_total") >= 30.0, "{m}");
    let err = a.query_typed("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42601");
    // A simple query in between drops the mapping, as it drops the unnamed statement upstream.
    a.simple_query("SELECT 1").await.unwrap();
    assert_eq!(a.query_typed("SELECT 7", &[]).await.unwrap()[0].get::<_, i32>(0), 7);
    // The same text failing, then valid once its table exists: the failed registry entry (which
    // the session also remembers as its last unnamed text) is not reused; a fresh one is made.
    a.batch_execute("DROP TABLE IF EXISTS memo_t").await.unwrap();
    let lookup = "SELECT count(*)::int FROM memo_t";
    let err = a.query_typed(lookup, &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    a.batch_execute("CREATE TABLE memo_t (x int); INSERT INTO memo_t VALUES (1), (2)").await.unwrap();
    let before = metric(&proxy.http_get("/metrics").1, "pgpilot_prepared_statements");
    for _ in 0..3 {
        assert_eq!(a.query_typed(lookup, &[]).await.unwrap()[0].get::<_, i32>(0), 2);
    }
    let after = metric(&proxy.http_get("/metrics").1, "pgpilot_prepared_statements");
    assert_eq!(after, before + 1.0, "the text runs under a new registry entry");
    a.batch_execute("DROP TABLE memo_t").await.unwrap();
}

/// A client's SQL `DEALLOCATE` of a name of pgpilot's own copies: outside a transaction block
/// pgpilot answers as a direct connection would for a name the client never prepared; inside one
/// the server answers (so that its error would abort the block there too) and the copy is gone:
/// the statement's next run on it fails once (a run without its Parse is not sent again) and the
/// copy is prepared again, instead of every later run failing.
#[tokio::test]
async fn a_client_deallocating_pgpilot_s_own_name_breaks_no_one() {
    let proxy = Proxy::start(&pool_toml(1, ""));
    let a = proxy.connect("app").await;
    let s = a.prepare("SELECT 41 + $1::int").await.unwrap();
    assert_eq!(a.query_one(&s, &[&1i32]).await.unwrap().get::<_, i32>(0), 42);
    let b = proxy.connect("app").await;
    let copies = b.simple_query("SELECT name FROM pg_prepared_statements WHERE statement = 'SELECT 41 + $1::int'");
    let names: Vec<String> = rows(&copies.await.unwrap()).into_iter().map(|mut r| r.remove(0)).collect();
    assert_eq!(names.len(), 1, "one server connection, one copy: {names:?}");
    assert!(names[0].starts_with("pgpilot_"), "{names:?}");
    let deallocate = format!("DEALLOCATE {}", names[0]);
    let err = b.batch_execute(&deallocate).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("26000"), "{err}");
    for i in 0..2 {
        assert_eq!(a.query_one(&s, &[&i]).await.unwrap().get::<_, i32>(0), 41 + i, "run {i}");
    }
    // Inside a block (BEGIN deferred by pgpilot, then the DEALLOCATE on its own) the server
    // answers: it has the copy, so the DEALLOCATE succeeds there.
    b.batch_execute("BEGIN").await.unwrap();
    b.batch_execute(&deallocate).await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
    let err = a.query_one(&s, &[&0i32]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("26000"), "{err}");
    for i in 0..3 {
        assert_eq!(a.query_one(&s, &[&i]).await.unwrap().get::<_, i32>(0), 41 + i, "run {i}");
    }
}
