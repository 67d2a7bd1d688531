//! The admin console as PgBouncer users and their tools see it: PgBouncer 1.24.1's columns, in its
//! order and with its declared types, first in SHOW POOLS, STATS, STATS_TOTALS, CLIENTS, SERVERS,
//! DATABASES, LISTS, CONFIG and VERSION (the lists below were read off a running PgBouncer 1.24.1 and its
//! src/admin.c and src/stats.c, tag pgbouncer_1_24_1); what pgbouncer_exporter needs of them
//! (LISTS' two columns and parseable counts, CONFIG's max_client_conn, VERSION's one column);
//! KILL_CLIENT and SHUTDOWN.

mod common;

use std::time::Duration;

use common::raw::{self, Raw};
use common::Proxy;

const TEXT: u32 = 25;
const INT4: u32 = 23;
const INT8: u32 = 20;
const NUMERIC: u32 = 1700;

const CONFIG: &str = "[pool]\nmax_size = 3\n[server]\nadmin_users = [\"admin\"]\n\n\
    [[users]]\nname = \"admin\"\nauth = \"trust\"\n\n[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n";

/// (name, type oid) of a RowDescription body.
fn fields(body: &[u8]) -> Vec<(String, u32)> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..n {
        let end = at + body[at..].iter().position(|&b| b == 0).unwrap();
        let name = String::from_utf8_lossy(&body[at..end]).to_string();
        at = end + 1;
        let oid = u32::from_be_bytes(body[at + 6..at + 10].try_into().unwrap());
        at += 18;
        out.push((name, oid));
    }
    out
}

/// Text values of a DataRow body (NULL as None).
fn values(body: &[u8]) -> Vec<Option<String>> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    (0..n)
        .map(|_| {
            let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                return None;
            }
            let v = String::from_utf8_lossy(&body[at..at + len as usize]).to_string();
            at += len as usize;
            Some(v)
        })
        .collect()
}

async fn show(admin: &mut Raw, what: &str) -> (Vec<(String, u32)>, Vec<Vec<Option<String>>>) {
    admin.send(&raw::query(&format!("SHOW {what}"))).await;
    let msgs = admin.messages_until_ready().await;
    let desc =
        msgs.iter().find(|(t, _)| *t == b'T').map(|(_, b)| fields(b)).unwrap_or_else(|| panic!("{what}: {msgs:?}"));
    let rows = msgs.iter().filter(|(t, _)| *t == b'D').map(|(_, b)| values(b)).collect();
    (desc, rows)
}

fn expect(got: &[(String, u32)], want: &[(&str, u32)], what: &str) {
    let got: Vec<(&str, u32)> = got.iter().take(want.len()).map(|(n, t)| (n.as_str(), *t)).collect();
    assert_eq!(got, want, "SHOW {what}: PgBouncer 1.24's columns first");
}

const SOCKET: [(&str, u32); 21] = [
    ("type", TEXT),
    ("user", TEXT),
    ("database", TEXT),
    ("replication", TEXT),
    ("state", TEXT),
    ("addr", TEXT),
    ("port", INT4),
    ("local_addr", TEXT),
    ("local_port", INT4),
    ("connect_time", TEXT),
    ("request_time", TEXT),
    ("wait", INT4),
    ("wait_us", INT4),
    ("close_needed", INT4),
    ("ptr", TEXT),
    ("link", TEXT),
    ("remote_pid", INT4),
    ("tls", TEXT),
    ("application_name", TEXT),
    ("prepared_statements", INT4),
    ("id", INT8),
];

