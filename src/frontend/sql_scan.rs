//! A token-level scan of SQL text for the two things transaction pooling must know before the
//! parser-based analysis exists: statements that change session settings (so the client's state
//! is re-read and replayed on its next server), and statements whose effects outlive a
//! transaction on that one server (so the client is pinned to it).

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

/// Lower-cased words of each statement, with comments, string literals and quoted identifiers
/// skipped (their content can never be a keyword).
fn statements(sql: &str) -> Vec<Vec<String>> {
    let b = sql.as_bytes();
    let mut stmts = vec![Vec::new()];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b';' => {
                stmts.push(Vec::new());
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => i = find(b, i, b"\n").map_or(b.len(), |p| p + 1),
            b'/' if b.get(i + 1) == Some(&b'*') => i = find(b, i + 2, b"*/").map_or(b.len(), |p| p + 2),
            b'\'' | b'"' => i = skip_quoted(b, i, c),
            b'$' => i = skip_dollar(b, i),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                    i += 1;
                }
                let word = sql[start..i].to_ascii_lowercase();
                stmts.last_mut().expect("at least one statement").push(word);
            }
            _ => i += 1,
        }
    }
    stmts
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?.windows(pat.len()).position(|w| w == pat).map(|p| p + from)
}

fn skip_quoted(b: &[u8], start: usize, q: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        // E'...' strings may escape the quote with a backslash; skipping one byte is safe either way.
        if b[i] == b'\\' && q == b'\'' {
            i += 1;
        }
        i += 1;
    }
    b.len()
}

/// `$tag$ ... $tag$` bodies; a lone `$1` parameter is just skipped.
fn skip_dollar(b: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    if j < b.len() && b[j] == b'$' && !b[start + 1..j].iter().any(|c| c.is_ascii_digit() && j == start + 2) {
        let tag = &b[start..=j];
        return find(b, j + 1, tag).map_or(b.len(), |p| p + tag.len());
    }
    j
}

pub fn scan(sql: &str) -> Scan {
    let mut out = Scan::default();
    let stmts = statements(sql);
    let real: Vec<&Vec<String>> = stmts.iter().filter(|w| !w.is_empty()).collect();
    if let [only] = real.as_slice() {
        let target = match only.as_slice() {
            [d, p, name] if d == "deallocate" && p == "prepare" => Some(name),
            [d, name] if d == "deallocate" => Some(name),
            _ => None,
        };
        out.deallocate = target.filter(|n| *n != "all" && *n != "prepare").cloned();
    }
    for words in stmts {
        let w = |n: usize| words.get(n).map(String::as_str).unwrap_or("");
        if (w(0) == "discard" && w(1) == "all") || (w(0) == "deallocate" && words.last().is_some_and(|l| l == "all")) {
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
            "create" if words[1..].iter().take(3).any(|x| x == "temp" || x == "temporary") => {
                out.pin = Some("temporary table")
            }
            _ => {}
        }
        for word in &words {
            if word == "set_config" {
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
