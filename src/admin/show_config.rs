//! SHOW CONFIG: PgBouncer's four columns (key, value, default, changeable) over pgpilot's settings
//! (dotted names, secrets masked as `--check` masks them), then the PgBouncer names of the settings that have one, so a
//! tool that reads `max_client_conn` (pgbouncer_exporter) finds it.

use super::result::ResultSet;
use crate::config::Config;
use crate::shared::console::Console;

/// Settings a reload does not change (docs/CONFIG.md's "restart").
const RESTART: [&str; 20] = [
    "server.listen",
    "server.http_listen",
    "server.tcp_defer_accept_s",
    "server.unix_socket_dir",
    "server.worker_threads",
    "server.auth_secret",
    "tls.cert",
    "tls.key",
    "cache.max_bytes",
    "cache.redis_url",
    "cache.redis_timeout_ms",
    "cache.redis_verify_hits",
    "cache.invalidation",
    "cache.skip_unrepeated",
    "insights.max_fingerprints",
    "insights.analysis_cache_entries",
    "prepared.registry_max",
    "strategy.enabled",
    "strategy.cache_window",
    "strategy.cache_min_hit_ratio",
];

pub fn pool_mode(app: &Console) -> String {
    format!("{:?}", app.config().pool.mode).to_lowercase()
}

pub fn config(app: &Console) -> ResultSet {
    let mut r = ResultSet::new(&["key", "value", "default", "changeable"]);
    let cfg = app.config();
    let defaults: std::collections::HashMap<String, String> = flat(&Config::default()).into_iter().collect();
    for (k, v) in flat(&crate::config::env::masked_config(&cfg)) {
        let default = defaults.get(&k).cloned().unwrap_or_default();
        let changeable = if RESTART.contains(&k.as_str()) { "no" } else { "yes" };
        r.row(vec![k, v, default, changeable.into()]);
    }
    let pgbouncer = [
        ("max_client_conn", cfg.server.max_client_conn.to_string(), "1000"),
        ("default_pool_size", cfg.pool.max_size.to_string(), "20"),
        ("min_pool_size", cfg.pool.min_size.to_string(), "0"),
        ("pool_mode", pool_mode(app), "transaction"),
        ("max_user_connections", "0".to_string(), "0"),
        ("max_db_connections", cfg.pool.max_server_connections.to_string(), "0"),
        ("listen_port", cfg.server.listen.rsplit(':').next().unwrap_or("").to_string(), "6432"),
    ];
    for (k, v, d) in pgbouncer {
        r.row(vec![k.into(), v, d.into(), "yes".into()]);
    }
    r
}

fn flat(cfg: &Config) -> Vec<(String, String)> {
    let value = serde_json::to_value(cfg).unwrap_or_default();
    let mut out = Vec::new();
    flatten("", &value, &mut out);
    out
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
