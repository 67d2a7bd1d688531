//! Analysis of one statement with libpg_query (fingerprint, normalize, summary), with a token
//! fallback when the parser rejects the text (the statement still gets a stable fingerprint and
//! is never blocked: the server will report its own error).

use std::sync::Arc;

use super::functions::{all_stable, none_write, VOLATILE};
use super::session_effect::{self, SessionEffect};
use super::tokens::fnv1a;
use super::{Analysis, CacheEffect, StatementKind, WriteScope};

pub fn analyze(sql: &str, shape: &str) -> Analysis {
    let words: Vec<&str> = shape.split(' ').collect();
    let locks_rows = words.windows(2).any(|w| w[0] == "for" && matches!(w[1], "update" | "share" | "no" | "key"));
    let paginated = words.iter().any(|w| *w == "limit" || *w == "offset" || *w == "fetch");
    let a = match parsed(sql) {
        Some(mut a) => {
            a.locks_rows = locks_rows;
            a.paginated = paginated;
            a.session =
                session_effect::of_statement(sql, super::builtins::is_builtin).unwrap_or_else(|| from_words(&words));
            a
        }
        None => {
            let kind = kind_from_first_word(words.first().copied().unwrap_or(""));
            Analysis {
                fingerprint: fnv1a(shape.as_bytes()),
                normalized: shape.to_string(),
                shown: REJECTED.into(),
                kind,
                tables_read: Vec::new(),
                tables_written: Vec::new(),
                volatile: words.iter().any(|w| VOLATILE.contains(w)),
                locks_rows,
                paginated,
                parsed: false,
                functions_stable: false,
                writes: if kind == StatementKind::Transaction { WriteScope::Nothing } else { WriteScope::Unknown },
                read_names: Arc::from([]),
                written_names: Arc::from([]),
                cache_effect: CacheEffect::None,
                session: from_words(&words),
                keyed: None,
                learned: Default::default(),
            }
        }
    };
    let mut a = with_cache_facts(a, shape);
    if joined(sql, shape) {
        // The token pass kept several statements together (a name `nesting` misread kept a
        // routine body open past its end): anything may be written, DDL included, and the
        // session's reads are no longer keyed by what pgpilot knows of its state.
        a.kind = StatementKind::Ddl;
        a.writes = WriteScope::Unknown;
        a.cache_effect = CacheEffect::Session;
        a.keyed = None;
    }
    if let Some(k) = a.keyed.as_mut() {
        // (Just built: not shared yet, so this does not copy.)
        for b in &mut Arc::make_mut(k).bound {
            b.literal = super::literal_key::position(shape, &b.column);
        }
    }
    a
}

/// A statement pgpilot cannot read as the server will: it may write anything, is never cached,
/// and leaves the session in a state pgpilot cannot know.
pub fn opaque(shape: &str) -> Analysis {
    let mut a = analyze("", shape);
    a.parsed = false;
    a.volatile = true;
    a.functions_stable = false;
    a.writes = WriteScope::Unknown;
    a.session = SessionEffect { changes: true, unknown: true, ..Default::default() };
    a.cache_effect = CacheEffect::Transaction;
    a.shown = "/* pgpilot: a statement not read as the server reads it (standard_conforming_strings off, a client encoding other than UTF8, or invalid UTF-8); text not shown */".into();
    a
}

/// What is shown of a statement the parser rejected.
const REJECTED: &str = "/* pgpilot: a statement the parser rejected; text not shown */";

/// Statement types whose normalized text holds no literal (libpg_query replaces every constant
/// of a DML statement with a parameter; utility statements keep theirs).
const SHOWN_TYPES: [&str; 5] = ["SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"];

fn shown_text(types: &[&str], normalized: Option<&str>) -> Arc<str> {
    match normalized {
        Some(text) if !types.is_empty() && types.iter().all(|t| SHOWN_TYPES.contains(t)) => text.into(),
        // BEGIN, COMMIT, SAVEPOINT name...: no literal, except the gid of a two-phase commit.
        Some(text) if types == ["TransactionStmt"] && !text.contains(['\'', '$']) => text.into(),
        _ if types.is_empty() => "/* pgpilot: an empty statement */".into(),
        _ => format!("/* pgpilot: {}; text not shown */", types.join(", ")).into(),
    }
}

