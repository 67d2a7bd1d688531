//! Query insights through pgpilot: statistics checked against pg_stat_statements on the same
//! workload, /queries, the slow-query counter and the duration histogram series.

mod common;

use std::collections::HashMap;

use common::Proxy;
use tokio_postgres::types::Type;

fn pgss_port() -> u16 {
    std::env::var("TEST_PGSS_PORT")
        .expect("TEST_PGSS_PORT is not set: run through tests/run.sh (it starts a cluster with pg_stat_statements)")
        .parse()
        .unwrap()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

fn queries(proxy: &Proxy) -> Vec<serde_json::Value> {
    let (code, body) = proxy.http_get("/queries?sort=calls");
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn statistics_agree_with_pg_stat_statements() {
    let port = pgss_port();
    let admin = connect(&format!("host=127.0.0.1 port={port} user=postgres dbname=app")).await;
    let proxy =
        Proxy::start_with("[pool]\nmax_size = 2\n", &["--upstream", &format!("postgres://app:app@127.0.0.1:{port}")]);
    let c = proxy.connect("app").await;
    admin.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
    // What the client itself waited, per text: the proxy's measure lies inside it.
    let mut client_ms: HashMap<&str, f64> = HashMap::new();
    let mut timed = |text: &'static str, started: std::time::Instant| {
        *client_ms.entry(text).or_default() += started.elapsed().as_secs_f64() * 1000.0;
    };
    for i in 0..40i32 {
        let t = std::time::Instant::now();
        c.query_typed("SELECT pg_sleep(0.005), $1::int AS v", &[(&i, Type::INT4)]).await.unwrap();
        timed("SELECT pg_sleep($2), $1::int AS v", t);
        let t = std::time::Instant::now();
        c.simple_query(&format!("SELECT 1 + {i}")).await.unwrap();
        timed("SELECT $1 + $2", t);
    }
    let stmt = c.prepare("SELECT count(*) FROM pg_class WHERE relpages > $1").await.unwrap();
    for i in 0..30i32 {
        let t = std::time::Instant::now();
        c.query_one(&stmt, &[&i]).await.unwrap();
        timed("SELECT count(*) FROM pg_class WHERE relpages > $1", t);
    }
    let pgss: HashMap<String, (i64, f64)> = admin
        .query("SELECT query, calls, mean_exec_time FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'app')", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get::<_, String>(0), (r.get::<_, i64>(1), r.get::<_, f64>(2))))
        .collect();
    let ours = queries(&proxy);
    for text in
        ["SELECT pg_sleep($2), $1::int AS v", "SELECT $1 + $2", "SELECT count(*) FROM pg_class WHERE relpages > $1"]
    {
        let (calls, mean) = *pgss.get(text).unwrap_or_else(|| panic!("{text} not in pg_stat_statements: {pgss:?}"));
        let row = ours.iter().find(|r| r["query"] == text).unwrap_or_else(|| panic!("{text} not in /queries"));
        assert_eq!(row["calls"].as_i64().unwrap(), calls, "calls for {text}");
        let our_mean = row["mean_ms"].as_f64().unwrap();
        let client_mean = client_ms[text] / calls as f64;
        // The proxy measures from sending to completion: never less than the server's own
        // execution time, never more than the client waited for the same calls (a fixed
        // margin instead would fail whenever the shared machine delays a wake-up).
        assert!(
            our_mean >= mean * 0.95 && our_mean <= client_mean + 0.05,
            "{text}: ours {our_mean} ms, pgss {mean} ms, client {client_mean} ms"
        );
        assert!(row["p50_ms"].as_f64().unwrap() <= row["p99_ms"].as_f64().unwrap());
    }
}

#[tokio::test]
async fn queries_endpoint_sorting_slow_counter_and_histogram_series() {
    let proxy = Proxy::start("[pool]\nmax_size = 2\n[insights]\nslow_query_ms = 30\nmetrics_top_k = 1\n");
    let c = proxy.connect("app").await;
    for i in 0..5 {
        c.simple_query(&format!("SELECT {i} AS fast")).await.unwrap();
    }
    c.simple_query("SELECT pg_sleep(0.06)").await.unwrap();
    let err = c.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");
    let (_, body) = proxy.http_get("/queries?sort=total_ms&limit=1");
    let top: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0]["query"], "SELECT pg_sleep($1)");
    assert!(top[0]["fingerprint"].as_str().unwrap().len() == 16);
    let rows = queries(&proxy);
    let fast = rows.iter().find(|r| r["query"] == "SELECT $1 AS fast").expect("one row for all literals");
    assert_eq!(fast["calls"], 5);
    assert_eq!(fast["rows"], 5);
    let div = rows.iter().find(|r| r["query"] == "SELECT $1/$2").unwrap();
    assert_eq!(div["errors"], 1);
    let (_, m) = proxy.http_get("/metrics");
    assert!(m.contains("pgpilot_slow_queries_total 1"), "{m}");
    let fp = top[0]["fingerprint"].as_str().unwrap();
    assert!(m.contains(&format!("fingerprint=\"{fp}\",le=\"+Inf\"}} 1")), "top-1 series missing:\n{m}");
    assert!(m.contains("fingerprint=\"other\",le=\"+Inf\"}"), "{m}");
    assert!(!m.contains("SELECT"), "no query text in metric labels");
}

/// A routine body in the SQL-standard form is one statement: its inner semicolons do not split
/// it, so the server's CommandCompletes go to the statements they complete and no fragment (its
/// `END`, the rejected head) shows up as a statement of its own.
#[tokio::test]
async fn a_standard_routine_body_counts_as_one_statement() {
    let proxy = Proxy::start("[pool]\nmax_size = 2\n");
    let c = proxy.connect("app").await;
    let create = "CREATE OR REPLACE FUNCTION pgpilot_atomic_body(a int) RETURNS int LANGUAGE sql \
                  BEGIN ATOMIC SELECT a + 1; END";
    let replies = c.simple_query(&format!("{create}; SELECT pgpilot_atomic_body(41) AS answer")).await.unwrap();
    assert_eq!(common::rows(&replies), [["42"]]);
    let rows = queries(&proxy);
    let texts: Vec<&str> = rows.iter().filter_map(|r| r["query"].as_str()).collect();
    assert_eq!(texts.len(), 2, "the CREATE FUNCTION and the SELECT: {texts:?}");
    assert!(!texts.iter().any(|t| *t == "END" || t.contains("rejected")), "a fragment counted: {texts:?}");
    // (DDL is listed by its statement type, its text not shown.)
    let routine = rows.iter().find(|r| r["query"].as_str().is_some_and(|q| q.contains("CreateFunctionStmt")));
    assert_eq!(routine.map(|r| r["calls"].clone()), Some(serde_json::json!(1)), "{texts:?}");
    let call = rows.iter().find(|r| r["query"].as_str().is_some_and(|q| q.starts_with("SELECT pgpilot_atomic_body(")));
    assert_eq!(call.map(|r| r["calls"].clone()), Some(serde_json::json!(1)), "{texts:?}");
    c.simple_query("DROP FUNCTION pgpilot_atomic_body(int)").await.unwrap();
}
