//! The admin console: a client that logs in to database "pgpilot" (or "pgbouncer", so existing
//! tooling works) gets simple-query commands instead of a server: every command as an admin user
//! (`server.admin_users`), the SHOW commands as any other (PgBouncer's stats_users).

mod result;
mod show;
mod show_config;
mod show_sockets;

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::net::client_io::read_message;
use crate::net::frame::{body, cstr};
use crate::net::messages::{self, sqlstate};
use crate::net::stream::ClientStream;
use crate::protocol::backend::tx_status;
use crate::protocol::frontend as fe;
use crate::shared::console::Console;

pub fn is_admin_database(db: &str) -> bool {
    db == "pgpilot" || db == "pgbouncer"
}

/// Serves admin commands until the client leaves. `admin`: the user is in `server.admin_users`;
/// anyone else who logged in may run the SHOW commands only.
pub async fn serve(app: Console, mut stream: ClientStream, mut rbuf: BytesMut, admin: bool) {
    let mut out = BytesMut::new();
    for (k, v) in [
        ("server_version", "15.0 (pgpilot)"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        messages::parameter_status(&mut out, k, v);
    }
    messages::backend_key_data(&mut out, 0, 0);
    messages::ready_for_query(&mut out, tx_status::IDLE);
    loop {
        if stream.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        let Ok((tag, frame)) = read_message(&mut stream, &mut rbuf).await else { return };
        match tag {
            fe::TERMINATE => return,
            fe::QUERY => {
                let sql = cstr(body(&frame)).map(|(q, _)| String::from_utf8_lossy(q).into_owned()).unwrap_or_default();
                for command in sql.split(';').map(str::trim).filter(|c| !c.is_empty()) {
                    if let Err((code, msg)) = run(&app, command, &mut out, admin).await {
                        messages::error(&mut out, "ERROR", code, &msg);
                        break;
                    }
                }
                if sql.trim().trim_matches(';').is_empty() {
                    messages::empty_query_response(&mut out);
                }
                messages::ready_for_query(&mut out, tx_status::IDLE);
            }
            _ => {
                let msg = "the pgpilot admin console accepts simple queries only";
                messages::error(&mut out, "FATAL", sqlstate::PROTOCOL_VIOLATION, msg);
                let _ = stream.write_all(&out).await;
                return;
            }
        }
    }
}

const HELP: &str =
    "SHOW POOLS|STATS|STATS_TOTALS|STATS_AVERAGES|CLIENTS|SERVERS|DATABASES|LISTS|CONFIG|VERSION|QUERIES|CACHE|\
N_PLUS_ONE|HELP; PAUSE [db]; RESUME [db]; RELOAD; FLUSH CACHE; KILL_CLIENT id; SHUTDOWN";

async fn run(app: &Console, command: &str, out: &mut BytesMut, admin: bool) -> Result<(), (&'static str, String)> {
    let words: Vec<String> = command.split_whitespace().map(|w| w.to_ascii_uppercase()).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let unknown = |what: String| (sqlstate::FEATURE_NOT_SUPPORTED, what);
    if !admin && words.first() != Some(&"SHOW") {
        let msg = format!("{command:?} needs an admin user of pgpilot (server.admin_users); others may only SHOW");
        return Err((sqlstate::INSUFFICIENT_PRIVILEGE, msg));
    }
    match words.as_slice() {
        ["SHOW", what] => {
            show_item(app, what).ok_or_else(|| unknown(format!("unknown SHOW item {what:?}; try {HELP}")))?.encode(out)
        }
        ["PAUSE"] | ["PAUSE", _] => {
            let db = database_argument(command);
            app.set_paused(db.as_deref(), true).map_err(unknown)?;
            wait_idle(app, db.as_deref()).await;
            messages::command_complete(out, "PAUSE");
        }
        ["RESUME"] | ["RESUME", _] => {
            app.set_paused(database_argument(command).as_deref(), false).map_err(unknown)?;
            messages::command_complete(out, "RESUME");
        }
        ["FLUSH", "CACHE"] => {
            app.flush_cache().await;
            messages::command_complete(out, "FLUSH");
        }
        ["KILL_CLIENT", id] => {
            let id: u64 =
                id.parse().map_err(|_| unknown(format!("KILL_CLIENT takes a client id (SHOW CLIENTS), not {id:?}")))?;
            if !app.kill_client(id) {
                return Err((sqlstate::UNDEFINED_OBJECT, format!("no client with id {id}")));
            }
            messages::command_complete(out, "KILL_CLIENT");
        }
        ["SHUTDOWN"] => {
            tracing::info!("SHUTDOWN from the admin console");
            app.shutdown();
            messages::command_complete(out, "SHUTDOWN");
        }
        ["RELOAD"] => {
            app.reload().map_err(|e| unknown(format!("reload failed: {e:#}")))?;
            messages::command_complete(out, "RELOAD");
        }
        _ => return Err(unknown(format!("unknown command {command:?}; try {HELP}"))),
    }
    Ok(())
}

fn show_item(app: &Console, what: &str) -> Option<result::ResultSet> {
    Some(match what {
        "POOLS" => show::pools(app),
        "STATS" => show::stats(app),
        "STATS_TOTALS" => show::stats_totals(app),
        "STATS_AVERAGES" => show::stats_averages(app),
        "CLIENTS" => show_sockets::clients(app),
        "SERVERS" => show_sockets::servers(app),
        "DATABASES" => show::databases(app),
        "LISTS" => show::lists(app),
        "CONFIG" => show_config::config(app),
        "QUERIES" => show::queries(app),
        "CACHE" => show::cache(app),
        "N_PLUS_ONE" => show::n_plus_one(app),
        "VERSION" => single("version", concat!("pgpilot ", env!("CARGO_PKG_VERSION"))),
        "HELP" => single("help", HELP),
        _ => return None,
    })
}

fn single(column: &'static str, value: &str) -> result::ResultSet {
    let mut r = result::ResultSet::new(&[column]);
    r.row(vec![value.to_string()]);
    r
}

/// The database a PAUSE or RESUME names, as written (command words are matched uppercased).
fn database_argument(command: &str) -> Option<String> {
    command.split_whitespace().nth(1).map(|d| d.trim_matches('"').to_string())
}

/// PAUSE returns once no server connection of the pools it covers is in use (transactions in
/// flight have finished), or after the shutdown timeout.
async fn wait_idle(app: &Console, database: Option<&str>) {
    let limit = Duration::from_millis(app.config().server.shutdown_timeout_ms);
    let deadline = tokio::time::Instant::now() + limit;
    let busy = || app.pool_snapshots().iter().any(|p| p.active > 0 && database.is_none_or(|d| d == p.database));
    while busy() && tokio::time::Instant::now() < deadline {
        crate::timers::sleep(Duration::from_millis(10)).await;
    }
}
