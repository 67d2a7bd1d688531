//! A client's session settings in transaction mode: what its startup packet asked for plus what
//! its SET/RESET statements changed, re-read from the server after such statements and replayed
//! on whichever server connection the client gets next. A signature lets a connection that
//! already carries the same state skip the replay.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use crate::backend::{ServerConn, ServerError};

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];
/// Settings that cannot or must not be replayed with set_config.
const NOT_REPLAYED: &[&str] =
    &["transaction_isolation", "transaction_read_only", "transaction_deferrable", "is_superuser"];

/// The state-capture query: every setting changed in the session (pgpilot's own replay uses
/// set_config, so the client's startup values show up here too until a RESET removes them), the
/// role and session authorization (pg_settings lists neither), and the custom settings the
/// client named (PostgreSQL lists placeholder settings nowhere: they are read back by name).
const CAPTURE_SQL: &str = "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' \
     AND name NOT IN ('role', 'session_authorization') \
     UNION ALL SELECT 'role', pg_catalog.current_setting('role') \
     UNION ALL SELECT 'session_authorization', pg_catalog.current_setting('session_authorization')";

/// What a replay starts from: the login user, no role, every setting at its default (RESET ALL
/// leaves the role and the session authorization alone).
const RESET_SQL: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL";

/// Signature of a server connection whose settings are not known (never equal to a real state:
/// real signatures are odd, 0 is a fresh connection).
const UNKNOWN_STATE: u64 = crate::backend::UNKNOWN_STATE;

#[derive(Debug, Default, Clone)]
pub struct SessionState {
    /// What the startup packet asked for: what RESET returns to, as on a direct connection.
    startup: std::sync::Arc<BTreeMap<String, String>>,
    /// The effective settings: startup values overlaid with the session's own changes (the
    /// startup map itself until the first capture: a login copies nothing).
    settings: std::sync::Arc<BTreeMap<String, String>>,
    /// Custom (dotted) settings the client set or reset by name: read back by name.
    custom: BTreeSet<String>,
    /// The login user: a session authorization equal to it is the default, not state.
    login: std::sync::Arc<str>,
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
        let custom = settings.keys().filter(|k| k.contains('.')).map(|k| k.to_ascii_lowercase()).collect();
        let login = params.get("user").map_or("", String::as_str).into();
        let settings = std::sync::Arc::new(settings);
        Self { sig: signature(&settings), startup: settings.clone(), settings, custom, login }
    }

    /// Custom settings the client named in a statement: read back at the next capture.
    pub fn track(&mut self, names: &[String]) {
        for n in names {
            if !self.custom.contains(n) {
                self.custom.insert(n.clone());
            }
        }
    }

    pub fn sig(&self) -> u64 {
        self.sig
    }

    /// What the startup packet asked for (settings only).
    pub fn startup(&self) -> &BTreeMap<String, String> {
        &self.startup
    }

    /// The signature of the startup settings but application_name, with that name, when it is
    /// one PostgreSQL reports exactly as given (printable ASCII, shorter than NAMEDATALEN): two
    /// logins that differ only in it are told the same values but that one (`pool::Logins`).
    pub fn login_variant(&self) -> Option<(u64, &str)> {
        let name = self.startup.get("application_name")?;
        if name.len() >= 64 || !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return None;
        }
        let mut rest = (*self.startup).clone();
        rest.remove("application_name");
        Some((signature(&rest), name))
    }

    /// The startup values a RESET ALL (`all`) or a RESET of `names` returns to.
    pub fn startup_values(&self, all: bool, names: &[String]) -> Vec<(String, String)> {
        self.startup
            .iter()
            .filter(|(k, _)| all || names.iter().any(|n| n.eq_ignore_ascii_case(k)))
            .filter(|(k, _)| !NOT_REPLAYED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// set_config for each (name, value): pgpilot's way to give a server the client's values.
    pub fn set_config_sql(pairs: &[(String, String)]) -> String {
        let calls: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("pg_catalog.set_config({}, {}, false)", literal(k), literal(v)))
            .collect();
        format!("SELECT {}", calls.join(", "))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }

    /// Makes `conn` carry this state (RESET ALL, then set_config for each setting).
    pub async fn apply(&self, conn: &mut ServerConn) -> Result<(), ServerError> {
        if conn.state_sig == self.sig {
            return Ok(());
        }
        // Boxed: a rare path whose future would otherwise sit in every idle session's state.
        Box::pin(conn.run_internal(&self.replay_sql())).await?;
        conn.state_sig = self.sig;
        Ok(())
    }

    /// RESET everything, then set_config for each setting: the session authorization first (it
    /// resets the role), then the role, then the rest.
    fn replay_sql(&self) -> String {
        let mut sql = String::from(RESET_SQL);
        let first = ["session_authorization", "role"];
        let ordered = first
            .iter()
            .filter_map(|k| self.settings.get_key_value(*k))
            .chain(self.settings.iter().filter(|(k, _)| !first.contains(&k.as_str())));
        let calls: Vec<String> = ordered
            .filter(|(k, _)| !NOT_REPLAYED.contains(&k.as_str()))
            .map(|(k, v)| format!("pg_catalog.set_config({}, {}, false)", literal(k), literal(v)))
            .collect();
        if !calls.is_empty() {
            sql.push_str("; SELECT ");
            sql.push_str(&calls.join(", "));
        }
        sql
    }

    fn capture_sql(&self) -> String {
        if self.custom.is_empty() {
            return CAPTURE_SQL.to_string();
        }
        let names: Vec<String> = self.custom.iter().map(|n| literal(n)).collect();
        format!(
            "{CAPTURE_SQL} UNION ALL SELECT n, pg_catalog.current_setting(n, true) \
             FROM pg_catalog.unnest(ARRAY[{}]::text[]) AS n",
            names.join(", ")
        )
    }

    /// Whether a captured (name, value) is state to keep: the defaults of the role and the
    /// session authorization are not, and neither is a custom setting that is unset ('' after a
    /// RESET on a backend where it was once set, NULL on a fresh one: see docs/RELIABILITY.md).
    fn is_state(&self, name: &str, value: &str) -> bool {
        match name {
            "role" => value != "none",
            "session_authorization" => value != &*self.login,
            _ if NOT_REPLAYED.contains(&name) => false,
            _ => !(name.contains('.') && value.is_empty()),
        }
    }

    /// Re-reads the session's settings from the server it just used. Settings the client RESET
    /// fall back to its startup values; the connection then differs from the client's state
    /// and is marked unknown, so the next checkout replays it.
    pub async fn capture(&mut self, conn: &mut ServerConn) -> Result<(), ServerError> {
        let rows = conn.run_internal(&self.capture_sql()).await?;
        let changed: BTreeMap<String, String> = rows
            .into_iter()
            .filter_map(|r| match (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
                (Some(k), Some(v)) if self.is_state(&k, &v) => Some((k, v)),
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
        self.settings = std::sync::Arc::new(settings);
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

/// A string literal that means the same whatever standard_conforming_strings is (a client may
/// have turned it off on the connection pgpilot's own query runs on).
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
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
    fn literals_hold_backslashes_and_quotes() {
        assert_eq!(literal(r"a'b\"), r"E'a''b\\'");
    }

    #[test]
    fn empty_state_has_the_fresh_connection_signature() {
        let mut p = BTreeMap::new();
        p.insert("user".to_string(), "app".to_string());
        assert_eq!(SessionState::from_startup(&p).sig(), 0);
    }
}
