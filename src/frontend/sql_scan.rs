//! What a statement text means for transaction pooling, from the parser-based analysis of each
//! of its statements (PostgreSQL's own grammar, so no spelling, case, quoting or schema
//! qualification slips past): statements that change session state (re-read and replayed on the
//! client's next server), state pgpilot cannot read back (the client is pinned), and statements
//! whose effects outlive a transaction on that one server (pinned too).

use crate::sql::hint::{self, Hint};
use crate::sql::session_effect::set_config_names;
use crate::sql::tokens::Shape;
use crate::sql::Analyzed;

/// What a statement text implies for pooling.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    pub changes_session: bool,
    pub pin: Option<&'static str>,
    /// DISCARD ALL / DEALLOCATE ALL: the server drops every prepared statement.
    pub drops_statements: bool,
    /// The whole text is `DEALLOCATE [PREPARE] name` (psycopg's way to close a statement).
    pub deallocate: Option<String>,
    /// Custom settings the text sets or resets by name (read back by name afterwards).
    pub names: Vec<String>,
    /// DDL: prepared statements may mean something else afterwards.
    pub ddl: bool,
    /// PREPARE TRANSACTION or COMMIT PREPARED (`sql::two_phase`).
    pub two_phase: bool,
    /// RESET ALL / DISCARD ALL, and settings reset by name: back to the startup values.
    pub restores: bool,
    pub resets: Vec<String>,
    /// After the text the session's state is unknown (`Some(true)`), known again after DISCARD
    /// ALL (`Some(false)`: RESET ALL leaves temp tables, locks and LISTENs), or as before (`None`).
    pub unknown_after: Option<bool>,
    /// A `pgpilot:` cache directive in a comment: read once per new text, kept with its scan.
    pub hint: Hint,
}

/// The scan of a text nothing was looked for in (analysis off, no byte that could matter):
/// one shared value, not an allocation per message.
pub fn nothing() -> std::sync::Arc<Scan> {
    static NOTHING: std::sync::LazyLock<std::sync::Arc<Scan>> = std::sync::LazyLock::new(Default::default);
    NOTHING.clone()
}

impl Scan {
    /// A prepared statement of this text does something to the session each time it runs, not
    /// only when parsed (a driver prepares `SELECT set_config('app.tenant', $1, false)` once and
    /// binds it per request): the scan is kept with the statement and replayed at each Bind.
    pub fn lasts(&self) -> bool {
        self.changes_session
            || self.pin.is_some()
            || self.unknown_after.is_some()
            || self.ddl
            || self.restores
            || !self.resets.is_empty()
    }
}

/// Whether `sql` might hold anything a scan reports; false lets a caller that needs no analysis
/// skip it. Conservative by construction: any statement that changes session state, pins, or
/// calls a function contains one of these byte strings in some letter case ('temp' for SELECT
/// INTO TEMP, '(' for every
/// call, '"' and 'u&' for identifiers spelt in quotes or escapes, ';' for several statements).
pub fn may_matter(sql: &[u8]) -> bool {
    let text = sql.trim_ascii();
    let body = text.strip_suffix(b";").unwrap_or(text);
    // One vectorised search for the punctuation, then one pass that compares only where a byte
    // starts a needle word (this runs on every Query when insights are off).
    body.starts_with(b"-")
        || body.starts_with(b"/")
        || memchr::memchr3(b'(', b'"', b';', body).is_some()
        || (0..body.len()).any(|i| starts_needle(&body[i..]))
}

fn starts_needle(rest: &[u8]) -> bool {
    let words: &[&[u8]] = match rest[0] | 0x20 {
        b's' => &[b"set"],
        b'd' => &[b"discard", b"declare", b"deallocate", b"do"],
        b'l' => &[b"listen", b"load"],
        b'p' => &[b"prepare"],
        b'c' => &[b"create", b"call"],
        b't' => &[b"temp"],
        b'u' => &[b"u&"],
        _ => return false,
    };
    words.iter().any(|w| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w))
}

