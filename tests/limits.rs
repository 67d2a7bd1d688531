//! Limits: no client can stall, starve or exhaust pgpilot for the others (docs/RELIABILITY.md,
//! "Limits").

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, Raw};
use common::{pool_toml, Proxy};

/// A bystander's `SELECT 1` latencies while `busy` runs (at least until it ends).
async fn bystander_latencies(proxy: &Proxy, busy: tokio::task::JoinHandle<()>) -> Vec<Duration> {
    let by = proxy.connect("app").await;
    by.simple_query("SELECT 1").await.unwrap(); // its analysis is cached from here on
    let mut took = Vec::new();
    while !busy.is_finished() {
        let t = Instant::now();
        by.simple_query("SELECT 1").await.unwrap();
        took.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    busy.await.unwrap();
    took.sort();
    took
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// A 500 KB AND chain (over `insights.max_analyzed_bytes`: not parsed; 11.8 s of parser time on
/// the runtime thread before) and a 5,000-term OR chain (under the cap: parsed off the I/O
/// threads) from one client; another client's SELECT 1 meanwhile stays fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_parser_chokes_on_stalls_only_its_own_client() {
    let proxy = Proxy::start(&pool_toml(4, ""));
    let heavy = proxy.connect("app").await;
    let busy = tokio::spawn(async move {
        let and_chain = format!("SELECT count(*) FROM (SELECT 1) s WHERE true{}", " AND 1 = 1".repeat(50_000));
        assert!(and_chain.len() > 500_000);
        let rows = heavy.simple_query(&and_chain).await.unwrap();
        assert_eq!(common::first_column(&rows), ["1"]);
        let terms: String = (0..5_000).map(|i| format!(" OR x = {i}")).collect();
        let or_chain = format!("SELECT count(*) FROM (SELECT 7 AS x) s WHERE x = -1{terms}");
        assert!(or_chain.len() < 65_536, "under the default cap: parsed");
        let rows = heavy.simple_query(&or_chain).await.unwrap();
        assert_eq!(common::first_column(&rows), ["1"]);
    });
    let took = bystander_latencies(&proxy, busy).await;
    assert!(took.len() >= 10, "the heavy statements ran long enough to measure: {} samples", took.len());
    assert!(p99(&took) < Duration::from_millis(50), "bystander p99 {:?} over {} queries", p99(&took), took.len());
    let (_, metrics) = proxy.http_get("/metrics");
    assert!(metrics.contains("pgpilot_statements_unanalyzed_total 1"), "the AND chain was not analyzed");
    let (_, queries) = proxy.http_get("/queries");
    assert!(queries.contains("not analyzed") && !queries.contains("AND 1 = 1"), "placeholder, not text");
}

const TRUST_POOL_OF_TWO: &str =
    "[pool]\nmax_size = 2\ncheckout_timeout_ms = 5000\nidle_transaction_timeout_ms = 400\n\n\
[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n";

/// Two clients idle inside a transaction hold a pool of two. A new login still succeeds at once
/// (the pool's login parameters are known: no server connection needed), its query gets a
/// connection once pool.idle_transaction_timeout_ms ends the idle ones with 25P03, and no
/// transaction is left open on the server.
#[tokio::test]
async fn idle_transactions_time_out_and_never_lock_out_logins() {
    let proxy = Proxy::start(TRUST_POOL_OF_TWO);
    let login = || async {
        let mut r = Raw::connect(proxy.port).await;
        let startup = [("user", "trustuser"), ("database", "app"), ("application_name", "idle_tx_limit_test")];
        r.send(&raw::startup_packet(&startup)).await;
        r.until_ready().await.unwrap();
        r
    };
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut r = login().await;
        r.send(&raw::query("BEGIN; SELECT 1")).await;
        r.until_ready().await.unwrap();
        idle.push(r);
    }
    let t = Instant::now();
    // Another application_name: the pool knows what to tell it from the others' logins.
    let mut late = Raw::connect(proxy.port).await;
    let startup = [("user", "trustuser"), ("database", "app"), ("application_name", "late_client")];
    late.send(&raw::startup_packet(&startup)).await;
    let told = late.messages_until_ready().await;
    let app_name = told.iter().find(|(tag, body)| *tag == b'S' && body.starts_with(b"application_name\0"));
    assert_eq!(app_name.map(|(_, b)| b.as_slice()), Some(&b"application_name\0late_client\0"[..]));
    // Settings never seen before (another DateStyle): told from the newest connection's values
    // with its own, rather than kept waiting for a connection.
    let mut other = Raw::connect(proxy.port).await;
    other.send(&raw::startup_packet(&[("user", "trustuser"), ("database", "app"), ("DateStyle", "German")])).await;
    let told = other.messages_until_ready().await;
    assert!(t.elapsed() < Duration::from_millis(300), "a login with new settings waited {:?}", t.elapsed());
    assert!(told.iter().any(|(tag, body)| *tag == b'S' && body.starts_with(b"DateStyle\0German")), "its own DateStyle");
    assert!(t.elapsed() < Duration::from_millis(300), "login waited {:?} for a server connection", t.elapsed());
    late.send(&raw::query("SELECT 1")).await;
    let messages = late.messages_until_ready().await;
    assert!(messages.iter().all(|(tag, _)| *tag != b'E'), "the late client's query ran");
    assert!(t.elapsed() >= Duration::from_millis(300), "it had to wait for the idle ones to go");
    for mut r in idle {
        assert_eq!(r.error_codes_until_close().await, ["25P03"]);
    }
    let direct = common::direct("app").await;
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'idle_tx_limit_test' \
               AND state LIKE 'idle in transaction%'";
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut open = 1;
    while open > 0 && Instant::now() < deadline {
        open = direct.query_one(sql, &[]).await.unwrap().get::<_, i64>(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, 0, "no transaction left open on the server");
}

/// A client that keeps working inside its transaction is not cut off by the timeout.
#[tokio::test]
async fn a_busy_transaction_is_not_idle() {
    let proxy = Proxy::start(TRUST_POOL_OF_TWO);
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    r.send(&raw::query("BEGIN")).await;
    r.until_ready().await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        r.send(&raw::query("SELECT pg_sleep(0.3)")).await; // running is not idle
        assert!(r.until_ready().await.is_ok());
    }
    r.send(&raw::query("COMMIT")).await;
    assert!(r.until_ready().await.is_ok());
}

