//! What a statement does to the state of the server session it runs in, read off PostgreSQL's
//! own parse tree (libpg_query), never off a hand-written scan: transaction pooling is only safe
//! when every change that outlives a transaction is either re-read and replayed, pinned to its
//! server, or known to be unknown. In doubt this says "unknown".

use pg_query::protobuf::{a_const, node, DiscardMode, VariableSetKind};
use pg_query::NodeRef;

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
    /// RESET ALL / DISCARD ALL: afterwards every setting is back to what pgpilot can read.
    pub restores: bool,
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
    for (node, _, _, _) in parsed.protobuf.nodes() {
        match node {
            NodeRef::VariableSetStmt(s) => variable_set(&mut e, s),
            NodeRef::DiscardStmt(s) => {
                e.changes = true;
                if s.target == DiscardMode::DiscardAll as i32 {
                    e.restores = true;
                    e.drops_statements = true;
                }
            }
            NodeRef::DeallocateStmt(s) if s.isall => e.drops_statements = true,
            NodeRef::DoStmt(_) | NodeRef::CallStmt(_) => e.unknown = true,
            NodeRef::ListenStmt(_) => e.pin = Some("LISTEN"),
            NodeRef::PrepareStmt(_) => e.pin = Some("SQL PREPARE"),
            NodeRef::LoadStmt(_) => e.pin = Some("LOAD"),
            // CURSOR_OPT_HOLD (parsenodes.h)
            NodeRef::DeclareCursorStmt(s) if s.options & 0x0020 != 0 => e.pin = Some("cursor WITH HOLD"),
            NodeRef::RangeVar(r) if r.relpersistence == "t" => e.pin = Some("temporary table"),
            NodeRef::SelectStmt(s) if s.into_clause.as_ref().is_some_and(|i| temp_into(i)) => {
                e.pin = Some("temporary table")
            }
            NodeRef::CreateTableAsStmt(s) if s.into.as_ref().is_some_and(|i| temp_into(i)) => {
                e.pin = Some("temporary table")
            }
            NodeRef::FuncCall(f) => function_call(&mut e, &name_parts(&f.funcname), known),
            _ => {}
        }
    }
    Some(e)
}

fn temp_into(into: &pg_query::protobuf::IntoClause) -> bool {
    into.rel.as_ref().is_some_and(|r| r.relpersistence == "t")
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

fn function_call(e: &mut SessionEffect, parts: &[String], known: KnownBuiltin) {
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
    } else if name.starts_with("pg_advisory_lock") || name.starts_with("pg_try_advisory_lock") {
        e.pin = Some("session advisory lock");
    } else if !known(name) {
        e.unknown = true;
    }
}

fn name_parts(nodes: &[pg_query::protobuf::Node]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| match &n.node {
            Some(node::Node::String(s)) => s.sval.clone(),
            _ => String::new(),
        })
        .collect()
}

/// The setting names one text's set_config calls name, lower-cased; `None` when any name is not
/// a plain string literal (a parameter or an expression: pgpilot cannot know what it sets).
pub fn set_config_names(sql: &str) -> Option<Vec<String>> {
    let parsed = pg_query::parse(sql, 0).ok()?;
    let mut names = Vec::new();
    for (node, _, _, _) in parsed.protobuf.nodes() {
        let NodeRef::FuncCall(f) = node else { continue };
        if name_parts(&f.funcname).last().map(String::as_str) != Some("set_config") {
            continue;
        }
        let first = f.args.first().and_then(|a| a.node.as_ref());
        let Some(node::Node::AConst(c)) = first else { return None };
        let Some(a_const::Val::Sval(s)) = &c.val else { return None };
        names.push(s.sval.to_ascii_lowercase());
    }
    Some(names)
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
