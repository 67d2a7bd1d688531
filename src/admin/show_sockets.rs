//! SHOW CLIENTS and SHOW SERVERS: PgBouncer 1.24's 21 socket columns (the same for both), then
//! pgpilot's. A client's `id` is the one KILL_CLIENT takes; `link` pairs a client with the
//! server connection it holds (the server's backend pid, as `ptr` of that server's row).

use std::time::{Duration, SystemTime};

use super::result::{ResultSet, Ty};
use crate::shared::console::Console;

use Ty::{Int4, Int8, Text};

const SOCKET_COLUMNS: [(&str, Ty); 21] = [
    ("type", Text),
    ("user", Text),
    ("database", Text),
    ("replication", Text),
    ("state", Text),
    ("addr", Text),
    ("port", Int4),
    ("local_addr", Text),
    ("local_port", Int4),
    ("connect_time", Text),
    ("request_time", Text),
    ("wait", Int4),
    ("wait_us", Int4),
    ("close_needed", Int4),
    ("ptr", Text),
    ("link", Text),
    ("remote_pid", Int4),
    ("tls", Text),
    ("application_name", Text),
    ("prepared_statements", Int4),
    ("id", Int8),
];

/// PgBouncer's time format (`YYYY-MM-DD HH:MM:SS UTC`; pgpilot's times are UTC).
fn time(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 as (year, month, day) (the proleptic Gregorian calendar).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn split_addr(peer: &str) -> (String, String) {
    match peer.rsplit_once(':') {
        Some((host, port)) => (host.trim_matches(['[', ']']).to_string(), port.to_string()),
        None => (peer.to_string(), "0".into()),
    }
}

fn listen(app: &Console) -> (String, String) {
    split_addr(&app.config().server.listen)
}

pub fn clients(app: &Console) -> ResultSet {
    let mut cols = SOCKET_COLUMNS.to_vec();
    cols.push(("server_pid", Int4));
    let mut r = ResultSet::typed(&cols);
    let (local_addr, local_port) = listen(app);
    for c in app.clients() {
        let server = &c.server;
        // PgBouncer's spelling for a Unix-domain socket client: addr `unix`, its own port.
        let (addr, port, local) = match c.peer {
            Some(p) => (p.ip().to_string(), p.port().to_string(), local_addr.clone()),
            None => ("unix".to_string(), local_port.clone(), "unix".to_string()),
        };
        let pid = server.as_ref().map(|(_, pid)| pid.to_string());
        let state = if server.is_some() { "active" } else { "idle" };
        r.row_opt(vec![
            Some("C".into()),
            Some(c.user.to_string()),
            Some(c.database.to_string()),
            Some("none".into()),
            Some(state.into()),
            Some(addr),
            Some(port),
            Some(local),
            Some(local_port.clone()),
            Some(time(c.connected)),
            Some(time(c.connected)),
            Some("0".into()),
            Some("0".into()),
            Some("0".into()),
            Some(format!("c{:x}", c.id)),
            pid.as_ref().map(|p| format!("s{p}")),
            Some("0".into()),
            Some(String::new()),
            Some(c.application_name.to_string()),
            Some("0".into()),
            Some(c.id.to_string()),
            pid,
        ]);
    }
    r
}

pub fn servers(app: &Console) -> ResultSet {
    let mut cols = SOCKET_COLUMNS.to_vec();
    cols.extend([("age_s", Int8), ("idle_s", Int8)]);
    let mut r = ResultSet::typed(&cols);
    let now = SystemTime::now();
    let row = |user: &str,
               db: &str,
               state: &str,
               addr: &crate::net::endpoint::Endpoint,
               pid: i32,
               link: Option<String>,
               age: Duration,
               idle: Duration| {
        let (ip, port) = addr.addr_and_port();
        vec![
            Some("S".into()),
            Some(user.to_string()),
            Some(db.to_string()),
            Some("none".into()),
            Some(state.to_string()),
            Some(ip),
            Some(port.to_string()),
            Some(String::new()),
            Some("0".into()),
            Some(time(now - age)),
            Some(time(now - idle)),
            Some("0".into()),
            Some("0".into()),
            Some("0".into()),
            Some(format!("s{pid}")),
            link,
            Some(pid.to_string()),
            Some(String::new()),
            Some(String::new()),
            Some("0".into()),
            Some(pid.to_string()),
            Some(age.as_secs().to_string()),
            Some(idle.as_secs().to_string()),
        ]
    };
    for c in app.clients() {
        if let Some((addr, pid)) = &c.server {
            let link = Some(format!("c{:x}", c.id));
            r.row_opt(row(&c.user, &c.database, "active", addr, *pid, link, Duration::ZERO, Duration::ZERO));
        }
    }
    for pool in app.pools() {
        for (pid, (addr, age, idle)) in &pool.idle_servers {
            r.row_opt(row(&pool.snapshot.user, &pool.snapshot.database, "idle", addr, *pid, None, *age, *idle));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn pgbouncers_time_format() {
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_806_400 + 3_661);
        assert_eq!(super::time(t), "2025-12-04 01:01:01 UTC");
        assert_eq!(super::civil(0), (1970, 1, 1));
        assert_eq!(super::civil(59), (1970, 3, 1));
        assert_eq!(super::civil(11_016), (2000, 2, 29));
    }
}
