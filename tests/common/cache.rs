//! Helpers for the result-cache tests: tables made behind the proxy's back (before it starts, so
//! its list of ordinary tables has them), and the cache counters from /health/status.

use std::time::Duration;

use super::{direct, Proxy};

/// (Re)creates `name` in database `app` with `rows` rows (id, v), owned by app, readable by all.
pub async fn make_table(name: &str, rows: i32) {
    let d = direct("app").await;
    d.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name} CASCADE; CREATE TABLE {name} (id int PRIMARY KEY, v text NOT NULL);
         INSERT INTO {name} SELECT g, 'v' || g FROM generate_series(1, {rows}) g;
         ALTER TABLE {name} OWNER TO app; GRANT SELECT ON {name} TO PUBLIC;"
    ))
    .await
    .expect("creating the test table");
}

pub fn cache_status(proxy: &Proxy) -> serde_json::Value {
    let (code, body) = proxy.http_get("/health/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).expect("status JSON")["cache"].clone()
}

pub fn counter(proxy: &Proxy, name: &str) -> u64 {
    cache_status(proxy)[name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
}

pub fn hits(proxy: &Proxy) -> u64 {
    counter(proxy, "hits")
}

/// Runs `sql` until the proxy answers it from its cache (the table list loads in the background
/// on first use); returns the rows of the hit as text.
pub async fn until_hit(proxy: &Proxy, client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    for _ in 0..100 {
        let before = hits(proxy);
        let rows = text_rows(client, sql).await;
        if hits(proxy) > before {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{sql} was never answered from the cache: {}", cache_status(proxy));
}

/// All values of a simple query's rows, as text, one string per row.
pub async fn text_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    super::rows(&client.simple_query(sql).await.expect(sql)).into_iter().map(|r| r.join("|")).collect()
}

pub const TRUST_USERS: &str =
    "[[users]]\nname = \"app\"\npassword = \"app\"\n\n[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n";
