//! The admin console (database "pgpilot" / "pgbouncer"): SHOW commands, PAUSE/RESUME, RELOAD,
//! and refusal of non-admin users.

mod common;

use std::time::{Duration, Instant};

use common::{rows, Proxy};
use tokio_postgres::SimpleQueryMessage;

fn columns(msgs: &[SimpleQueryMessage]) -> Vec<String> {
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::RowDescription(d) => Some(d.iter().map(|c| c.name().to_string()).collect()),
            _ => None,
        })
        .unwrap_or_default()
}

const USERS: &str = "[pool]\nmax_size = 2\n[server]\nadmin_users = [\"app\"]\n\n[[users]]\nname = \"app\"\npassword = \"app\"\n\n[[users]]\nname = \"md5user\"\npassword = \"md5pass\"\nauth = \"md5\"\n";

#[tokio::test]
async fn show_commands_describe_pools_clients_servers_and_queries() {
    let proxy = Proxy::start(USERS);
    let c = proxy.connect("app").await;
    c.simple_query("SELECT 41 + 1").await.unwrap();
    let admin = proxy.connect("pgbouncer").await;
    let pools = admin.simple_query("SHOW POOLS").await.unwrap();
    assert_eq!(&columns(&pools)[..4], ["database", "user", "cl_active", "cl_waiting"]);
    let r = rows(&pools);
    assert_eq!((r[0][0].as_str(), r[0][1].as_str(), r[0][2].as_str()), ("app", "app", "1"));
    let clients = rows(&admin.simple_query("SHOW CLIENTS").await.unwrap());
    // (PgBouncer's columns: type, user, database, ...)
    assert!(clients.iter().any(|r| r[0] == "C" && r[1] == "app" && r[2] == "app"), "{clients:?}");
    let servers = rows(&admin.simple_query("SHOW SERVERS").await.unwrap());
    // The client's connection, and possibly the one the cache's table list was read on at its login.
    assert!(
        (1..=2).contains(&servers.len()) && servers.iter().all(|r| r[0] == "S" && r[1] == "app" && r[2] == "app"),
        "{servers:?}"
    );
    let queries = admin.simple_query("SHOW QUERIES").await.unwrap();
    // (query, then strategy and its reason: a read of no table passes through)
    let found = rows(&queries).iter().any(|r| r[11] == "SELECT $1 + $2" && r[12] == "pass-through");
    assert!(found, "{:?}", rows(&queries));
    let config = rows(&admin.simple_query("SHOW CONFIG").await.unwrap());
    assert!(config.iter().any(|r| r[0] == "pool.max_size" && r[1] == "2"));
    assert!(config.iter().all(|r| !r[1].contains("md5pass")), "passwords are masked");
    let stats = rows(&admin.simple_query("SHOW STATS").await.unwrap());
    assert!(stats[0][2].parse::<u64>().unwrap() >= 1);
    assert!(admin.simple_query("SHOW NOTHING").await.is_err());
    // The console itself stays usable after an error.
    assert_eq!(rows(&admin.simple_query("SHOW VERSION").await.unwrap()).len(), 1);
}

/// A user not in server.admin_users may look (the SHOW commands, as PgBouncer's stats_users)
/// but change nothing; in the one-line setup the URL's user is not an admin unless named.
#[tokio::test]
async fn non_admin_users_may_only_show() {
    let proxy = Proxy::start(USERS);
    let stats = proxy.connect_as("md5user", "md5pass", "pgpilot").await.unwrap();
    stats.simple_query("SHOW POOLS").await.unwrap();
    stats.simple_query("SHOW STATS").await.unwrap();
    for command in ["PAUSE", "RESUME", "RELOAD", "FLUSH CACHE"] {
        let err = stats.simple_query(command).await.unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code().code(), "42501", "{command}");
    }
    let one_line = Proxy::start("[pool]\nmax_size = 2\n");
    let url_user = one_line.connect("pgpilot").await;
    url_user.simple_query("SHOW VERSION").await.unwrap();
    let err = url_user.simple_query("PAUSE").await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42501", "the URL's user is no admin by default");
}

