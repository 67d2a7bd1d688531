//! Process lifecycle and the HTTP side: reload on SIGHUP, graceful shutdown on SIGTERM, TLS,
//! --check, /health, /health/status and /metrics.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{pool_toml, Proxy};

#[tokio::test]
async fn sighup_reload_changes_pool_size_without_dropping_clients() {
    let proxy = Proxy::start("[pool]\nmax_size = 1\ncheckout_timeout_ms = 300\n");
    let a = proxy.connect("app").await;
    let b = proxy.connect("app").await;
    a.simple_query("BEGIN; SELECT 1").await.unwrap();
    assert_eq!(b.simple_query("SELECT 1").await.unwrap_err().code().unwrap().code(), "53300");
    proxy.rewrite_config("[pool]\nmax_size = 3\ncheckout_timeout_ms = 300\n");
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, s) = proxy.http_get("/health/status");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        if v["connection_pool"]["max_size"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "reload not applied: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.simple_query("BEGIN").await.unwrap();
    a.simple_query("COMMIT").await.unwrap();
    b.simple_query("COMMIT").await.unwrap();
}

#[tokio::test]
async fn sigterm_lets_transactions_finish_then_exits() {
    let mut proxy = Proxy::start(&pool_toml(2, "[server]\nshutdown_timeout_ms = 10000"));
    let busy = proxy.connect("app").await;
    let idle = proxy.connect("app").await;
    busy.simple_query("DROP TABLE IF EXISTS shutdown_t; CREATE TABLE shutdown_t (a int)").await.unwrap();
    busy.simple_query("BEGIN; INSERT INTO shutdown_t VALUES (1)").await.unwrap();
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New clients are refused, the idle one is told to go, the open transaction may finish.
    assert!(proxy.connect_as("app", "app", "app").await.is_err());
    assert!(idle.simple_query("SELECT 1").await.is_err());
    busy.simple_query("INSERT INTO shutdown_t VALUES (2); COMMIT").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = proxy.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "pgpilot did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let n: i64 = common::direct("app").await.query_one("SELECT count(*) FROM shutdown_t", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn http_health_status_and_metrics() {
    let proxy = Proxy::start(&pool_toml(4, ""));
    let c = proxy.connect("app").await;
    c.simple_query("SELECT 1").await.unwrap();
    let (code, body) = proxy.http_get("/health");
    assert_eq!(code, 200, "{body}");
    let (_, s) = proxy.http_get("/health/status");
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    let cp = &v["connection_pool"];
    for k in ["pool_utilization", "active", "idle", "waiting", "size", "max_size"] {
        assert!(cp[k].is_number(), "{k} missing in {s}");
    }
    assert_eq!(v["pools"][0]["database"], "app");
    assert_eq!(v["pools"][0]["max_size"], 4);
    let (_, m) = proxy.http_get("/metrics");
    for series in [
        "pgpilot_pool_connections{database=\"app\",user=\"app\",state=\"idle\"}",
        "pgpilot_pool_size{database=\"app\",user=\"app\"} 4",
        "pgpilot_clients{state=\"total\"} 1",
        "pgpilot_pool_wait_time_seconds_bucket",
    ] {
        assert!(m.contains(series), "{series} missing from /metrics:\n{m}");
    }
}

#[tokio::test]
async fn min_size_is_opened_at_start_for_warm_databases() {
    let proxy = Proxy::start("[pool]\nmin_size = 3\nmax_size = 5\nwarm_databases = [\"app\"]\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, s) = proxy.http_get("/health/status");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        if v["connection_pool"]["idle"] == 3 {
            assert_eq!(v["pools"][0]["database"], "app");
            break;
        }
        assert!(Instant::now() < deadline, "min_size not warmed: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_is_503_when_upstream_is_unreachable() {
    let port = common::free_port();
    let proxy = Proxy::start_with("", &["--upstream", &format!("postgres://app:app@127.0.0.1:{port}")]);
    let (code, body) = proxy.http_get("/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"upstream_reachable\":false"), "{body}");
    // The liveness form does not ask the upstream: a database outage is no reason to restart.
    let (code, body) = proxy.http_get("/health?live");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"upstream_reachable\":null"), "{body}");
}

