//! Nothing a client sends leaves pgpilot through its surfaces: canary literals planted in every
//! kind of statement never show in /queries, /insights/n-plus-one, /metrics, SHOW QUERIES or the
//! info-level log (docs/RELIABILITY.md, "Limits").

mod common;

use common::Proxy;

const CANARY: &str = "kanarie";

#[tokio::test]
async fn no_literal_leaves_pgpilot() {
    let dir = std::env::temp_dir().join(format!("pgpilot-canary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("pgpilot.log");
    let admin = "[server]\nadmin_users = [\"app\"]\n[pool]\nmax_size = 4\n";
    let proxy = Proxy::start_logging(admin, &[], Some((&log, "info")));
    let c = proxy.connect("app").await;
    c.batch_execute("DROP TABLE IF EXISTS canary_t; CREATE TABLE canary_t (v text)").await.unwrap();
    let statements = [
        format!("SELECT '{CANARY}_select' AS x"),
        format!("SELECT v FROM canary_t WHERE v = '{CANARY}_where' LIMIT 5"),
        format!("INSERT INTO canary_t VALUES ('{CANARY}_insert')"),
        format!("UPDATE canary_t SET v = '{CANARY}_update' WHERE v = '{CANARY}_insert'"),
        format!("DELETE FROM canary_t WHERE v = '{CANARY}_delete'"),
        format!("COMMENT ON TABLE canary_t IS '{CANARY}_comment'"),
        format!("PREPARE canary_p AS SELECT '{CANARY}_prepare'"),
        "DEALLOCATE canary_p".to_string(),
        format!("DO $$BEGIN PERFORM '{CANARY}_do'; END$$"),
        format!("SET myapp.tag = '{CANARY}_set'"),
        format!("EXPLAIN SELECT '{CANARY}_explain'"),
        format!("CREATE TABLE IF NOT EXISTS canary_t2 (v text DEFAULT '{CANARY}_default')"),
    ];
    for sql in &statements {
        c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let unparsable = format!("SELEC '{CANARY}_unparsable' FROM");
    assert!(c.simple_query(&unparsable).await.is_err());
    let two_phase = format!("COMMIT PREPARED '{CANARY}_gid'"); // fails: no such transaction
    assert!(c.simple_query(&two_phase).await.is_err());
    let copy = format!("COPY (SELECT '{CANARY}_copy') TO STDOUT");
    let out = c.copy_out(copy.as_str()).await.unwrap();
    futures_util::pin_mut!(out);
    use futures_util::StreamExt;
    while let Some(chunk) = out.next().await {
        chunk.unwrap();
    }
    // The extended protocol with the literal inline, and as a parameter.
    c.query(&format!("SELECT '{CANARY}_extended' AS x"), &[]).await.unwrap();
    c.query("SELECT $1::text AS x", &[&format!("{CANARY}_param")]).await.unwrap();

    let (_, queries) = proxy.http_get("/queries");
    assert!(queries.contains("CommentStmt"), "utility statements are listed, by type: {queries}");
    let admin = proxy.connect("pgpilot").await;
    let show = common::rows(&admin.simple_query("SHOW QUERIES").await.unwrap());
    let surfaces = [
        ("/queries", queries),
        ("/insights/n-plus-one", proxy.http_get("/insights/n-plus-one").1),
        ("/metrics", proxy.http_get("/metrics").1),
        ("/health/status", proxy.http_get("/health/status").1),
        ("SHOW QUERIES", format!("{show:?}")),
    ];
    drop(c);
    drop(admin);
    drop(proxy); // the log is complete once the process is gone
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("INFO"), "the log was written at info level");
    for (name, text) in surfaces.iter().chain([&("info log", logged)]) {
        assert!(!text.contains(CANARY), "{name} shows a literal: {}", excerpt(text));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn excerpt(text: &str) -> &str {
    let at = text.find(CANARY).unwrap_or(0);
    let start = text[..at].char_indices().rev().nth(120).map_or(0, |(i, _)| i);
    &text[start..(at + 60).min(text.len())]
}

/// (status, body) of an HTTP request to pgpilot's HTTP listener.
fn http(port: u16, method: &str, path: &str, header: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let header = if header.is_empty() { String::new() } else { format!("{header}\r\n") };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{header}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// With `[http] token` set, the statement list, the N+1 findings and POST /cache/flush need it
/// (header or cookie); /metrics and /health stay open. Without a token they are served on a
/// loopback listener only.
#[tokio::test]
async fn insights_and_posts_need_the_token() {
    let proxy = Proxy::start("[http]\ntoken = \"t0ken\"\n");
    let p = proxy.http_port;
    for (method, path) in [("GET", "/queries"), ("GET", "/insights/n-plus-one"), ("POST", "/cache/flush")] {
        assert_eq!(http(p, method, path, "").0, 401, "{path} without the token");
        assert_eq!(http(p, method, path, "Authorization: Bearer wrong").0, 401, "{path} with another");
        assert_eq!(http(p, method, path, "Authorization: Bearer t0ken").0, 200, "{path} with it");
        assert_eq!(http(p, method, path, "Cookie: a=b; pgpilot_token=t0ken").0, 200, "{path} by cookie");
    }
    for path in ["/metrics", "/health", "/health/status"] {
        assert_eq!(http(p, "GET", path, "").0, 200, "{path} stays open");
    }

    let port = common::free_port();
    let _wide = Proxy::start_with("", &["--http-listen", &format!("0.0.0.0:{port}")]);
    assert_eq!(http(port, "GET", "/queries", "").0, 403, "no token, not loopback: not served");
    assert_eq!(http(port, "GET", "/metrics", "").0, 200);
    let local = Proxy::start("");
    assert_eq!(http(local.http_port, "GET", "/queries", "").0, 200, "no token, loopback: served");
}
