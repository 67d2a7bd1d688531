//! Pool behaviour: checkout timeout, session state replay in transaction mode, disconnects in the
//! middle of a transaction, session-mode reset, and pinning for session-scoped features.

mod common;

use std::time::Duration;

use common::{direct, pool_toml, Proxy};

async fn one(c: &tokio_postgres::Client, sql: &str) -> String {
    common::rows(&c.simple_query(sql).await.unwrap()).into_iter().next().expect("a row").remove(0)
}

#[tokio::test]
async fn checkout_timeout_names_the_pool_and_the_client_recovers() {
    let proxy = Proxy::start("[pool]\nmax_size = 1\ncheckout_timeout_ms = 300\n");
    let holder = proxy.connect("app").await;
    let waiter = proxy.connect("app").await;
    holder.simple_query("BEGIN; SELECT 1").await.unwrap();
    let err = waiter.simple_query("SELECT 1").await.unwrap_err();
    let db = err.as_db_error().expect("a server-style error");
    assert_eq!(db.code().code(), "53300");
    assert!(db.message().contains("app/app"), "{}", db.message());
    holder.simple_query("COMMIT").await.unwrap();
    assert_eq!(one(&waiter, "SELECT 'served'").await, "served");
}

#[tokio::test]
async fn waiting_clients_are_served_in_turn_by_a_pool_of_one() {
    let proxy = Proxy::start(&pool_toml(1, ""));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = proxy.connect("app").await;
        tasks.push(tokio::spawn(async move {
            for j in 0..10 {
                c.simple_query("BEGIN").await.unwrap();
                assert_eq!(one(&c, &format!("SELECT {i} * 100 + {j}")).await, (i * 100 + j).to_string());
                c.simple_query("COMMIT").await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
    let (_, status) = proxy.http_get("/health/status");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["connection_pool"]["size"], 1, "{status}");
}

#[tokio::test]
async fn session_settings_follow_the_client_across_server_connections() {
    let proxy = Proxy::start(&pool_toml(1, ""));
    let a = proxy.connect("app").await;
    let b = proxy.connect("app").await;
    let default_timeout = one(&b, "SHOW statement_timeout").await;
    a.simple_query("SET statement_timeout = '1234ms'").await.unwrap();
    a.simple_query("SET search_path TO pg_catalog, public").await.unwrap();
    // b shares the single server connection but must not see a's settings ...
    assert_eq!(one(&b, "SHOW statement_timeout").await, default_timeout);
    assert_eq!(one(&b, "SHOW search_path").await, "\"$user\", public");
    // ... and a keeps them on every transaction.
    for _ in 0..3 {
        assert_eq!(one(&a, "SHOW statement_timeout").await, "1234ms");
        assert_eq!(one(&a, "SHOW search_path").await, "pg_catalog, public");
        assert_eq!(one(&b, "SHOW statement_timeout").await, default_timeout);
    }
    a.simple_query("RESET statement_timeout").await.unwrap();
    assert_eq!(one(&a, "SHOW statement_timeout").await, default_timeout);
    // SET LOCAL and rolled-back SETs do not stick.
    a.simple_query("BEGIN; SET LOCAL work_mem = '7MB'; COMMIT").await.unwrap();
    a.simple_query("BEGIN; SET work_mem = '9MB'; ROLLBACK").await.unwrap();
    assert_eq!(one(&a, "SHOW work_mem").await, one(&b, "SHOW work_mem").await);
}

#[tokio::test]
async fn startup_parameters_are_replayed_per_client() {
    let proxy = Proxy::start(&pool_toml(1, ""));
    let url = format!("{} application_name=svc-a options='-c statement_timeout=4321'", proxy.url("app", "app", "app"));
    let (a, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let b = proxy.connect("app").await;
    for _ in 0..3 {
        assert_eq!(one(&a, "SHOW application_name").await, "svc-a");
        assert_eq!(one(&a, "SHOW statement_timeout").await, "4321ms");
        assert_ne!(one(&b, "SHOW application_name").await, "svc-a");
    }
    // RESET returns to the startup values, as on a direct connection (asyncpg's pool reset).
    a.simple_query("SET application_name = 'changed'; SET statement_timeout = 10").await.unwrap();
    assert_eq!(one(&b, "SELECT 1").await, "1");
    assert_eq!(one(&a, "SHOW application_name").await, "changed");
    a.simple_query("RESET ALL").await.unwrap();
    assert_eq!(one(&b, "SELECT 1").await, "1");
    assert_eq!(one(&a, "SHOW application_name").await, "svc-a");
    assert_eq!(one(&a, "SHOW statement_timeout").await, "4321ms");
}

#[tokio::test]
async fn a_client_that_vanishes_mid_transaction_leaves_nothing_behind() {
    let proxy = Proxy::start(&pool_toml(1, ""));
    let c = proxy.connect("app").await;
    c.simple_query("DROP TABLE IF EXISTS vanish; CREATE TABLE vanish (id int)").await.unwrap();
    c.simple_query("BEGIN; INSERT INTO vanish VALUES (1)").await.unwrap();
    let pid: i32 = one(&c, "SELECT pg_backend_pid()").await.parse().unwrap();
    drop(c);
    let next = proxy.connect("app").await;
    assert_eq!(one(&next, "SELECT count(*) FROM vanish").await, "0");
    assert_eq!(one(&next, "SELECT now() = statement_timestamp()").await, "t", "not inside a leftover transaction");
    // The server connection that held the transaction is gone or idle, never idle in transaction.
    // (Closed, its backend notices the end of its socket a moment later: asked until then.)
    let admin = direct("postgres").await;
    let mut state: Option<String> = None;
    for _ in 0..50 {
        let q = admin.query_opt("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap();
        state = q.map(|r| r.get(0));
        if !state.as_deref().unwrap_or("").starts_with("idle in transaction") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!state.as_deref().unwrap_or("").starts_with("idle in transaction"), "{state:?}");
}

#[tokio::test]
async fn session_mode_resets_the_server_between_clients() {
    let proxy = Proxy::start_with(&pool_toml(1, ""), &["--pool-mode", "session"]);
    let a = proxy.connect("app").await;
    a.simple_query("SET statement_timeout = '999ms'; CREATE TEMP TABLE t_sess (a int)").await.unwrap();
    let pid = one(&a, "SELECT pg_backend_pid()").await;
    drop(a);
    let b = proxy.connect("app").await;
    assert_eq!(one(&b, "SELECT pg_backend_pid()").await, pid, "the same server connection is reused");
    assert_ne!(one(&b, "SHOW statement_timeout").await, "999ms");
    assert_eq!(one(&b, "SELECT count(*) FROM pg_tables WHERE tablename = 't_sess'").await, "0");
}

#[tokio::test]
async fn session_scoped_features_pin_the_client_to_its_server() {
    let proxy = Proxy::start(&pool_toml(2, ""));
    let a = proxy.connect("app").await;
    a.simple_query("CREATE TEMP TABLE pinned_tmp (a int); INSERT INTO pinned_tmp VALUES (1)").await.unwrap();
    let others: Vec<_> = futures_util::future::join_all((0..4).map(|_| proxy.connect("app"))).await;
    for o in &others {
        o.simple_query("SELECT 1").await.unwrap();
    }
    // The temp table lives on one server connection; a must keep landing there.
    for _ in 0..5 {
        assert_eq!(one(&a, "SELECT count(*) FROM pinned_tmp").await, "1");
    }
}

#[tokio::test]
async fn idle_timeout_and_lifetime_close_server_connections() {
    let proxy = Proxy::start("[pool]\nmax_size = 2\nidle_timeout_ms = 200\n");
    let c = proxy.connect("app").await;
    c.simple_query("SELECT 1").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, s) = proxy.http_get("/health/status");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        if v["connection_pool"]["size"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "idle connection not closed: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let proxy = Proxy::start("[pool]\nmax_size = 1\nlifetime_ms = 300\n");
    let c = proxy.connect("app").await;
    let first = one(&c, "SELECT pg_backend_pid()").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_ne!(one(&c, "SELECT pg_backend_pid()").await, first, "connection past its lifetime was reused");
}

#[tokio::test]
async fn a_dead_idle_server_connection_is_replaced_before_use() {
    let proxy = Proxy::start(&pool_toml(1, ""));
    let c = proxy.connect("app").await;
    let pid: i32 = one(&c, "SELECT pg_backend_pid()").await.parse().unwrap();
    direct("postgres").await.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next: i32 = one(&c, "SELECT pg_backend_pid()").await.parse().unwrap();
    assert_ne!(next, pid);
}