/// A text longer than `insights.max_analyzed_bytes`, not parsed: libpg_query's time grows
/// faster than the text in some shapes (a 527 KB AND chain took 11.8 s) and cannot be
/// interrupted, so the cap is what bounds it. Such a text is what pgpilot cannot read: it may
/// write anything, is never cached, and shows as a fixed placeholder (no literal of it leaves
/// pgpilot) under a hash of its bytes. Its kind comes from its first word (DDL matters to the
/// prepared statements); a leading comment counts as DDL, the worst case.
pub fn unanalyzed(sql: &[u8]) -> Analysis {
    let text = sql.trim_ascii_start();
    let word: String =
        text.iter().take(16).take_while(|c| c.is_ascii_alphabetic()).map(|c| c.to_ascii_lowercase() as char).collect();
    let mut a = opaque("");
    a.kind = if word.is_empty() && !text.is_empty() { StatementKind::Ddl } else { kind_from_first_word(&word) };
    a.fingerprint = xxhash_rust::xxh3::xxh3_64(sql);
    a.normalized =
        format!("/* pgpilot: statement of {} bytes, over insights.max_analyzed_bytes, not analyzed */", sql.len());
    a.shown = a.normalized.as_str().into();
    a
}

/// The session effect of a text the parser rejected (the server rejects it too, so this only
/// has to be conservative): session-looking statements are re-read, never trusted.
fn from_words(words: &[&str]) -> SessionEffect {
    let first = words.first().copied().unwrap_or("");
    let mut e = SessionEffect::default();
    if matches!(first, "set" | "reset" | "discard") || words.iter().any(|w| w.contains("set_config")) {
        e.changes = true;
    }
    if matches!(first, "do" | "call") {
        e.unknown = true;
    }
    if words.iter().any(|w| w.contains("advisory_lock")) {
        e.pin = Some("session advisory lock");
    }
    e
}

/// Whether one piece of the token pass's split is several statements to the server's grammar
/// (only a piece whose shape kept a semicolon can be: one inside a string literal is not in the
/// shape; parsed again only then, once per shape).
fn joined(sql: &str, shape: &str) -> bool {
    shape.contains(';')
        && pg_query::split_with_parser(sql).is_ok_and(|s| s.iter().filter(|t| !t.trim().is_empty()).count() > 1)
}

/// The result cache's view of a statement, derived once per shape: unqualified table names and
/// what it does to the reads that follow it. Its words are read off the shape, which every text
/// of the shape shares (comments dropped, spaces folded, keywords lower-cased): the analysis is
/// kept per shape, so what a text's own spelling shows (`/* x */ SET LOCAL`, `SET\nLOCAL` in
/// the normalized text) must not decide it for the shape's other texts.
fn with_cache_facts(mut a: Analysis, shape: &str) -> Analysis {
    a.read_names = unqualified(&a.tables_read).into();
    a.written_names = unqualified(&a.tables_written).into();
    // (A vertical tab stays a token in shapes: PostgreSQL 16 reads it as a space, 15 as an
    // error. Read as a space here, so `COMMIT\vPREPARED` is COMMIT PREPARED.)
    let folded: String;
    let words = if shape.contains('\x0b') {
        folded = shape.split_whitespace().collect::<Vec<_>>().join(" ");
        folded.as_str()
    } else {
        shape.trim_start()
    };
    let sets = words.starts_with("set ") || words.starts_with("reset ") || words == "reset";
    a.cache_effect = if sets && (words.contains("isolation") || words.contains("default_transaction")) {
        CacheEffect::Session
    } else if sets
        || words.contains("set_config")
        || (a.kind == StatementKind::Transaction
            && (words.contains("serializable") || words.contains("repeatable read")))
    {
        CacheEffect::Transaction
    } else {
        CacheEffect::None
    };
    if words.starts_with("truncate ") && words.contains("cascade") {
        a.writes = WriteScope::Unknown; // it empties tables pgpilot cannot name
    }
    if a.kind == StatementKind::Transaction && words.starts_with("commit prepared") {
        a.writes = WriteScope::Unknown; // it commits whatever its transaction wrote
    }
    a.keyed = keyed_shape(&a, &a.normalized.to_ascii_lowercase());
    a
}

