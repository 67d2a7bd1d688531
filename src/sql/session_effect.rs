//! What a statement does to the state of the server session it runs in, read off PostgreSQL's
//! own parse tree (libpg_query), never off a hand-written scan: transaction pooling is only safe
//! when every change that outlives a transaction is either re-read and replayed, pinned to its
//! server, or known to be unknown. In doubt this says "unknown".

use pg_query::protobuf::{node, DiscardMode, VariableSetKind};

/// The session-level effects of one statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionEffect {
    /// May change a setting, the role or the session authorization: re-read the state after it.
    pub changes: bool,
    /// Custom (dotted) settings it sets or resets by name, lower-cased: read back by name,
    /// since PostgreSQL lists placeholder settings nowhere (not in pg_settings).
    pub names: Vec<String>,
    /// Calls set_config(): its names are literals, so they are read per text, not per shape.
    pub set_config: bool,
    /// May change state pgpilot cannot read back (a DO block, CALL, a function it does not know,
    /// set_config with a computed name): the client is pinned and its reads are not cached.
    pub unknown: bool,
    /// RESET ALL / DISCARD ALL: afterwards every setting is back to its startup value.
    pub restores: bool,
    /// DISCARD ALL: afterwards nothing is left that pgpilot could not see (settings, role, temp
    /// tables, advisory locks, LISTEN, cursors, prepared statements).
    pub discards: bool,
    /// Settings reset by name (RESET x, SET x TO DEFAULT), lower-cased: on a direct connection
    /// they return to the client's startup values, which a pooled server does not have.
    pub resets: Vec<String>,
    /// Its effect outlives the transaction on this one server connection.
    pub pin: Option<&'static str>,
    /// DISCARD ALL / DEALLOCATE ALL: the server drops every prepared statement.
    pub drops_statements: bool,
}

/// Built-in functions known to change nothing of the session except through set_config (handled
/// by name) and advisory locks (pinned): the caller's list of built-ins that change no table.
pub type KnownBuiltin = fn(&str) -> bool;

/// The effect of one parsed statement. `None` when the parser rejects the text (the caller falls
/// back to a conservative token scan; the server will reject it too).
pub fn of_statement(sql: &str, known: KnownBuiltin) -> Option<SessionEffect> {
    let parsed = pg_query::parse(sql, 0).ok()?;
    let mut e = SessionEffect::default();
    for raw in &parsed.protobuf.stmts {
        if let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) {
            statement(&mut e, node);
        }
    }
    // Calls and temporary relations can sit anywhere in the tree (VALUES, RETURNING, ON CONFLICT,
    // window clauses, cursor queries...): walk every node of it, not a list of known places.
    let tree = serde_json::to_value(&parsed.protobuf).ok()?;
    walk(&tree, &mut |obj| {
        if obj.contains_key("funcformat") {
            function_call(&mut e, &json_name_parts(obj.get("funcname")), known);
        }
        let temp = obj.get("relpersistence").and_then(|v| v.as_str()) == Some("t")
            || obj.get("schemaname").and_then(|v| v.as_str()) == Some("pg_temp");
        if temp {
            e.pin = Some("temporary table");
        }
    });
    Some(e)
}

/// The top-level statement's own effect.
fn statement(e: &mut SessionEffect, node: &node::Node) {
    match node {
        node::Node::VariableSetStmt(s) => variable_set(e, s),
        node::Node::DiscardStmt(s) => {
            e.changes = true;
            if s.target == DiscardMode::DiscardAll as i32 {
                e.restores = true;
                e.discards = true;
                e.drops_statements = true;
            }
        }
        node::Node::DeallocateStmt(s) if s.isall => e.drops_statements = true,
        node::Node::DoStmt(_) | node::Node::CallStmt(_) => e.unknown = true,
        // pg_settings' update rule calls set_config: a setting changed by a write.
        node::Node::UpdateStmt(s) if s.relation.as_ref().is_some_and(|r| r.relname == "pg_settings") => {
            e.changes = true
        }
        node::Node::ListenStmt(_) => e.pin = Some("LISTEN"),
        node::Node::PrepareStmt(_) => e.pin = Some("SQL PREPARE"),
        node::Node::LoadStmt(_) => e.pin = Some("LOAD"),
        // CURSOR_OPT_HOLD (parsenodes.h)
        node::Node::DeclareCursorStmt(s) if s.options & 0x0020 != 0 => e.pin = Some("cursor WITH HOLD"),
        node::Node::ExplainStmt(s) => {
            if let Some(inner) = s.query.as_ref().and_then(|n| n.node.as_ref()) {
                statement(e, inner);
            }
        }
        _ => {}
    }
}