/// SHOW STATS of PgBouncer 1.24.1 (read off a running one: every count and time numeric).
const STATS: [(&str, u32); 23] = [
    ("database", TEXT),
    ("total_server_assignment_count", NUMERIC),
    ("total_xact_count", NUMERIC),
    ("total_query_count", NUMERIC),
    ("total_received", NUMERIC),
    ("total_sent", NUMERIC),
    ("total_xact_time", NUMERIC),
    ("total_query_time", NUMERIC),
    ("total_wait_time", NUMERIC),
    ("total_client_parse_count", NUMERIC),
    ("total_server_parse_count", NUMERIC),
    ("total_bind_count", NUMERIC),
    ("avg_server_assignment_count", NUMERIC),
    ("avg_xact_count", NUMERIC),
    ("avg_query_count", NUMERIC),
    ("avg_recv", NUMERIC),
    ("avg_sent", NUMERIC),
    ("avg_xact_time", NUMERIC),
    ("avg_query_time", NUMERIC),
    ("avg_wait_time", NUMERIC),
    ("avg_client_parse_count", NUMERIC),
    ("avg_server_parse_count", NUMERIC),
    ("avg_bind_count", NUMERIC),
];

/// SHOW DATABASES of PgBouncer 1.24.1 (read off a running one).
const DATABASES: [(&str, u32); 17] = [
    ("name", TEXT),
    ("host", TEXT),
    ("port", INT4),
    ("database", TEXT),
    ("force_user", TEXT),
    ("pool_size", INT4),
    ("min_pool_size", INT4),
    ("reserve_pool_size", INT4),
    ("server_lifetime", INT4),
    ("pool_mode", TEXT),
    ("load_balance_hosts", TEXT),
    ("max_connections", INT4),
    ("current_connections", INT4),
    ("max_client_connections", INT4),
    ("current_client_connections", INT4),
    ("paused", INT4),
    ("disabled", INT4),
];

#[tokio::test]
async fn pgbouncer_124_columns_come_first() {
    let proxy = Proxy::start(CONFIG);
    let mut client = Raw::login_trust(proxy.port, "trustuser", "app").await;
    client.send(&raw::query("SELECT 1")).await;
    client.until_ready().await.unwrap();
    let mut admin = Raw::login_trust(proxy.port, "admin", "pgbouncer").await;

    let (cols, rows) = show(&mut admin, "POOLS").await;
    let mut pools = vec![("database", TEXT), ("user", TEXT)];
    for c in ["cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active"] {
        pools.push((c, INT4));
    }
    for c in ["sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait"] {
        pools.push((c, INT4));
    }
    pools.extend([("maxwait_us", INT4), ("pool_mode", TEXT), ("load_balance_hosts", TEXT)]);
    expect(&cols, &pools, "POOLS");
    let app = rows.iter().find(|r| r[0].as_deref() == Some("app")).expect("the app pool");
    assert_eq!((app[2].as_deref(), app[15].as_deref(), app[16].as_deref()), (Some("1"), Some("transaction"), None));

    let (cols, rows) = show(&mut admin, "STATS").await;
    expect(&cols, &STATS, "STATS");
    assert!(rows.iter().any(|r| r[0].as_deref() == Some("app") && r[3].as_deref() != Some("0")), "query count");

    let (cols, _) = show(&mut admin, "STATS_TOTALS").await;
    let totals: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(totals[..5], ["database", "server_assignment_count", "xact_count", "query_count", "bytes_received"]);
    assert!(cols[1..].iter().all(|c| c.1 == NUMERIC) && cols.len() == 12);

    for what in ["CLIENTS", "SERVERS"] {
        let (cols, rows) = show(&mut admin, what).await;
        expect(&cols, &SOCKET, what);
        assert!(rows.iter().all(|r| r[0].as_deref() == Some(&what[..1])), "type C / S");
    }

    let (cols, rows) = show(&mut admin, "DATABASES").await;
    expect(&cols, &DATABASES, "DATABASES");
    assert!(rows.iter().any(|r| r[0].as_deref() == Some("app") && r[4].is_none()));

    let (cols, rows) = show(&mut admin, "LISTS").await;
    assert_eq!(cols, [("list".to_string(), TEXT), ("items".to_string(), INT4)]);
    let lists: Vec<&str> = rows.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(lists[..4], ["databases", "users", "peers", "pools"]);
    assert!(rows.iter().all(|r| r[1].as_deref().unwrap().parse::<u64>().is_ok()), "counts parse");

    let (cols, rows) = show(&mut admin, "CONFIG").await;
    let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["key", "value", "default", "changeable"]);
    let max = rows.iter().find(|r| r[0].as_deref() == Some("max_client_conn")).expect("PgBouncer's name");
    assert!(max[1].as_deref().unwrap().parse::<f64>().is_ok());
    assert!(rows.iter().all(|r| matches!(r[3].as_deref(), Some("yes" | "no"))));

    let (cols, rows) = show(&mut admin, "VERSION").await;
    assert_eq!(cols, [("version".to_string(), TEXT)]);
    assert!(rows[0][0].as_deref().unwrap().starts_with("pgpilot "));
}

