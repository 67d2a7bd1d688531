//! The SHOW commands. Where PgBouncer 1.24 has the command, its columns come first, with its names,
//! order and types (read from PgBouncer 1.24.1's src/admin.c and src/stats.c; pgbouncer_exporter
//! reads them by name), and pgpilot's own columns follow. A PgBouncer column pgpilot has no
//! counterpart for is 0 (cancel-request states, login/tested servers), never missing.

use super::result::{ResultSet, Ty};
use crate::insights::stats::QueryRow;
use crate::pool_stats;
use crate::shared::console::Console;

use Ty::{Int4, Int8, Numeric, Text};

pub fn pools(app: &Console) -> ResultSet {
    let mode = super::show_config::pool_mode(app);
    let mut r = ResultSet::typed(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int4),
        ("cl_waiting", Int4),
        ("cl_active_cancel_req", Int4),
        ("cl_waiting_cancel_req", Int4),
        ("sv_active", Int4),
        ("sv_active_cancel", Int4),
        ("sv_being_canceled", Int4),
        ("sv_idle", Int4),
        ("sv_used", Int4),
        ("sv_tested", Int4),
        ("sv_login", Int4),
        ("maxwait", Int4),
        ("maxwait_us", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
        // pgpilot's
        ("sv_total", Int4),
        ("pool_size", Int4),
        ("pool_target", Int4),
        ("sizing", Text),
        ("slow_lane_active", Int4),
        ("slow_lane_waited", Int8),
    ]);
    for pool in app.pools() {
        let (s, clients) = (pool.snapshot, pool.clients);
        let n = |v: usize| Some(v.to_string());
        r.row_opt(vec![
            Some(s.database),
            Some(s.user),
            n(clients.saturating_sub(s.waiting)),
            n(s.waiting),
            n(0),
            n(0),
            n(s.active),
            n(0),
            n(0),
            n(s.idle),
            n(0),
            n(0),
            n(0),
            Some((s.max_wait_us / 1_000_000).to_string()),
            Some((s.max_wait_us % 1_000_000).to_string()),
            Some(mode.clone()),
            None,
            n(s.size),
            n(s.max_size),
            n(s.target),
            Some(s.decision.map_or(String::new(), |d| d.reason.to_string())),
            n(s.slow_lane_active),
            Some(s.slow_lane_waited.to_string()),
        ]);
    }
    r
}