/// The scan of a text too long to analyze (`insights.max_analyzed_bytes`): nothing when no byte
/// of it could start what a scan reports (`may_matter`), otherwise the worst case: settings read
/// back, the session's state unknown (the client is pinned), prepared statements dropped.
pub fn unanalyzed(sql: &[u8], kind: crate::sql::StatementKind) -> Scan {
    // (No hint: an unanalyzed statement is never cached, and the text may be megabytes.)
    let ddl = kind == crate::sql::StatementKind::Ddl;
    if !may_matter(sql) {
        return Scan { ddl, ..Default::default() };
    }
    Scan { changes_session: true, drops_statements: true, unknown_after: Some(true), ddl, ..Default::default() }
}

/// The scan of a text from its statements' analyses (`shapes` and `analyzed` side by side).
pub fn from_analyses(sql: &str, shapes: &[Shape], analyzed: &Analyzed) -> Scan {
    let mut out =
        Scan { deallocate: deallocate_target(shapes), hint: hint::find(sql.as_bytes()), ..Default::default() };
    for (shape, (analysis, _)) in shapes.iter().zip(analyzed) {
        let e = &analysis.session;
        out.ddl |= analysis.kind == crate::sql::StatementKind::Ddl;
        out.two_phase |= crate::sql::two_phase::phase(&shape.text).is_some();
        out.changes_session |= e.changes;
        out.drops_statements |= e.drops_statements;
        if e.pin.is_some() {
            out.pin = e.pin;
        }
        for n in &e.names {
            if !out.names.contains(n) {
                out.names.push(n.clone());
            }
        }
        if e.discards {
            out.unknown_after = Some(false);
        }
        out.restores |= e.restores;
        out.resets.extend(e.resets.iter().cloned());
        let mut unknown = e.unknown;
        if e.set_config {
            match set_config_names(sql[shape.start..shape.end].trim()) {
                Some(names) => out.names.extend(names.into_iter().filter(|n| n.contains('.'))),
                None => unknown = true,
            }
        }
        if unknown {
            out.unknown_after = Some(true);
        }
    }
    out
}

/// The statement name when the whole text is `DEALLOCATE [PREPARE] name`.
pub fn deallocate_of(sql: &str) -> Option<String> {
    deallocate_target(&crate::sql::tokens::shapes(sql))
}

/// `DEALLOCATE [PREPARE] name` as the whole text.
fn deallocate_target(shapes: &[Shape]) -> Option<String> {
    let [only] = shapes else { return None };
    if !only.text.starts_with("deallocate ") {
        return None; // every Query's text comes here: no split for the others
    }
    let words: Vec<&str> = only.text.split(' ').collect();
    let target = match words.as_slice() {
        ["deallocate", "prepare", name] => Some(*name),
        ["deallocate", name] => Some(*name),
        _ => None,
    };
    target.filter(|n| *n != "all" && *n != "prepare").map(|n| n.trim_matches('"').to_string())
}