/// The statement's keyed shape (see `keyed`), for a parsed read or write of one table.
fn keyed_shape(a: &Analysis, lower: &str) -> Option<Arc<super::keyed::Keyed>> {
    let one = match a.kind {
        StatementKind::Read => a.read_names.len() == 1,
        StatementKind::Write => a.written_names.len() == 1 && a.writes == WriteScope::Tables,
        _ => false,
    };
    if !a.parsed || !one || !lower.contains('$') {
        return None;
    }
    let selects = lower.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').filter(|w| *w == "select").count();
    super::keyed::of(&a.normalized, selects).map(Arc::new)
}

/// Table names as the generation counters and the relation list know them: unqualified (a
/// same-named table in another schema shares invalidations, which only costs a miss).
pub fn unqualified(names: &[String]) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> =
        names.iter().map(|n| super::names::intern(n.rsplit('.').next().unwrap_or(n))).collect();
    out.sort();
    out.dedup();
    out
}

fn parsed(sql: &str) -> Option<Analysis> {
    let fp = pg_query::fingerprint(sql, 0, pg_query::FingerprintOptions::FULL_RELNAME).ok()?;
    let summary = pg_query::summary(sql, 0, -1).ok()?;
    let normal = pg_query::normalize(sql);
    let normalized_ok = normal.is_ok();
    let normalized = collapse_lists(&normal.unwrap_or_else(|_| sql.to_string()));
    let mut tables_read = Vec::new();
    let mut tables_written = Vec::new();
    for t in &summary.tables {
        match t.context {
            pg_query::protobuf::summary_result::Context::Dml => tables_written.push(t.name.clone()),
            pg_query::protobuf::summary_result::Context::Ddl => tables_written.push(t.name.clone()),
            _ => tables_read.push(t.name.clone()),
        }
    }
    tables_read.sort();
    tables_read.dedup();
    tables_written.sort();
    tables_written.dedup();
    let volatile = summary.functions.iter().any(|f| VOLATILE.contains(&f.function_name.to_ascii_lowercase().as_str()))
        || normalized.to_ascii_lowercase().contains("current_timestamp");
    let types: Vec<&str> = summary.statement_types.iter().map(String::as_str).collect();
    if types.contains(&"CopyStmt") && tables_written.is_empty() {
        // COPY names its table in a read context; COPY FROM fills it (COPY TO is counted too).
        tables_written = tables_read.clone();
    }
    let kind = kind_from_types(&types, !tables_written.is_empty());
    let functions: Vec<String> = summary.functions.iter().map(|f| f.function_name.to_ascii_lowercase()).collect();
    let writes = write_scope(kind, &types, &functions, !tables_written.is_empty());
    let shown = shown_text(&types, normalized_ok.then_some(normalized.as_str()));
    Some(Analysis {
        fingerprint: fp.value,
        shown,
        normalized,
        kind,
        tables_read,
        tables_written,
        volatile,
        locks_rows: false,
        paginated: false,
        parsed: true,
        functions_stable: all_stable(&functions),
        writes,
        read_names: Arc::from([]),
        written_names: Arc::from([]),
        cache_effect: CacheEffect::None,
        session: SessionEffect::default(),
        keyed: None,
        learned: Default::default(),
    })
}

/// Statement types that change no table data.
const HARMLESS: &[&str] = &[
    "VariableSetStmt",
    "VariableShowStmt",
    "DiscardStmt",
    "DeallocateStmt",
    "ListenStmt",
    "UnlistenStmt",
    "NotifyStmt",
    "PrepareStmt",
    "DeclareCursorStmt",
    "FetchStmt",
    "ClosePortalStmt",
    "LockStmt",
    "VacuumStmt",
    "CheckPointStmt",
    "ExplainStmt",
    "SelectStmt",
];

/// (COMMIT PREPARED, which writes what its transaction wrote, is told by its shape:
/// `with_cache_facts`.)
fn write_scope(kind: StatementKind, types: &[&str], functions: &[String], tables: bool) -> WriteScope {
    if !none_write(functions) {
        return WriteScope::Unknown;
    }
    match kind {
        StatementKind::Transaction | StatementKind::Read => WriteScope::Nothing,
        StatementKind::Write | StatementKind::Ddl if tables => WriteScope::Tables,
        StatementKind::Utility if types.iter().all(|t| HARMLESS.contains(t)) => WriteScope::Nothing,
        _ => WriteScope::Unknown,
    }
}

