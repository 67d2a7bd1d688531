//! A token-level scan of SQL text for the two things transaction pooling must know before the
//! parser-based analysis exists: statements that change session settings (so the client's state
//! is re-read and replayed on its next server), and statements whose effects outlive a
//! transaction on that one server (so the client is pinned to it).

use crate::sql::tokens::Shape;

/// What a statement text implies for pooling.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    pub changes_session: bool,
    pub pin: Option<&'static str>,
    /// DISCARD ALL / DEALLOCATE ALL: the server drops every prepared statement.
    pub drops_statements: bool,
    /// The whole text is `DEALLOCATE [PREPARE] name` (psycopg's way to close a statement).
    pub deallocate: Option<String>,
}

/// Whether `sql` might hold anything `scan` reports: false lets a caller that needs no analysis
/// skip tokenizing (leading comments, several statements and the keywords below say "maybe").
pub fn may_matter(sql: &[u8]) -> bool {
    let text = sql.trim_ascii();
    if text.starts_with(b"-") || text.starts_with(b"/") {
        return true;
    }
    let first_len = text.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    let first = &text[..first_len];
    let keywords: [&[u8]; 9] =
        [b"set", b"reset", b"discard", b"listen", b"prepare", b"load", b"declare", b"create", b"deallocate"];
    if keywords.iter().any(|k| k.eq_ignore_ascii_case(first)) {
        return true;
    }
    let body = text.strip_suffix(b";").unwrap_or(text);
    // Function names as written in practice (lower or upper case); mixed case is not matched.
    let needles: [&[u8]; 4] = [b"advisory", b"ADVISORY", b"set_config", b"SET_CONFIG"];
    memchr::memchr(b';', body).is_some() || needles.iter().any(|n| memchr::memmem::find(body, n).is_some())
}

pub fn scan(sql: &str) -> Scan {
    scan_shapes(&crate::sql::tokens::shapes(sql))
}

/// The scan over statement shapes already computed for analysis (one tokenization per text).
pub fn scan_shapes(shapes: &[Shape]) -> Scan {
    let mut out = Scan::default();
    if let [only] = shapes {
        let words: Vec<&str> = only.text.split(' ').collect();
        let target = match words.as_slice() {
            ["deallocate", "prepare", name] => Some(*name),
            ["deallocate", name] => Some(*name),
            _ => None,
        };
        out.deallocate = target.filter(|n| *n != "all" && *n != "prepare").map(|n| n.trim_matches('"').to_string());
    }
    for shape in shapes {
        let words: Vec<&str> = shape.text.split(' ').collect();
        let w = |n: usize| words.get(n).copied().unwrap_or("");
        if (w(0) == "discard" && w(1) == "all") || (w(0) == "deallocate" && words.last() == Some(&"all")) {
            out.drops_statements = true;
        }
        match w(0) {
            "set" => out.changes_session |= !matches!(w(1), "local" | "transaction" | "constraints"),
            "reset" | "discard" => out.changes_session = true,
            "listen" => out.pin = Some("LISTEN"),
            "prepare" => out.pin = Some("SQL PREPARE"),
            "load" => out.pin = Some("LOAD"),
            "declare" if words.windows(2).any(|p| p[0] == "with" && p[1] == "hold") => {
                out.pin = Some("cursor WITH HOLD")
            }
            "create" if words[1..].iter().take(3).any(|x| *x == "temp" || *x == "temporary") => {
                out.pin = Some("temporary table")
            }
            _ => {}
        }
        for word in &words {
            if *word == "set_config" {
                out.changes_session = true;
            }
            if word.starts_with("pg_advisory_lock") || word.starts_with("pg_try_advisory_lock") {
                out.pin = Some("session advisory lock");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::scan;

    #[test]
    fn session_changes() {
        assert!(scan("SET search_path TO app").changes_session);
        assert!(scan("select 1; set statement_timeout = 5").changes_session);
        assert!(scan("RESET ALL").changes_session);
        assert!(scan("SELECT set_config('a.b', '1', false)").changes_session);
        assert!(!scan("SET LOCAL statement_timeout = 5").changes_session);
        assert!(!scan("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").changes_session);
        assert!(!scan("UPDATE t SET a = 1").changes_session);
        assert!(!scan("SELECT 'set x = 1' -- set y\n/* reset */").changes_session);
        assert!(!scan("SELECT $$ ; set a = 1 $$").changes_session);
    }

    #[test]
    fn pins() {
        assert_eq!(scan("LISTEN chan").pin, Some("LISTEN"));
        assert_eq!(scan("select pg_advisory_lock(1)").pin, Some("session advisory lock"));
        assert_eq!(scan("select pg_advisory_xact_lock(1)").pin, None);
        assert_eq!(scan("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;").pin, None);
        assert_eq!(scan("CREATE TEMP TABLE x (a int)").pin, Some("temporary table"));
        assert_eq!(scan("create global temporary table x (a int)").pin, Some("temporary table"));
        assert_eq!(scan("DECLARE c CURSOR WITH HOLD FOR SELECT 1").pin, Some("cursor WITH HOLD"));
        assert_eq!(scan("DECLARE c CURSOR FOR SELECT 1").pin, None);
        assert_eq!(scan("select $1::int").pin, None);
    }

    #[test]
    fn the_fast_check_never_misses_what_scan_finds() {
        for sql in [
            "SET x = 1",
            "  reset all",
            "select pg_advisory_lock(1)",
            "SELECT set_config('a','b',false)",
            "select 1; set a = 2",
            "/* c */ SET x = 1",
            "LISTEN c",
            "DEALLOCATE s1",
            "create temp table t (a int)",
        ] {
            assert!(super::may_matter(sql.as_bytes()), "{sql}");
        }
        assert!(!super::may_matter(b"SELECT abalance FROM pgbench_accounts WHERE aid = 5;"));
        assert!(!super::may_matter(b"UPDATE t SET a = 1 WHERE id = 2"));
    }

    #[test]
    fn statement_lifecycle() {
        assert_eq!(scan("DEALLOCATE _pg3_0").deallocate.as_deref(), Some("_pg3_0"));
        assert_eq!(scan("deallocate prepare s1;").deallocate.as_deref(), Some("s1"));
        assert_eq!(scan("DEALLOCATE ALL").deallocate, None);
        assert!(scan("DEALLOCATE ALL").drops_statements);
        assert!(scan("DISCARD ALL").drops_statements);
        assert!(!scan("DISCARD PLANS").drops_statements);
        assert_eq!(scan("DEALLOCATE a; SELECT 1").deallocate, None);
    }
}