/// SHOW STATS: PgBouncer 1.24's total_<counter> for each counter, then avg_<counter> (avg_recv,
/// avg_sent for bytes) over the last completed stats period (zeros before the first one ends).
pub fn stats(app: &Console) -> ResultSet {
    let mut cols: Vec<(&'static str, Ty)> = vec![("database", Text)];
    const TOTAL: [&str; 11] = [
        "total_server_assignment_count",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "total_client_parse_count",
        "total_server_parse_count",
        "total_bind_count",
    ];
    const AVG: [&str; 11] = [
        "avg_server_assignment_count",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
        "avg_client_parse_count",
        "avg_server_parse_count",
        "avg_bind_count",
    ];
    cols.extend(TOTAL.iter().chain(AVG.iter()).map(|c| (*c, Numeric)));
    cols.push(("total_wait_timeouts", Int8));
    let mut r = ResultSet::typed(&cols);
    for (db, t) in app.stats_totals() {
        let avg = app.stats_averages(&db);
        let mut row = vec![db];
        row.extend(t.counters.iter().chain(avg.iter()).map(u64::to_string));
        row.push(t.wait_timeouts.to_string());
        r.row(row);
    }
    r
}

/// SHOW STATS_TOTALS and SHOW STATS_AVERAGES: the counters without prefixes (bytes_received,
/// bytes_sent), totals or the last stats period's averages; what pgbouncer_exporter 0.11+ scrapes.
fn stats_by_counter(app: &Console, averages: bool) -> ResultSet {
    let mut cols: Vec<(&'static str, Ty)> = vec![("database", Text)];
    cols.extend(pool_stats::COUNTERS.iter().map(|c| {
        let name: &'static str = match *c {
            "received" => "bytes_received",
            "sent" => "bytes_sent",
            other => other,
        };
        (name, Numeric)
    }));
    let mut r = ResultSet::typed(&cols);
    for (db, t) in app.stats_totals() {
        let values = if averages { app.stats_averages(&db) } else { t.counters };
        let mut row = vec![db];
        row.extend(values.iter().map(u64::to_string));
        r.row(row);
    }
    r
}

pub fn stats_totals(app: &Console) -> ResultSet {
    stats_by_counter(app, false)
}

pub fn stats_averages(app: &Console) -> ResultSet {
    stats_by_counter(app, true)
}

/// One row per database pgpilot has a pool for (all on the one upstream server).
pub fn databases(app: &Console) -> ResultSet {
    let cfg = app.config();
    let up = cfg.upstream();
    let mut r = ResultSet::typed(&[
        ("name", Text),
        ("host", Text),
        ("port", Int4),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int4),
        ("min_pool_size", Int4),
        ("reserve_pool_size", Int4),
        ("server_lifetime", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
        ("max_connections", Int4),
        ("current_connections", Int4),
        ("max_client_connections", Int4),
        ("current_client_connections", Int4),
        ("paused", Int4),
        ("disabled", Int4),
    ]);
    let all = app.pools();
    let mut names: Vec<String> = all.iter().map(|p| p.snapshot.database.clone()).collect();
    names.sort();
    names.dedup();
    for db in names {
        let paused = u8::from(app.is_paused(&db));
        let pools: Vec<_> = all.iter().filter(|p| p.snapshot.database == db).collect();
        let conns: usize = pools.iter().map(|p| p.snapshot.size).sum();
        let clients: usize = pools.iter().map(|p| p.clients).sum();
        r.row_opt(vec![
            Some(db.clone()),
            Some(up.host.clone()),
            Some(up.port.to_string()),
            Some(db),
            None,
            Some(cfg.pool.max_size.to_string()),
            Some(cfg.pool.min_size.to_string()),
            Some("0".into()),
            Some((cfg.pool.lifetime_ms / 1000).to_string()),
            Some(super::show_config::pool_mode(app)),
            None,
            Some(cfg.pool.max_server_connections.to_string()),
            Some(conns.to_string()),
            Some("0".into()),
            Some(clients.to_string()),
            Some(paused.to_string()),
            Some("0".into()),
        ]);
    }
    r
}

/// PgBouncer's internal lists, with the counts pgpilot has (the rest 0; the exporter reads each).
pub fn lists(app: &Console) -> ResultSet {
    let pools = app.pools();
    let mut dbs: Vec<&str> = pools.iter().map(|p| p.snapshot.database.as_str()).collect();
    dbs.sort();
    dbs.dedup();
    let mut users: Vec<&str> = pools.iter().map(|p| p.snapshot.user.as_str()).collect();
    users.sort();
    users.dedup();
    let (used, free) = pools.iter().fold((0, 0), |(u, f), p| (u + p.snapshot.active, f + p.snapshot.idle));
    let clients = app.clients().len();
    let mut r = ResultSet::typed(&[("list", Text), ("items", Int4)]);
    let rows: [(&str, usize); 14] = [
        ("databases", dbs.len()),
        ("users", users.len()),
        ("peers", 0),
        ("pools", pools.len()),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", clients),
        ("login_clients", 0),
        ("free_servers", free),
        ("used_servers", used),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    for (name, n) in rows {
        r.row(vec![name.to_string(), n.to_string()]);
    }
    r
}

pub fn queries(app: &Console) -> ResultSet {
    let mut rows: Vec<QueryRow> = app.queries();
    crate::insights::stats::sort_rows(&mut rows, "total_ms");
    let mut r = ResultSet::new(&[
        "fingerprint",
        "database",
        "user",
        "calls",
        "errors",
        "rows",
        "total_ms",
        "mean_ms",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "query",
        "strategy",
        "strategy_reason",
    ]);
    for q in rows {
        let f = |v: f64| format!("{v:.3}");
        r.row(vec![
            q.fingerprint,
            q.database,
            q.user,
            q.calls.to_string(),
            q.errors.to_string(),
            q.rows.to_string(),
            f(q.total_ms),
            f(q.mean_ms),
            f(q.p50_ms),
            f(q.p95_ms),
            f(q.p99_ms),
            q.query,
            q.strategy.to_string(),
            q.strategy_reason.to_string(),
        ]);
    }
    r
}

/// One row of cache counters (the same numbers as /health/status `.cache`).
pub fn cache(app: &Console) -> ResultSet {
    let snap = app.cache();
    let value = serde_json::to_value(&snap).unwrap_or_default();
    let fields: Vec<(String, String)> =
        value.as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()).unwrap_or_default();
    let mut r = ResultSet::new(&["name", "value"]);
    for (k, v) in fields.into_iter().filter(|(k, _)| k != "replication") {
        r.row(vec![k, v]);
    }
    // One row per replication stream, readable in psql (not one JSON array).
    for s in &snap.replication {
        let lag = s.lag_ms.map_or("unknown".to_string(), |ms| format!("{ms} ms"));
        let mut v = format!(
            "{}, lag {lag}, applied {}, {} invalidations, {} reconnects",
            s.state, s.applied_lsn, s.invalidations, s.reconnects
        );
        if let Some(e) = &s.last_error {
            v.push_str(&format!(", last error: {e}"));
        }
        r.row(vec![format!("replication {}", s.database), v]);
    }
    r
}

/// SHOW N_PLUS_ONE: the findings of GET /insights/n-plus-one.
pub fn n_plus_one(app: &Console) -> ResultSet {
    let mut r = ResultSet::typed(&[
        ("database", Text),
        ("user", Text),
        ("application_name", Text),
        ("source_query", Text),
        ("repeated_query", Text),
        ("count", Int8),
        ("occurrences", Int8),
        ("total_ms", Numeric),
        ("suggestion", Text),
    ]);
    for f in app.n_plus_one() {
        r.row(vec![
            f.database,
            f.user,
            f.application_name,
            f.source_query,
            f.repeated_query,
            f.count.to_string(),
            f.occurrences.to_string(),
            format!("{:.3}", f.total_ms),
            f.suggestion,
        ]);
    }
    r
}