/// Statements that change the catalog under a node name that does not say so: CREATE INDEX (an
/// expression index runs its function on every write), CREATE VIEW, CREATE OPERATOR / TYPE /
/// AGGREGATE (DefineStmt), a rule, a role's membership... DDL is what makes session isolation
/// read its table list again and prepared statements be described again.
const CATALOG_NODES: &[&str] = &[
    "RenameStmt",
    "GrantStmt",
    "GrantRoleStmt",
    "IndexStmt",
    "ViewStmt",
    "DefineStmt",
    "CompositeTypeStmt",
    "RuleStmt",
    "CommentStmt",
    "SecLabelStmt",
    "ImportForeignSchemaStmt",
    "ReassignOwnedStmt",
];

fn changes_catalog(node: &str) -> bool {
    node.starts_with("Create") || node.starts_with("Alter") || node.starts_with("Drop") || CATALOG_NODES.contains(&node)
}

fn kind_from_types(types: &[&str], writes: bool) -> StatementKind {
    let any = |names: &[&str]| types.iter().any(|t| names.contains(t));
    if any(&["TransactionStmt"]) {
        StatementKind::Transaction
    } else if writes || any(&["InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "TruncateStmt", "CopyStmt"]) {
        // (A rule or an index is DDL whose summary names its table as written.)
        if types.iter().any(|t| changes_catalog(t)) {
            StatementKind::Ddl
        } else {
            StatementKind::Write
        }
    } else if types.iter().any(|t| changes_catalog(t)) {
        StatementKind::Ddl
    } else if any(&["SelectStmt"]) {
        StatementKind::Read
    } else {
        StatementKind::Utility
    }
}

fn kind_from_first_word(w: &str) -> StatementKind {
    match w {
        "select" | "with" | "values" | "table" => StatementKind::Read,
        "insert" | "update" | "delete" | "merge" | "truncate" | "copy" => StatementKind::Write,
        "create" | "alter" | "drop" | "grant" | "revoke" | "comment" | "security" | "import" | "reassign" => {
            StatementKind::Ddl
        }
        "begin" | "start" | "commit" | "end" | "rollback" | "savepoint" | "release" | "abort" => {
            StatementKind::Transaction
        }
        _ => StatementKind::Utility,
    }
}

/// `IN ($1, $2, $3)` -> `IN ($1, ...)` and `ARRAY[$1, $2]` -> `ARRAY[$1, ...]`: lists of any
/// length read as one query, as their fingerprints already are.
pub fn collapse_lists(normalized: &str) -> String {
    let mut out = String::with_capacity(normalized.len());
    let b = normalized.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let before = out.trim_end().to_ascii_lowercase();
        let after_in = c == b'(' && (before.ends_with(" in") || before == "in");
        let after_array = c == b'[' && before.ends_with("array");
        if after_in || after_array {
            let close = if c == b'(' { b')' } else { b']' };
            if let Some(end) = param_list_end(b, i + 1, close) {
                let first_end = normalized[i + 1..].find(',').map_or(end, |p| i + 1 + p);
                if first_end < end {
                    out.push(c as char);
                    out.push_str(normalized[i + 1..first_end].trim());
                    out.push_str(", ...");
                    out.push(close as char);
                    i = end + 1;
                    continue;
                }
            }
        }
        out.push(c as char);
        i += 1;
    }
    out
}

/// Index of `close` if b[from..] is `$n, $m, ...` up to it (at least one comma), else None.
fn param_list_end(b: &[u8], from: usize, close: u8) -> Option<usize> {
    let mut i = from;
    let mut params = 0;
    loop {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'$' {
            return None;
        }
        i += 1;
        let digits = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits {
            return None;
        }
        params += 1;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(&c) if c == close && params > 1 => return Some(i),
            _ => return None,
        }
    }
}

#[cfg(test)]
#[path = "parse_spelling_tests.rs"]
mod spelling_tests;

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
