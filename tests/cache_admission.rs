//! The cache's admission against the real server: a statement whose parameters do not repeat
//! stops being looked up (and its results stay right), comes back once they repeat, and
//! `skip_unrepeated = false` looks up everything.

mod common;

use common::cache::{counter, hits, make_table, until_hit};
use common::{pool_toml, Proxy};

const SQL: &str = "SELECT v FROM cache_adm WHERE id = $1";

async fn read(c: &tokio_postgres::Client, stmt: &tokio_postgres::Statement, id: i32) {
    let v: String = c.query_one(stmt, &[&id]).await.unwrap().get(0);
    assert_eq!(v, format!("v{id}"));
}

#[tokio::test]
async fn unrepeated_reads_skip_the_cache_until_they_repeat() {
    make_table("cache_adm", 2000).await;
    let proxy = Proxy::start(&pool_toml(4, ""));
    let c = proxy.connect("app").await;
    until_hit(&proxy, &c, "SELECT v FROM cache_adm WHERE id = 1").await;
    let stmt = c.prepare(SQL).await.unwrap();
    for id in 1..=600 {
        read(&c, &stmt, id).await;
    }
    let skipped = counter(&proxy, "skipped");
    assert!(skipped >= 600 - 2 * 256, "skipped {skipped} of 600 unrepeated reads");
    let misses = counter(&proxy, "misses");
    for id in 601..=700 {
        read(&c, &stmt, id).await;
    }
    // One run per 256 still goes through the cache, to keep the shape's miss time measured.
    assert!(counter(&proxy, "misses") <= misses + 1, "a skipped statement is not looked up");
    assert!(counter(&proxy, "skipped") >= skipped + 99);
    // The same four parameters over and over: the next window sees repeats and looks up again.
    let before = hits(&proxy);
    for i in 0..600 {
        read(&c, &stmt, i % 4 + 1).await;
    }
    assert!(hits(&proxy) >= before + 200, "hits {} -> {}", before, hits(&proxy));
    // Simple protocol: literals are the parameters.
    let skipped = counter(&proxy, "skipped");
    for id in 1..=600 {
        let rows = c.simple_query(&format!("SELECT v FROM cache_adm WHERE id = {id}")).await.unwrap();
        let got = common::first_column(&rows);
        assert_eq!(got, [format!("v{id}")]);
    }
    let now = counter(&proxy, "skipped");
    assert!(now >= skipped + 600 - 2 * 256, "skipped {skipped} -> {now}: {}", common::cache::cache_status(&proxy));
}

#[tokio::test]
async fn skip_unrepeated_off_looks_up_every_read() {
    make_table("cache_adm_all", 700).await;
    let proxy = Proxy::start(&pool_toml(4, "[cache]\nskip_unrepeated = false\n"));
    let c = proxy.connect("app").await;
    until_hit(&proxy, &c, "SELECT v FROM cache_adm_all WHERE id = 1").await;
    let stmt = c.prepare("SELECT v FROM cache_adm_all WHERE id = $1").await.unwrap();
    let misses = counter(&proxy, "misses");
    for id in 2..=601 {
        read(&c, &stmt, id).await;
    }
    assert_eq!(counter(&proxy, "skipped"), 0);
    assert_eq!(counter(&proxy, "misses"), misses + 600);
}