#[tokio::test]
async fn kill_client_ends_that_client_and_shutdown_stops_pgpilot() {
    let mut proxy = Proxy::start(CONFIG);
    let mut victim = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut bystander = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut admin = Raw::login_trust(proxy.port, "admin", "pgbouncer").await;
    victim.send(&raw::query("SELECT 'victim'")).await;
    victim.until_ready().await.unwrap();
    let (_, rows) = show(&mut admin, "CLIENTS").await;
    let mine = rows.iter().filter(|r| r[2].as_deref() == Some("app")).collect::<Vec<_>>();
    assert_eq!(mine.len(), 2);
    // The oldest of the two app clients is the victim (rows come in connection order).
    let id = mine[0][20].clone().unwrap();
    admin.send(&raw::query(&format!("KILL_CLIENT {id}"))).await;
    let reply = admin.messages_until_ready().await;
    assert!(reply.iter().any(|(t, b)| *t == b'C' && b.starts_with(b"KILL_CLIENT")), "{reply:?}");
    assert_eq!(victim.error_codes_until_close().await, ["57P01"]);
    bystander.send(&raw::query("SELECT 'still here'")).await;
    assert!(bystander.until_ready().await.is_ok());
    admin.send(&raw::query("KILL_CLIENT 999999")).await;
    let reply = admin.messages_until_ready().await;
    assert!(reply.iter().any(|(t, _)| *t == b'E'), "an unknown id is an error");

    drop(bystander);
    admin.send(&raw::query("SHUTDOWN")).await;
    let _ = admin.messages_until_ready().await;
    drop(admin);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pgpilot still running after SHUTDOWN");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pause_of_one_database_holds_only_its_pools() {
    let proxy = Proxy::start(CONFIG);
    let mut on_app = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut on_bench = Raw::login_trust(proxy.port, "trustuser", "bench").await;
    let mut admin = Raw::login_trust(proxy.port, "admin", "pgbouncer").await;
    admin.send(&raw::query("PAUSE bench")).await;
    let reply = admin.messages_until_ready().await;
    assert!(reply.iter().any(|(t, b)| *t == b'C' && b.starts_with(b"PAUSE")), "{reply:?}");
    let (_, rows) = show(&mut admin, "DATABASES").await;
    on_bench.send(&raw::query("SELECT 'bench'")).await;
    on_app.send(&raw::query("SELECT 'app'")).await;
    assert!(on_app.until_ready().await.is_ok(), "another database is not paused");
    assert!(
        tokio::time::timeout(Duration::from_millis(400), on_bench.until_ready()).await.is_err(),
        "the paused database's query waits"
    );
    admin.send(&raw::query("RESUME bench")).await;
    let _ = admin.messages_until_ready().await;
    assert!(tokio::time::timeout(Duration::from_secs(5), on_bench.until_ready()).await.unwrap().is_ok());
    // SHOW DATABASES said which one was paused (rows for the pools that existed then).
    let paused: Vec<_> = rows.iter().map(|r| (r[0].clone().unwrap(), r[15].clone().unwrap())).collect();
    assert!(paused.contains(&("app".to_string(), "0".to_string())), "{paused:?}");
}