/// A 20 s sleep canceled by the client's CancelRequest after 300 ms: 57014 well before it ends.
async fn cancel_a_sleep(c: &tokio_postgres::Client) {
    let token = c.cancel_token();
    let started = Instant::now();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let err = c.simple_query("SELECT pg_sleep(20)").await.expect_err("the cancel reaches the server");
    cancel.await.unwrap().unwrap();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A server on the same machine by its Unix-domain socket (libpq's `%2Fdir` host): queries, a
/// forwarded cancel, SHOW SERVERS, /health, and an idle connection the server closed (found by the
/// peek below the stream) all work as over TCP.
#[tokio::test]
async fn upstream_by_unix_domain_socket() {
    let dir = std::env::var("HARNESS_DIR").expect("HARNESS_DIR: run through tests/run.sh");
    let upstream = format!("postgres://app:app@{}:{}", dir.replace('/', "%2F"), common::pg_port());
    let toml = "[pool]\nmax_size = 2\n[server]\nadmin_users = [\"app\"]\n";
    let proxy = Proxy::start_with(toml, &["--upstream", &upstream]);
    let c = proxy.connect("app").await;
    // inet_server_addr() is NULL on a Unix-domain socket, 127.0.0.1 over TCP.
    let row = c.query_one("SELECT inet_server_addr() IS NULL, pg_backend_pid()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "the server connection is not the Unix-domain socket");
    let admin = proxy.connect("pgbouncer").await;
    let servers = common::rows(&admin.simple_query("SHOW SERVERS").await.unwrap());
    assert!(!servers.is_empty() && servers.iter().all(|r| r[5] == "unix" && r[6] == common::pg_port().to_string()));
    let (code, body) = proxy.http_get("/health");
    assert_eq!(code, 200, "{body}");

    cancel_a_sleep(&c).await;

    // The server ends every idle connection; the next checkout peeks, finds them closed, opens anew.
    let direct = common::direct("postgres").await;
    let killed =
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle'";
    assert!(direct.query_one(killed, &[]).await.unwrap().get::<_, i64>(0) >= 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = c.query_one("SELECT inet_server_addr() IS NULL", &[]).await.expect("a fresh server connection");
    assert!(again.get::<_, bool>(0));
}

/// A `[tls]` section with a new self-signed certificate written in `dir`.
fn tls_toml(dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-keyout", key.to_str().unwrap(), "-out", crt.to_str().unwrap()])
        .output()
        .expect("openssl is needed for the TLS tests");
    assert!(ok.status.success());
    format!("[tls]\ncert = {crt:?}\nkey = {key:?}\n")
}

/// Clients on the Unix-domain socket (`server.unix_socket_dir`): a login, SHOW CLIENTS' `unix`,
/// a cancel that arrives on the socket, SSLRequest answered 'N' there (TLS is configured and TCP
/// says 'S'), and the file gone after SIGTERM.
#[tokio::test]
async fn clients_on_the_unix_domain_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = common::TempDir(std::env::temp_dir().join(format!("pgpilot-listen-{}", common::free_port())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let d = dir.0.to_str().unwrap();
    let tls = tls_toml(&dir.0.join("tls"));
    let mut proxy = Proxy::start(&format!("{tls}[server]\nadmin_users = [\"app\"]\nunix_socket_dir = \"{d}\"\n"));
    let url = format!("host={d} port={} user=app password=app dbname=app", proxy.port);
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("a login on the socket");
    tokio::spawn(conn);
    assert_eq!(c.query_one("SELECT 6 * 7", &[]).await.unwrap().get::<_, i32>(0), 42);
    let tcp = proxy.connect("app").await;
    let admin = proxy.connect("pgbouncer").await;
    let clients = common::rows(&admin.simple_query("SHOW CLIENTS").await.unwrap());
    let port = proxy.port.to_string();
    assert!(clients.iter().any(|r| r[5] == "unix" && r[6] == port && r[7] == "unix"), "{clients:?}");
    assert!(clients.iter().any(|r| r[5] == "127.0.0.1" && r[6] != port), "a TCP client beside it: {clients:?}");

    cancel_a_sleep(&c).await;

    let path = dir.0.join(format!(".s.PGSQL.{}", proxy.port));
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];
    let mut raw = tokio::net::UnixStream::connect(&path).await.unwrap();
    raw.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(raw.read_u8().await.unwrap(), b'N');
    let mut over_tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    over_tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(over_tcp.read_u8().await.unwrap(), b'S');
    drop((raw, over_tcp, c, tcp, admin));
    proxy.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.child.try_wait().unwrap().is_some(), "exited after SIGTERM");
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[test]
fn check_flag_validates_config() {
    let bin = env!("CARGO_BIN_EXE_pgpilot");
    let dir = std::env::temp_dir().join(format!("pgpilot-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "[upstream]\nurl = \"postgres://app:pw@127.0.0.1:5432\"\n[pool]\nmax_size = 5\n").unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[pool]\nmax_size = 0\n").unwrap();
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[pool]\nmax_sise = 5\n").unwrap();
    let run =
        |p: &std::path::Path| Command::new(bin).args(["--check", "--config", p.to_str().unwrap()]).output().unwrap();
    assert_eq!(run(&good).status.code(), Some(0));
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_size"));
    assert_eq!(run(&typo).status.code(), Some(2));
    // With no upstream from a flag, the file or the environment: one line saying what to pass.
    let bare = dir.join("bare.toml");
    std::fs::write(&bare, "[pool]\nmax_size = 5\n").unwrap();
    for args in [vec!["--check"], vec!["--check", "--config", bare.to_str().unwrap()], vec![]] {
        let out = Command::new(bin)
            .args(&args)
            .env_remove("DATABASE_URL")
            .env_remove("PGPILOT_UPSTREAM")
            .env_remove("PGPILOT_UPSTREAM_URL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("--upstream") && err.contains("DATABASE_URL"), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Containers configure by environment alone: `PGPILOT_<SECTION>_<KEY>` for every scalar key,
/// `PGPILOT_USERS_FILE` for the users, `DATABASE_URL` for the upstream; `--check` prints the
/// effective configuration with every secret masked, and a misspelt variable is an error.
#[test]
fn environment_alone_configures_and_check_prints_it_masked() {
    let bin = env!("CARGO_BIN_EXE_pgpilot");
    let users = std::env::temp_dir().join(format!("pgpilot-users-{}.toml", std::process::id()));
    std::fs::write(&users, "[[users]]\nname = \"mcp\"\npassword = \"userpw-secret\"\n").unwrap();
    let out = Command::new(bin)
        .arg("--check")
        .env("DATABASE_URL", "postgres://app:upstream-secret@db.internal:5433")
        .env("PGPILOT_POOL_MAX_SIZE", "37")
        .env("PGPILOT_CACHE_REDIS_URL", "redis://:redis-secret@redis:6379")
        .env("PGPILOT_STRATEGY_SLOW_LANE_SHARE", "0.4")
        .env("PGPILOT_SERVER_ADMIN_USERS", "ops,mcp")
        .env("PGPILOT_HTTP_TOKEN", "token-secret")
        .env("PGPILOT_USERS_FILE", &users)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&users);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "max_size = 37",
        "slow_lane_share = 0.4",
        "admin_users = [\"ops\", \"mcp\"]",
        "url = \"postgres://app:********@db.internal:5433\"",
        "redis_url = \"redis://:********@redis:6379\"",
        "name = \"mcp\"",
    ] {
        assert!(shown.contains(want), "{want} in\n{shown}");
    }
    assert!(!shown.contains("secret"), "a secret printed:\n{shown}");
    let typo = Command::new(bin).arg("--check").env("PGPILOT_POOL_MAX_SISE", "5").output().unwrap();
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("max_sise"));
}

#[tokio::test]
async fn tls_when_a_certificate_is_configured() {
    let dir = std::env::temp_dir().join(format!("pgpilot-tls-{}", std::process::id()));
    let proxy = Proxy::start(&tls_toml(&dir));
    // The distribution's psql: it is built with OpenSSL (the pgserver build used for the server is not).
    let out = Command::new("psql")
        .arg(format!("host=127.0.0.1 port={} user=app dbname=app sslmode=require", proxy.port))
        .args(["-tAXc", "SELECT 'over tls'"])
        .env("PGPASSWORD", "app")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");
    let _ = std::fs::remove_dir_all(dir);
}