#[tokio::test]
async fn pause_holds_new_transactions_until_resume() {
    let proxy = Proxy::start(USERS);
    let c = proxy.connect("app").await;
    let admin = proxy.connect("pgpilot").await;
    // (A BEGIN alone holds no connection: pgpilot sends it with the first statement.)
    c.simple_query("BEGIN; SELECT 1").await.unwrap();
    let pausing = tokio::spawn(async move {
        admin.simple_query("PAUSE").await.unwrap();
        admin
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pausing.is_finished(), "PAUSE waits for the open transaction");
    c.simple_query("COMMIT").await.unwrap();
    let admin = tokio::time::timeout(Duration::from_secs(5), pausing).await.unwrap().unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn(async move { c.simple_query("SELECT 1").await.map(|_| started.elapsed()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "queries wait while paused");
    admin.simple_query("RESUME").await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
    assert!(waited >= Duration::from_millis(300));
    admin.simple_query("RELOAD").await.unwrap();
}

/// RELOAD re-reads the configuration file: what SHOW CONFIG reports changes with it.
#[tokio::test]
async fn reload_applies_the_rewritten_configuration_file() {
    let proxy = Proxy::start(USERS);
    let admin = proxy.connect("pgpilot").await;
    let max_size = |msgs: Vec<SimpleQueryMessage>| {
        rows(&msgs).into_iter().find(|r| r[0] == "pool.max_size").map(|r| r[1].clone()).unwrap()
    };
    assert_eq!(max_size(admin.simple_query("SHOW CONFIG").await.unwrap()), "2");
    proxy.rewrite_config(&USERS.replace("max_size = 2", "max_size = 4"));
    admin.simple_query("RELOAD").await.unwrap();
    assert_eq!(max_size(admin.simple_query("SHOW CONFIG").await.unwrap()), "4");
}

/// A session keeps the prepared-statement limit it started with through a RELOAD, and its
/// error names that limit (it once named the reloaded value it did not enforce); a new
/// session gets the new one.
#[tokio::test]
async fn a_reloaded_statement_limit_applies_to_new_sessions_and_errors_name_the_enforced_one() {
    let config = format!("[prepared]\nclient_max = 2\n{USERS}");
    let proxy = Proxy::start(&config);
    let before = proxy.connect("app").await;
    let mut open = Vec::new(); // (a dropped tokio-postgres Statement is closed)
    for i in 0..2 {
        open.push(before.prepare(&format!("SELECT {i}")).await.unwrap());
    }
    proxy.rewrite_config(&config.replace("client_max = 2", "client_max = 5"));
    proxy.connect("pgpilot").await.simple_query("RELOAD").await.unwrap();
    let refused = before.prepare("SELECT 2").await.unwrap_err();
    let db = refused.as_db_error().unwrap_or_else(|| panic!("{refused:?}"));
    assert_eq!((db.code().code(), db.message().contains("more than 2 prepared")), ("54000", true), "{db:?}");
    let after = proxy.connect("app").await;
    for i in 0..3 {
        open.push(after.prepare(&format!("SELECT {i}")).await.unwrap());
    }
}

/// SHOW N_PLUS_ONE: a loop of lookups over a read's rows is listed with its suggested rewrite.
#[tokio::test]
async fn show_n_plus_one_lists_a_loop_of_lookups() {
    let proxy = Proxy::start(&format!("{USERS}\n[insights]\nn_plus_one_min_total_ms = 0\n"));
    let c = proxy.connect("app").await;
    let source = c.query("SELECT oid::int4 AS id FROM pg_class ORDER BY oid LIMIT $1", &[&8i64]).await.unwrap();
    for row in &source {
        let id: i32 = row.get(0);
        c.query("SELECT relname FROM pg_class WHERE oid = $1::int4::oid", &[&id]).await.unwrap();
    }
    c.simple_query("SELECT 1").await.unwrap(); // another statement ends the burst: it is judged
    let admin = proxy.connect("pgpilot").await;
    let found = rows(&admin.simple_query("SHOW N_PLUS_ONE").await.unwrap());
    let row = found.iter().find(|r| r[4].contains("FROM pg_class WHERE oid")).unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!((row[0].as_str(), row[1].as_str(), row[5].as_str()), ("app", "app", "8"), "{row:?}");
    assert!(row[3].contains("LIMIT") && !row[8].is_empty(), "source and suggestion: {row:?}");
}