/// The first `n` bytes of a Query of `len` bytes (its header announces all of it).
fn unfinished_query(len: usize, n: usize) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((len + 4) as i32).to_be_bytes());
    m.resize(n, b'x');
    m
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Eight clients each start a 10 MB Query and stop mid-way: with server.max_buffered_bytes at
/// 25 MiB the first two are buffered, the others are refused with 53200 before their bytes are
/// read, memory stays bounded, and everyone else goes on.
#[tokio::test]
async fn buffered_bytes_are_bounded_across_clients() {
    let proxy = Proxy::start(&format!("[server]\nmax_buffered_bytes = 26214400\n{TRUST_POOL_OF_TWO}"));
    let before = rss_kb(proxy.child.id());
    let mut hungry = Vec::new();
    for _ in 0..8 {
        let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
        // The header announces 10 MB; a refused client is closed on it (sending more could meet
        // the reset of that close).
        r.send(&unfinished_query(10 << 20, 1024)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        hungry.push(r);
    }
    let mut refused = 0;
    for r in hungry.iter_mut().skip(2) {
        assert_eq!(r.error_codes_until_close().await, ["53200"]);
        refused += 1;
    }
    assert_eq!(refused, 6);
    for r in hungry.iter_mut().take(2) {
        r.send(&vec![b'x'; 2 << 20]).await; // the two buffered ones go on sending
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grown = rss_kb(proxy.child.id()).saturating_sub(before);
    assert!(grown < 40 * 1024, "RSS grew {grown} kB for 25 MiB of budget");
    let mut by = Raw::login_trust(proxy.port, "trustuser", "app").await;
    by.send(&raw::query("SELECT 1")).await;
    assert!(by.until_ready().await.is_ok(), "others unaffected");
    drop(hungry); // their budget comes back when they go
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut big = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let text = format!("SELECT length('{}')", "y".repeat(15 << 20));
    big.send(&raw::query(&text)).await;
    let messages = big.messages_until_ready().await;
    assert!(messages.iter().all(|(tag, _)| *tag != b'E'), "a 15 MB Query fits once the others left");
}

/// Starts a SCRAM login as `user` and returns (time from SASLInitialResponse to the server's
/// first message, that message's salt, the raw connection).
async fn scram_first_reply(port: u16, user: &str) -> (Duration, String, Raw) {
    let mut r = Raw::connect(port).await;
    r.send(&raw::startup_packet(&[("user", user), ("database", "app")])).await;
    let (tag, _) = r.next().await.unwrap();
    assert_eq!(tag, b'R', "AuthenticationSASL");
    let first = b"n,,n=,r=abcdefghijklmnopqrstuvwx";
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend((first.len() as i32).to_be_bytes());
    body.extend(first);
    let t = Instant::now();
    r.send(&raw::msg(b'p', &body)).await;
    let (tag, reply) = r.next().await.unwrap();
    let took = t.elapsed();
    assert_eq!((tag, &reply[..4]), (b'R', &11i32.to_be_bytes()[..]), "AuthenticationSASLContinue");
    let text = String::from_utf8_lossy(&reply[4..]).into_owned();
    let salt = text.split(',').find_map(|p| p.strip_prefix("s=")).unwrap().to_string();
    (took, salt, r)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// An unknown user's SCRAM exchange costs what a known user's does (no PBKDF2 per attempt: 729
/// vs 11 us before), shows the same salt at every attempt, and fails like a wrong password, late.
#[tokio::test]
async fn unknown_users_cannot_be_told_apart_by_scram() {
    let proxy = Proxy::start(&pool_toml(2, ""));
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    let mut salts = std::collections::HashSet::new();
    for _ in 0..30 {
        known.push(scram_first_reply(proxy.port, "app").await.0);
        let (took, salt, _) = scram_first_reply(proxy.port, "nosuchuser").await;
        unknown.push(took);
        salts.insert(salt);
    }
    let (k, u) = (median(known), median(unknown));
    assert!(u < k * 3 + Duration::from_micros(150), "unknown user's first reply {u:?}, known user's {k:?}");
    assert_eq!(salts.len(), 1, "the same salt at every attempt for one name");
    let (_, other_salt, _) = scram_first_reply(proxy.port, "nosuchuser2").await;
    assert!(!salts.contains(&other_salt), "another name, another salt");

    let (_, _, mut r) = scram_first_reply(proxy.port, "nosuchuser").await;
    let t = Instant::now();
    r.send(&raw::msg(b'p', b"c=biws,r=abcdefghijklmnopqrstuvwx,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")).await;
    assert_eq!(r.error_codes_until_close().await, ["28P01"]);
    assert!(t.elapsed() >= Duration::from_millis(90), "a failed login waits server.auth_failure_delay_ms");
}

/// An upstream URL without a password lets no client in: before, it made pgpilot accept any
/// password (trust had to be asked for nowhere).
#[tokio::test]
async fn no_trust_without_asking_for_it() {
    let url = format!("postgres://app@127.0.0.1:{}", common::pg_port());
    let proxy = Proxy::start_with("[pool]\nmax_size = 2\n", &["--upstream", &url]);
    for password in ["app", "anything"] {
        let err = proxy.connect_as("app", password, "app").await.unwrap_err();
        assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("28P01"), "{password}");
    }
}

/// Logins to a database that does not exist: the server's 3D000 reaches the client, a flood of
/// them forks a bounded number of backends (the refusal is remembered for 5 s; before, one
/// backend per login), and the pools they made are dropped once unused (before, one entry each,
/// forever).
#[tokio::test]
async fn logins_to_missing_databases_fork_little_and_leave_nothing() {
    let proxy = Proxy::start("[pool]\nmax_size = 2\ndrop_idle_pool_after_ms = 3000\n");
    let log = std::path::Path::new(&std::env::var("HARNESS_DIR").expect("HARNESS_DIR (tests/harness.sh)"))
        .join("postgres.log");
    let db = format!("nosuchdb_{}", std::process::id());
    for _ in 0..50 {
        let err = proxy.connect_as("app", "app", &db).await.unwrap_err();
        assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("3D000"));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let forks = text.matches(&format!("database \"{db}\" does not exist")).count();
    assert!((1..=2).contains(&forks), "{forks} backends forked for 50 logins");
    for i in 0..20 {
        let err = proxy.connect_as("app", "app", &format!("{db}_{i}")).await.unwrap_err();
        assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("3D000"));
    }
    let pools = || {
        let (_, body) = proxy.http_get("/health/status");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        status["pools"].as_array().unwrap().len()
    };
    // (the first database's pool may be gone already if the machine is slow: it has been idle longest)
    assert!(pools() >= 20, "a pool per database tried");
    let deadline = Instant::now() + Duration::from_secs(15);
    while pools() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pools(), 0, "unused pools dropped after pool.drop_idle_pool_after_ms");
    let c = proxy.connect("app").await;
    c.simple_query("SELECT 1").await.unwrap();
}
