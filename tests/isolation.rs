//! Isolation rules that need pgpilot's internals in view (the Python tests in
//! tests/clients/test_isolation_*.py cover the drivers' side).

mod common;

use common::cache::{hits, make_table, text_rows, until_hit};
use common::{pool_toml, Proxy};

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