/// The scan of a text on its own, with a private analyzer (tests only: the session scans with the
/// shared analysis cache).
#[cfg(test)]
pub fn scan(sql: &str) -> Scan {
    let shapes = crate::sql::tokens::shapes(sql);
    let analyzed = crate::sql::Analyzer::new(16).analyze_shapes(sql, &shapes, false);
    from_analyses(sql, &shapes, &analyzed)
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
    fn names_and_unknown_state() {
        assert_eq!(scan("SET App.Tenant = 't1'").names, ["app.tenant"]);
        assert_eq!(scan("select Set_Config('app.tenant', 't2', false)").names, ["app.tenant"]);
        assert_eq!(scan("select \"set_config\"('search_path', 'evil', false)").names, Vec::<String>::new());
        assert!(scan("select \"set_config\"('search_path', 'evil', false)").changes_session);
        assert_eq!(scan("SELECT set_config($1, $2, false)").unknown_after, Some(true));
        assert_eq!(scan("DO $$BEGIN PERFORM set_config('a.b','c',false); END$$").unknown_after, Some(true));
        assert_eq!(scan("select my_tenant_fn('t1')").unknown_after, Some(true));
        assert_eq!(scan("select my_fn(); DISCARD ALL").unknown_after, Some(false));
        assert_eq!(scan("select my_fn(); RESET ALL").unknown_after, Some(true));
        assert_eq!(scan("DISCARD ALL; select my_fn()").unknown_after, Some(true));
        assert_eq!(scan("select count(*) from t").unknown_after, None);
    }

    #[test]
    fn pins() {
        assert_eq!(scan("LISTEN chan").pin, Some("LISTEN"));
        assert_eq!(scan("select pg_advisory_lock(1)").pin, Some("session advisory lock"));
        assert_eq!(scan("SELECT Pg_Advisory_Lock(4711)").pin, Some("session advisory lock"));
        assert_eq!(scan("select pg_advisory_xact_lock(1)").pin, None);
        assert_eq!(scan("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;").pin, None);
        assert_eq!(scan("CREATE TEMP TABLE x (a int)").pin, Some("temporary table"));
        assert_eq!(scan("SELECT 1 INTO TEMP x").pin, Some("temporary table"));
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
            "SELECT Set_Config('a','b',false)",
            "SELECT \"set_config\"('a','b',false)",
            "select 1; set a = 2",
            "/* c */ SET x = 1",
            "LISTEN c",
            "DEALLOCATE s1",
            "create temp table t (a int)",
            "SELECT 1 INTO TEMP x",
            "Do $$ begin end $$",
            "select my_fn()",
        ] {
            let s = scan(sql);
            let found = s.changes_session || s.pin.is_some() || s.deallocate.is_some() || s.unknown_after.is_some();
            assert!(found, "scan finds nothing in {sql}");
            assert!(super::may_matter(sql.as_bytes()), "{sql}");
        }
        assert!(!super::may_matter(b"SELECT abalance FROM pgbench_accounts WHERE aid = 5;"));
        assert!(super::may_matter(b"select 1 ; select 2"));
        assert!(super::may_matter(b"SELECT U&\"x\" FROM t"));
        assert!(super::may_matter(b"SELECT 1 -- set"));
        assert!(super::may_matter(b"-- c\nSELECT 1"));
        assert!(super::may_matter(b"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2"));
    }

    /// The needle search as first written (every needle over every window): the fast one must
    /// agree with it on every text.
    fn may_matter_reference(sql: &[u8]) -> bool {
        const NEEDLES: [&[u8]; 15] = [
            b"set",
            b"discard",
            b"listen",
            b"prepare",
            b"load",
            b"declare",
            b"create",
            b"temp",
            b"deallocate",
            b"do",
            b"call",
            b"(",
            b"\"",
            b"u&",
            b";",
        ];
        let text = sql.trim_ascii();
        let body = text.strip_suffix(b";").unwrap_or(text);
        NEEDLES.iter().any(|n| body.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n)))
            || body.starts_with(b"-")
            || body.starts_with(b"/")
    }

    #[test]
    fn fast_needle_search_agrees_with_the_reference() {
        let alphabet: &[u8] = b"sEtDiScArDlIoNpRePcAlTmuU&;(\" -/xyz\x80\xff0";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let len = (seed % 12) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            assert_eq!(super::may_matter(&text), may_matter_reference(&text), "{:?}", String::from_utf8_lossy(&text));
        }
        for word in ["set", "discard", "listen", "prepare", "load", "declare", "create", "temp", "deallocate", "call"] {
            for text in [word.to_uppercase(), format!("x{word}y"), format!("a {} b", &word[..word.len() - 1])] {
                assert_eq!(super::may_matter(text.as_bytes()), may_matter_reference(text.as_bytes()), "{text}");
            }
        }
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
