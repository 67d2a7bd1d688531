//! A client's session settings in transaction mode: what its startup packet asked for plus what
//! its SET/RESET statements changed, re-read from the server after such statements and replayed
//! on whichever server connection the client gets next. A signature lets a connection that
//! already carries the same state skip the replay.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use crate::backend::{ServerConn, ServerError};

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];
/// Settings that cannot or must not be replayed with set_config.
const NOT_REPLAYED: &[&str] = &[
    "transaction_isolation",
    "transaction_read_only",
    "transaction_deferrable",
    "session_authorization",
    "is_superuser",
];

/// The state-capture query: every setting changed in the session (pgpilot's own replay uses
/// set_config, so the client's startup values show up here too until a RESET removes them).
const CAPTURE_SQL: &str = "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'";

/// Signature of a server connection whose settings are not known (never equal to a real state:
/// real signatures are odd, 0 is a fresh connection).
pub const UNKNOWN_STATE: u64 = 2;

#[derive(Debug, Default, Clone)]
pub struct SessionState {
    /// What the startup packet asked for: what RESET returns to, as on a direct connection.
    startup: std::sync::Arc<BTreeMap<String, String>>,
    /// The effective settings: startup values overlaid with the session's own changes.
    settings: BTreeMap<String, String>,
    sig: u64,
}

impl SessionState {
    /// From the startup packet: plain parameters and `options` (`-c name=value`, `--name=value`).
    pub fn from_startup(params: &BTreeMap<String, String>) -> Self {
        let mut settings = BTreeMap::new();
        for (k, v) in params {
            if !NOT_SETTINGS.contains(&k.as_str()) {
                settings.insert(k.clone(), v.clone());
            }
        }
        if let Some(options) = params.get("options") {
            settings.extend(parse_options(options));
        }
        Self { sig: signature(&settings), startup: std::sync::Arc::new(settings.clone()), settings }
    }

    pub fn sig(&self) -> u64 {
        self.sig
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }

    /// Makes `conn` carry this state (RESET ALL, then set_config for each setting).
    pub async fn apply(&self, conn: &mut ServerConn) -> Result<(), ServerError> {
        if conn.state_sig == self.sig {
            return Ok(());
        }
        let mut sql = String::from("RESET ALL");
        if !self.settings.is_empty() {
            sql.push_str("; SELECT ");
            let calls: Vec<String> = self
                .settings
                .iter()
                .filter(|(k, _)| !NOT_REPLAYED.contains(&k.as_str()))
                .map(|(k, v)| format!("pg_catalog.set_config({}, {}, false)", literal(k), literal(v)))
                .collect();
            sql.push_str(&calls.join(", "));
        }
        conn.run_internal(&sql).await?;
        conn.state_sig = self.sig;
        Ok(())
    }

    /// Re-reads the session's settings from the server it just used. Settings the client RESET
    /// fall back to its startup values; the connection then differs from the client's state
    /// and is marked unknown, so the next checkout replays it.
    pub async fn capture(&mut self, conn: &mut ServerConn) -> Result<(), ServerError> {
        let rows = conn.run_internal(CAPTURE_SQL).await?;
        let changed: BTreeMap<String, String> = rows
            .into_iter()
            .filter_map(|r| match (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
                (Some(k), Some(v)) if !NOT_REPLAYED.contains(&k.as_str()) => Some((k, v)),
                _ => None,
            })
            .collect();
        let mut settings = BTreeMap::new();
        for (k, v) in self.startup.iter() {
            if !changed.keys().any(|c| c.eq_ignore_ascii_case(k)) {
                settings.insert(k.clone(), v.clone());
            }
        }
        let server_matches = settings.is_empty();
        settings.extend(changed);
        self.sig = signature(&settings);
        self.settings = settings;
        conn.state_sig = if server_matches { self.sig } else { UNKNOWN_STATE };
        Ok(())
    }
}

fn signature(settings: &BTreeMap<String, String>) -> u64 {
    if settings.is_empty() {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    settings.hash(&mut h);
    h.finish() | 1
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `-c a=b --c=d` (backslash escapes a space, as libpq documents).
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let pair = if w == "-c" {
            it.next()
        } else {
            w.strip_prefix("--").or_else(|| w.strip_prefix("-c")).map(str::to_string)
        };
        if let Some((k, v)) = pair.as_deref().and_then(|p| p.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_options_become_settings() {
        let mut p = BTreeMap::new();
        p.insert("user".to_string(), "app".to_string());
        p.insert("application_name".to_string(), "svc".to_string());
        p.insert("options".to_string(), "-c statement_timeout=5s --search-path=a\\ b".to_string());
        let s = SessionState::from_startup(&p);
        assert_eq!(s.get("application_name"), Some("svc"));
        assert_eq!(s.get("statement_timeout"), Some("5s"));
        assert_eq!(s.get("search_path"), Some("a b"));
        assert_eq!(s.get("user"), None);
        assert_ne!(s.sig(), 0);
    }

    #[test]
    fn empty_state_has_the_fresh_connection_signature() {
        let mut p = BTreeMap::new();
        p.insert("user".to_string(), "app".to_string());
        assert_eq!(SessionState::from_startup(&p).sig(), 0);
    }
}
