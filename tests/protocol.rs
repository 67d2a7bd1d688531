//! Protocol behaviour through pgpilot with tokio-postgres and raw frames: simple and extended
//! queries, pipelines, errors inside pipelines, COPY both ways, cancel, NOTICE pass-through.

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, Raw};
use common::{first_column, pool_toml, Proxy};
use futures_util::future::join_all;
use tokio_postgres::types::Type;

const TRUST_USER: &str =
    "\n[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n\n[[users]]\nname = \"app\"\npassword = \"app\"\n";

#[tokio::test]
async fn simple_multi_statement_and_extended_queries() {
    let proxy = Proxy::start(&pool_toml(2, ""));
    let c = proxy.connect("app").await;
    let msgs = c.simple_query("BEGIN; SELECT 1; SELECT 'two'; COMMIT;").await.unwrap();
    assert_eq!(first_column(&msgs), ["1", "two"]);
    let r = c.query_typed("SELECT $1::int + 1, $2::text", &[(&41i32, Type::INT4), (&"x", Type::TEXT)]).await.unwrap();
    assert_eq!((r[0].get::<_, i32>(0), r[0].get::<_, String>(1)), (42, "x".to_string()));
    let err = c.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");
    assert_eq!(first_column(&c.simple_query("SELECT 'still usable'").await.unwrap()), ["still usable"]);
}

#[tokio::test]
async fn pipelined_queries_from_many_clients_on_a_small_pool() {
    let proxy = Proxy::start(&pool_toml(2, ""));
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(proxy.connect("app").await);
    }
    let work = clients.iter().enumerate().map(|(ci, c)| async move {
        // tokio-postgres pipelines concurrent queries on one connection.
        let futs = (0..20).map(|i| async move {
            let v = (ci * 100 + i) as i32;
            let r = c.query_typed("SELECT $1::int * 2", &[(&v, Type::INT4)]).await.unwrap();
            assert_eq!(r[0].get::<_, i32>(0), v * 2);
        });
        join_all(futs).await;
    });
    tokio::time::timeout(Duration::from_secs(60), join_all(work)).await.expect("pipelines finished");
}

#[tokio::test]
async fn an_error_inside_a_pipeline_skips_to_sync() {
    let proxy = Proxy::start(&pool_toml(1, TRUST_USER));
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut batch = Vec::new();
    for sql in ["SELECT 1", "SELECT 1/0", "SELECT 3"] {
        batch.extend(raw::parse("", sql));
        batch.extend(raw::bind("", ""));
        batch.extend(raw::execute(""));
    }
    batch.extend(raw::sync());
    batch.extend(raw::parse("", "SELECT 4"));
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    r.send(&batch).await;
    let first = String::from_utf8_lossy(&r.until_ready().await.unwrap()).into_owned();
    // 1: ParseComplete BindComplete DataRow CommandComplete; 2: an error (at Bind or Execute,
    // depending on when the server folds 1/0); 3: skipped entirely.
    assert!(first.starts_with("12DC1"), "{first}");
    assert!(first.ends_with("EZ") && first.matches('D').count() == 1, "{first}");
    let second = r.until_ready().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&second), "12DCZ");
}

#[tokio::test]
async fn flush_does_not_release_the_server_mid_statement() {
    // asyncpg's pattern: Parse + Describe + Flush, read, then Bind + Execute + Sync.
    let proxy = Proxy::start(&pool_toml(1, TRUST_USER));
    let mut a = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut b = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut first = raw::parse("", "SELECT 7");
    first.extend(raw::msg(b'D', b"S\0"));
    first.extend(raw::msg(b'H', b""));
    a.send(&first).await;
    assert_eq!(a.next().await.unwrap().0, b'1');
    assert_eq!(a.next().await.unwrap().0, b't');
    assert_eq!(a.next().await.unwrap().0, b'T');
    // b must wait: a still holds the only connection.
    b.send(&raw::query("SELECT 8")).await;
    let mut second = raw::bind("", "");
    second.extend(raw::execute(""));
    second.extend(raw::sync());
    a.send(&second).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "2DCZ");
    let (tag, body) = b.next().await.unwrap();
    assert_eq!(tag, b'T', "{}", String::from_utf8_lossy(&body));
    assert_eq!(String::from_utf8_lossy(&b.until_ready().await.unwrap()), "DCZ");
}

#[tokio::test]
async fn copy_in_and_out_round_trip() {
    use futures_util::SinkExt;
    use futures_util::StreamExt;
    let proxy = Proxy::start(&pool_toml(2, ""));
    let c = proxy.connect("app").await;
    c.simple_query("DROP TABLE IF EXISTS copy_rt; CREATE TABLE copy_rt (id int, body text)").await.unwrap();
    let sink = c.copy_in("COPY copy_rt FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!("{i}\tline {i} {}\n", "x".repeat(i % 50)));
    }
    for chunk in data.as_bytes().chunks(100_000) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 20_000);
    let stream = c.copy_out("COPY (SELECT * FROM copy_rt ORDER BY id) TO STDOUT").await.unwrap();
    let parts: Vec<_> = stream.collect().await;
    let out: Vec<u8> = parts.into_iter().flat_map(|p| p.unwrap().to_vec()).collect();
    assert_eq!(out, data.as_bytes());
    // A failing COPY leaves the connection usable.
    let err = c.simple_query("COPY copy_rt FROM STDIN WITH (FORMAT csv, DELIMITER 'xx')").await.unwrap_err();
    assert!(err.code().is_some());
    assert_eq!(first_column(&c.simple_query("SELECT count(*) FROM copy_rt").await.unwrap()), ["20000"]);
}

#[tokio::test]
async fn cancel_reaches_the_running_query_only() {
    let proxy = Proxy::start(&pool_toml(2, ""));
    let c = proxy.connect("app").await;
    let other = proxy.connect("app").await;
    let token = c.cancel_token();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let slow_other = other.simple_query("SELECT pg_sleep(1.0)");
    let (err, other_result) = tokio::join!(c.simple_query("SELECT pg_sleep(10)"), slow_other);
    let err = err.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014");
    assert!(started.elapsed() < Duration::from_secs(3), "cancel took {:?}", started.elapsed());
    assert!(other_result.is_ok(), "the other client's query must not be cancelled");
    canceller.await.unwrap();
    assert_eq!(first_column(&c.simple_query("SELECT 'after cancel'").await.unwrap()), ["after cancel"]);
}

#[tokio::test]
async fn notices_and_parameter_status_pass_through() {
    let proxy = Proxy::start(&pool_toml(1, TRUST_USER));
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    r.send(&raw::query("DO $$ BEGIN RAISE NOTICE 'hello'; END $$; SET application_name = 'renamed'")).await;
    let tags = r.until_ready().await.unwrap();
    assert!(tags.contains(&b'N'), "NoticeResponse expected: {:?}", String::from_utf8_lossy(&tags));
    assert!(tags.contains(&b'S'), "ParameterStatus expected: {:?}", String::from_utf8_lossy(&tags));
}
