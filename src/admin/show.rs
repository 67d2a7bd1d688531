//! The SHOW commands, with PgBouncer's column names where PgBouncer has the command.

use std::time::{Duration, SystemTime};

use super::result::ResultSet;
use crate::insights::stats::QueryRow;
use crate::shared::App;

fn secs(d: Duration) -> String {
    d.as_secs().to_string()
}

fn unix(t: SystemTime) -> String {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0).to_string()
}

pub fn pools(app: &App) -> ResultSet {
    let mode = format!("{:?}", app.config.load().pool.mode).to_lowercase();
    let mut r = ResultSet::new(&[
        "database",
        "user",
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_total",
        "pool_size",
        "pool_mode",
        "pool_target",
        "sizing",
        "slow_lane_active",
        "slow_lane_waited",
    ]);
    for pool in app.pools.all() {
        let s = pool.snapshot();
        let clients = pool.clients.load(std::sync::atomic::Ordering::Relaxed).max(0) as usize;
        r.row(vec![
            s.database,
            s.user,
            clients.saturating_sub(s.waiting).to_string(),
            s.waiting.to_string(),
            s.active.to_string(),
            s.idle.to_string(),
            s.size.to_string(),
            s.max_size.to_string(),
            mode.clone(),
            s.target.to_string(),
            s.decision.map_or(String::new(), |d| d.reason.to_string()),
            s.slow_lane_active.to_string(),
            s.slow_lane_waited.to_string(),
        ]);
    }
    r
}

pub fn stats(app: &App) -> ResultSet {
    let queries = app.query_stats.rows(app.config.load().cache.enabled);
    let mut r = ResultSet::new(&[
        "database",
        "user",
        "total_xact_count",
        "total_query_count",
        "total_query_time",
        "total_wait_timeouts",
    ]);
    for pool in app.pools.all() {
        let mine = queries.iter().filter(|q| q.database == pool.key.database && q.user == pool.key.user);
        let (count, time_us) = mine.fold((0u64, 0f64), |(c, t), q| (c + q.calls, t + q.total_ms * 1000.0));
        r.row(vec![
            pool.key.database.clone(),
            pool.key.user.clone(),
            pool.checkouts.load(std::sync::atomic::Ordering::Relaxed).to_string(),
            count.to_string(),
            format!("{}", time_us as u64),
            pool.wait_timeouts.load(std::sync::atomic::Ordering::Relaxed).to_string(),
        ]);
    }
    r
}

pub fn clients(app: &App) -> ResultSet {
    let mut r =
        ResultSet::new(&["user", "database", "state", "addr", "connect_time", "application_name", "server_pid"]);
    for c in app.cancels.clients() {
        let server = c.server.lock().clone();
        r.row(vec![
            c.user.clone(),
            c.database.clone(),
            if server.is_some() { "active" } else { "idle" }.into(),
            c.peer.clone(),
            unix(c.connected),
            c.application_name.clone(),
            server.map(|s| s.pid.to_string()).unwrap_or_default(),
        ]);
    }
    r
}

pub fn servers(app: &App) -> ResultSet {
    let mut r = ResultSet::new(&["user", "database", "state", "addr", "pid", "age_s", "idle_s", "client"]);
    for c in app.cancels.clients() {
        if let Some(s) = c.server.lock().clone() {
            let row = vec![c.user.clone(), c.database.clone(), "active".into(), s.addr.to_string(), s.pid.to_string()];
            r.row(row.into_iter().chain([String::new(), "0".into(), c.peer.clone()]).collect());
        }
    }
    for pool in app.pools.all() {
        for (pid, (addr, age, idle)) in pool.idle_servers() {
            let (user, db) = (pool.key.user.clone(), pool.key.database.clone());
            r.row(vec![
                user,
                db,
                "idle".into(),
                addr.to_string(),
                pid.to_string(),
                secs(age),
                secs(idle),
                String::new(),
            ]);
        }
    }
    r
}

/// Every setting as key = value (passwords masked), flattened from the configuration.
pub fn config(app: &App) -> ResultSet {
    let mut r = ResultSet::new(&["key", "value"]);
    let value = serde_json::to_value(&**app.config.load()).unwrap_or_default();
    let mut flat = Vec::new();
    flatten("", &value, &mut flat);
    for (k, v) in flat {
        let masked =
            k.contains("password") || k.contains("secret") || (k.starts_with("upstream.url") && v.contains('@'));
        r.row(vec![k, if masked { mask(&v) } else { v }]);
    }
    r
}

fn mask(v: &str) -> String {
    match v.split_once("://").and_then(|(s, rest)| rest.split_once('@').map(|(cred, host)| (s, cred, host))) {
        Some((scheme, cred, host)) => format!("{scheme}://{}:********@{host}", cred.split(':').next().unwrap_or("")),
        None => "********".into(),
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Array(a) if a.iter().any(|x| x.is_object()) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        serde_json::Value::Null => out.push((prefix.to_string(), String::new())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

pub fn queries(app: &App) -> ResultSet {
    let mut rows: Vec<QueryRow> = app.query_stats.rows(app.config.load().cache.enabled);
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
pub fn cache(app: &App) -> ResultSet {
    let snap = app.cache_snapshot();
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