/// SHOW STATS' app row as numbers, by column name.
async fn stats_row(admin: &mut Raw) -> std::collections::HashMap<String, u64> {
    let (cols, rows) = show(admin, "STATS").await;
    let row = rows.iter().find(|r| r[0].as_deref() == Some("app")).expect("the app database");
    cols.iter().zip(row).skip(1).map(|((name, _), v)| (name.clone(), v.as_deref().unwrap().parse().unwrap())).collect()
}

/// Polls SHOW STATS until `done` holds for the app row (a session hands its counts to the pool
/// just after its client got ReadyForQuery), or 3 s.
async fn stats_when(
    admin: &mut Raw,
    done: impl Fn(&std::collections::HashMap<String, u64>) -> bool,
) -> std::collections::HashMap<String, u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let s = stats_row(admin).await;
        if done(&s) || std::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What pgbouncer_exporter turns into pgbouncer_stats_{received,sent}_bytes_total,
/// client_wait_seconds_total and the parse/bind counters: counted, to the byte, not 0.
#[tokio::test]
async fn show_stats_counts_bytes_parses_binds_waits_and_averages_them() {
    let cfg = "[pool]\nmax_size = 1\nadaptive = false\n[server]\nadmin_users = [\"admin\"]\nstats_period_s = 1\n\n\
        [[users]]\nname = \"admin\"\nauth = \"trust\"\n\n[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n";
    let proxy = Proxy::start(cfg);
    let mut client = Raw::login_trust(proxy.port, "trustuser", "app").await;
    client.send(&raw::query("SELECT 1")).await;
    client.until_ready().await.unwrap();
    let mut admin = Raw::login_trust(proxy.port, "admin", "pgbouncer").await;
    let before = stats_when(&mut admin, |s| s["total_xact_count"] >= 1).await;

    let mut sent = raw::parse("s1", "SELECT 42");
    sent.extend(raw::bind("", "s1"));
    sent.extend(raw::execute(""));
    sent.extend(raw::sync());
    sent.extend(raw::query("SELECT 'x'"));
    client.send(&sent).await;
    let mut replied = client.messages_until_ready().await;
    replied.extend(client.messages_until_ready().await);
    let reply_bytes: usize = replied.iter().map(|(_, body)| 5 + body.len()).sum();
    let delta = |s: &std::collections::HashMap<String, u64>, k: &str| s[k] - before[k];
    let after = stats_when(&mut admin, |s| s["total_received"] - before["total_received"] >= sent.len() as u64).await;
    assert_eq!(delta(&after, "total_received"), sent.len() as u64, "bytes from the client");
    assert_eq!(delta(&after, "total_sent"), reply_bytes as u64, "bytes to the client");
    assert_eq!(delta(&after, "total_client_parse_count"), 1);
    assert_eq!(delta(&after, "total_bind_count"), 1);
    assert_eq!(delta(&after, "total_server_parse_count"), 1, "the named statement prepared on the server once");

    // One connection: a second client waits while the first holds it in a transaction.
    client.send(&raw::query("BEGIN; SELECT 1")).await;
    client.until_ready().await.unwrap();
    let mut waiter = Raw::login_trust(proxy.port, "trustuser", "app").await;
    waiter.send(&raw::query("SELECT 2")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.send(&raw::query("COMMIT")).await;
    client.until_ready().await.unwrap();
    waiter.until_ready().await.unwrap();
    let waited = stats_when(&mut admin, |s| s["total_wait_time"] - after["total_wait_time"] >= 300_000).await;
    let wait_us = waited["total_wait_time"] - after["total_wait_time"];
    assert!((300_000..5_000_000).contains(&wait_us), "the second client's wait: {wait_us} us");

    // The period that held this traffic ends within a second; its averages are rates.
    let avg = stats_when(&mut admin, |s| s["avg_xact_count"] > 0 && s["avg_recv"] > 0).await;
    assert!(avg["avg_xact_count"] > 0 && avg["avg_recv"] > 0 && avg["avg_sent"] > 0, "{avg:?}");
    let (cols, rows) = show(&mut admin, "STATS_AVERAGES").await;
    assert_eq!(cols.len(), 12);
    assert!(rows.iter().any(|r| r[0].as_deref() == Some("app")));
}