/// Calls `f` on every JSON object in `v`, depth first.
fn walk(v: &serde_json::Value, f: &mut impl FnMut(&serde_json::Map<String, serde_json::Value>)) {
    match v {
        serde_json::Value::Object(map) => {
            f(map);
            for child in map.values() {
                walk(child, f);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|c| walk(c, f)),
        _ => {}
    }
}

/// A FuncCall's `funcname` (a list of String nodes) as its parts.
fn json_name_parts(v: Option<&serde_json::Value>) -> Vec<String> {
    let items = v.and_then(|v| v.as_array()).map(Vec::as_slice).unwrap_or(&[]);
    items.iter().map(|n| n.pointer("/node/String/sval").and_then(|s| s.as_str()).unwrap_or("").to_string()).collect()
}

fn variable_set(e: &mut SessionEffect, s: &pg_query::protobuf::VariableSetStmt) {
    let kind = s.kind;
    if kind == VariableSetKind::VarResetAll as i32 {
        e.changes = true;
        e.restores = true;
        return;
    }
    // SET LOCAL and SET TRANSACTION / SET CONSTRAINTS end with the transaction.
    if s.is_local || (kind == VariableSetKind::VarSetMulti as i32 && s.name != "SESSION CHARACTERISTICS") {
        return;
    }
    e.changes = true;
    let name = s.name.to_ascii_lowercase();
    if kind == VariableSetKind::VarReset as i32 || kind == VariableSetKind::VarSetDefault as i32 {
        e.resets.push(name.clone());
    }
    if name.contains('.') && !e.names.contains(&name) {
        e.names.push(name);
    }
}

/// Built-in functions that run a statement given as text (`query_to_xml('SELECT set_config(...)',
/// ...)`, `ts_stat`, `ts_rewrite`) or read relations by name (`table_to_xml('a_view', ...)`, the
/// schema, database and cursor forms; a view's code runs unseen): what they do to the session
/// is whatever that text or relation does. Every `*_to_xml*` built-in is one of them (and
/// `HIDDEN_CODE`).
fn runs_hidden_sql(name: &str) -> bool {
    name.contains("_to_xml") || HIDDEN_CODE.contains(&name)
}

/// Built-ins that run SQL text, or an index's expressions (which may call user code): BRIN
/// summarizing and GIN's pending-list cleanup; `setseed` sets the session's random seed.
pub const HIDDEN_CODE: [&str; 6] =
    ["ts_stat", "ts_rewrite", "brin_summarize_new_values", "brin_summarize_range", "gin_clean_pending_list", "setseed"];

/// What a call of the function named `parts` (its schema, if written, and name) does to the
/// session; also asked of the calls in a trigger function's body (`function_body`).
pub fn function_call(e: &mut SessionEffect, parts: &[String], known: KnownBuiltin) {
    let (schema, name) = match parts {
        [name] => (None, name.as_str()),
        [schema, name] => (Some(schema.as_str()), name.as_str()),
        _ => {
            e.unknown = true;
            return;
        }
    };
    // A function pgpilot knows lives in pg_catalog; any other schema may hold a namesake.
    if schema.is_some_and(|s| s != "pg_catalog") {
        e.unknown = true;
        return;
    }
    if name == "set_config" {
        e.changes = true;
        e.set_config = true;
    } else if runs_hidden_sql(name) {
        e.unknown = true; // its argument is a statement pgpilot never sees parsed: anything may run
    } else if name.starts_with("pg_advisory_lock") || name.starts_with("pg_try_advisory_lock") {
        e.pin = Some("session advisory lock");
    } else if !known(name) {
        e.unknown = true;
    }
}

/// The setting names one text's set_config calls name, lower-cased; `None` when any name is not
/// a plain string literal (a parameter or an expression: pgpilot cannot know what it sets).
pub fn set_config_names(sql: &str) -> Option<Vec<String>> {
    let parsed = pg_query::parse(sql, 0).ok()?;
    let tree = serde_json::to_value(&parsed.protobuf).ok()?;
    let mut names = Some(Vec::new());
    walk(&tree, &mut |obj| {
        if !obj.contains_key("funcformat") {
            return;
        }
        if json_name_parts(obj.get("funcname")).last().map(String::as_str) != Some("set_config") {
            return;
        }
        let first = obj.get("args").and_then(|a| a.get(0));
        match first.and_then(|a| a.pointer("/node/AConst/val/Sval/sval")).and_then(|s| s.as_str()) {
            Some(name) => {
                if let Some(n) = names.as_mut() {
                    n.push(name.to_ascii_lowercase());
                }
            }
            None => names = None,
        }
    });
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(f: &str) -> bool {
        matches!(f, "count" | "lower" | "now" | "current_setting")
    }

    fn of(sql: &str) -> SessionEffect {
        of_statement(sql, known).expect("parses")
    }

    #[test]
    fn settings_by_name_in_any_spelling() {
        assert_eq!(of("SET App.Tenant = 't1'").names, ["app.tenant"]);
        assert_eq!(of("set \"app\".\"tenant\" to 'x'").names, ["app.tenant"]);
        assert!(of("SET search_path TO a").changes);
        assert!(of("RESET app.tenant").changes);
        assert!(!of("SET LOCAL app.tenant = 'x'").changes);
        assert!(!of("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").changes);
        assert!(of("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").changes);
        assert!(of("SET ROLE r_low").changes && of("RESET ROLE").changes);
        assert!(of("SET SESSION AUTHORIZATION DEFAULT").changes);
        assert!(!of("UPDATE t SET a = 1").changes);
        assert!(of("UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'").changes);
        assert!(of("update PG_CATALOG.Pg_Settings set setting = 'x' where name = 'work_mem'").changes);
        assert!(!of("SELECT 'set x = 1'").changes);
    }

    #[test]
    fn set_config_in_any_spelling() {
        for sql in [
            "SELECT Set_Config('search_path', 'evil', false)",
            "SELECT \"set_config\"('search_path', 'evil', false)",
            "SELECT pg_catalog.set_config('search_path', 'evil', false)",
            "SELECT count(*) FROM t WHERE SET_CONFIG('a.b', 'c', false) IS NOT NULL",
        ] {
            let e = of(sql);
            assert!(e.changes && e.set_config && !e.unknown, "{sql}");
        }
        assert_eq!(set_config_names("SELECT set_config('App.X', 'v', false)"), Some(vec!["app.x".into()]));
        assert_eq!(set_config_names("SELECT set_config($1, 'v', false)"), None);
        assert_eq!(set_config_names("SELECT set_config('a' || 'b', 'v', false)"), None);
        assert!(of("SELECT evil.set_config('a.b', 'c', false)").unknown);
    }

    #[test]
    fn what_cannot_be_read_back_is_unknown() {
        assert!(of("DO $$BEGIN PERFORM set_config('app.t', 'x', false); END$$").unknown);
        assert!(of("SELECT my_func(1)").unknown);
        assert!(of("CALL proc()").unknown);
        assert!(of("SELECT \"Set_Config\"('a.b', 'c', false)").unknown);
        assert!(!of("SELECT count(*), lower(x) FROM t").unknown);
        for sql in [
            "SELECT query_to_xml('SELECT pg_catalog.set_config(''search_path'',''evil'',false)', false, false, '')",
            "SELECT pg_catalog.query_to_xmlschema('SELECT 1', true, false, '')",
            "SELECT Query_To_Xml_And_XmlSchema('SELECT 1', true, false, '')",
            "SELECT * FROM ts_stat('SELECT set_config(''a.b'', ''c'', false)::tsvector')",
            "SELECT ts_rewrite('a'::tsquery, 'SELECT set_config(''a.b'', ''c'', false)::tsquery, ''a''::tsquery')",
            "SELECT brin_summarize_new_values('an_index')",
            "SELECT setseed(0.5)",
        ] {
            // (With the real list of built-ins, which names these.)
            let e = of_statement(sql, crate::sql::builtins::is_builtin).expect("parses");
            assert!(e.unknown, "{sql}");
        }
    }

    #[test]
    fn calls_anywhere_in_the_tree_count() {
        for sql in [
            "VALUES (my_fn())",
            "INSERT INTO t VALUES (1) RETURNING my_fn()",
            "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = my_fn()",
            "SELECT ARRAY[my_fn()]",
            "SELECT count(*) FILTER (WHERE my_fn()) FROM t",
            "SELECT x FROM t LIMIT my_fn()",
            "DECLARE c CURSOR FOR SELECT my_fn()",
            "EXPLAIN ANALYZE SELECT my_fn()",
        ] {
            assert!(of(sql).unknown, "{sql}");
        }
        assert!(of("VALUES (set_config('search_path', 'evil', false))").set_config);
        assert_eq!(of("VALUES (pg_advisory_lock(1))").pin, Some("session advisory lock"));
        assert_eq!(set_config_names("VALUES (set_config('A.B', 'x', false))"), Some(vec!["a.b".into()]));
        assert_eq!(of("CREATE TEMP SEQUENCE s").pin, Some("temporary table"));
        assert_eq!(of("CREATE TABLE pg_temp.x (a int)").pin, Some("temporary table"));
        assert_eq!(of("CREATE TEMP VIEW v AS SELECT 1").pin, Some("temporary table"));
    }

    #[test]
    fn pins_and_restores() {
        assert_eq!(of("SELECT Pg_Advisory_Lock(4711)").pin, Some("session advisory lock"));
        assert_eq!(of("select \"pg_try_advisory_lock\"(1)").pin, Some("session advisory lock"));
        assert_eq!(of("select pg_advisory_xact_lock(1)").pin, None);
        assert_eq!(of("LISTEN chan").pin, Some("LISTEN"));
        assert_eq!(of("CREATE TEMP TABLE x (a int)").pin, Some("temporary table"));
        assert_eq!(of("DECLARE c CURSOR WITH HOLD FOR SELECT 1").pin, Some("cursor WITH HOLD"));
        assert_eq!(of("DECLARE c CURSOR FOR SELECT 1").pin, None);
        assert!(of("RESET ALL").restores && of("DISCARD ALL").restores);
        assert!(of("DISCARD ALL").drops_statements && of("DEALLOCATE ALL").drops_statements);
        assert!(!of("DISCARD PLANS").drops_statements);
    }
}
