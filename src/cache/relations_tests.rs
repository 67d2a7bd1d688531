//! The relation list's facts as loads report them (rows of `QUERY`, no server).

use super::*;

/// One row of `QUERY`: name, kind, target.
fn row(name: &str, kind: &str, target: &str) -> (String, String, String) {
    (name.to_string(), kind.to_string(), target.to_string())
}

#[test]
fn only_known_ordinary_tables_pass() {
    let r = Relations::default();
    let t = |names: &[&str]| names.iter().map(|n| Arc::<str>::from(*n)).collect::<Vec<_>>();
    assert_eq!(r.check("db", &t(&["a"]), 10, 1000), (false, true), "unknown database: load it");
    assert!(r.begin_load("db"));
    assert!(!r.begin_load("db"), "one loader at a time");
    let rows = vec![row("a", "r", ""), row("v", "v", ""), row("s", "r", ""), row("s", "m", "")];
    r.finish_load("db", Some(rows), 10);
    assert_eq!(r.check("db", &t(&["a"]), 20, 1000), (true, false));
    assert!(!r.check("db", &t(&["a", "v"]), 20, 1000).0, "a view");
    assert!(!r.check("db", &t(&["s"]), 20, 1000).0, "a table and a matview share the name");
    assert!(!r.check("db", &t(&["nope"]), 20, 1000).0);
    assert!(r.check("db", &t(&["a"]), 2000, 1000).1, "refresh due");
    r.mark_stale("db");
    assert_eq!(r.check("db", &t(&["a"]), 20, 1000), (false, true));
}

#[test]
fn shapes_changed_between_loads_are_reported() {
    let r = Relations::default();
    let load = |t: &str, roles: &str| vec![row("a", "shape", "1"), row("b", "shape", t), row("", "roles", roles)];
    assert_eq!(r.finish_load("db", Some(load("2", "r")), 10), Changed::Tables(vec![]), "a first load");
    assert_eq!(r.finish_load("db", Some(load("2", "r")), 20), Changed::Tables(vec![]));
    assert_eq!(r.finish_load("db", Some(load("3", "r")), 30), Changed::Tables(vec![Arc::from("b")]));
    assert_eq!(
        r.finish_load("db", Some(vec![row("b", "shape", "3"), row("", "roles", "r")]), 40),
        Changed::Tables(vec![Arc::from("a")]),
        "gone"
    );
    assert_eq!(r.finish_load("db", Some(load("3", "r2")), 50), Changed::Database, "role memberships");
    assert_eq!(r.finish_load("db", None, 60), Changed::Tables(vec![]), "a failed load changes nothing");
}

#[test]
fn keys_only_where_a_write_cannot_change_another_row() {
    use scopes::{Family, WriteKind};
    let r = Relations::default();
    let rows = vec![
        row("items", "r", ""),
        row("items", "pkey:2950", "id"),
        row("items", "cascade", "items"), // ON DELETE SET NULL on its own parent_id
        row("files", "pkey:23", "id"),
        row("files", "cascade", "chunks"),
        row("audited", "pkey:20", "id"),
        row("audited", "trigger", ""),
        row("parts", "pkey:20", "id"),
        row("parts", "inherit", "parts_1"),
        row("odd", "pkey:700", "id"), // float4: not comparable as bytes
    ];
    r.finish_load("db", Some(rows), 10);
    assert_eq!(r.key_column("db", "items"), Some((Arc::from("id"), Family::Uuid)));
    assert!(r.keyed_write_ok("db", "items", WriteKind::Update), "no ON UPDATE action");
    assert!(!r.keyed_write_ok("db", "items", WriteKind::Delete), "a delete cascades to other items");
    assert!(r.keyed_write_ok("db", "files", WriteKind::Delete), "cascades leave the table (handled table-level)");
    assert_eq!(r.key_column("db", "audited"), None, "a trigger may change anything");
    assert_eq!(r.key_column("db", "parts"), None, "inheritance");
    assert_eq!(r.key_column("db", "odd"), None);
    assert!(!r.keyed_write_ok("db", "nope", WriteKind::Insert));
    r.mark_stale("db");
    assert_eq!(r.key_column("db", "items"), None, "DDL seen: keys forgotten until the reload");
}

#[test]
fn loops_through_other_tables_partitions_and_update_actions_found_at_each_load() {
    use scopes::WriteKind::{Delete, Insert, Update};
    let r = Relations::default();
    let mut rows = vec![
        row("a", "pkey:20", "id"),
        row("a", "cascade", "b"),
        row("b", "cascade", "a"), // a -> b -> a: a DELETE of a's keys deletes other a rows
        row("u", "pkey:20", "id"),
        row("u", "cascade", "v"), // ON UPDATE CASCADE both ways (listed as both kinds)
        row("u", "ucascade", "v"),
        row("v", "cascade", "u"),
        row("v", "ucascade", "u"),
        row("k", "pkey:20", "id"),
        row("k", "cascade", "p"),
        row("p", "inherit", "p1"),
        row("p1", "inherit", "p"),
        row("p1", "cascade", "k"), // k -> p -> (partition) p1 -> k
    ];
    r.finish_load("db", Some(rows.clone()), 10);
    assert!(!r.keyed_write_ok("db", "a", Delete), "a loop through another table");
    assert!(r.keyed_write_ok("db", "a", Update), "no ON UPDATE action on the way");
    assert!(r.keyed_write_ok("db", "a", Insert));
    assert!(!r.keyed_write_ok("db", "u", Update), "a loop of ON UPDATE actions");
    assert!(!r.keyed_write_ok("db", "k", Delete), "a loop through a partition");
    rows.retain(|(name, kind, _)| !(name == "b" && kind == "cascade"));
    r.finish_load("db", Some(rows), 20);
    assert!(r.keyed_write_ok("db", "a", Delete), "the loop is gone after the reload");
}

#[test]
fn a_name_holding_the_scope_separator_is_never_cached_and_its_writes_reach_everything() {
    let r = Relations::default();
    let t = |names: &[&str]| names.iter().map(|n| Arc::<str>::from(*n)).collect::<Vec<_>>();
    let odd = "x\x1fk5";
    let rows = vec![row("x", "r", ""), row(odd, "r", ""), row("files", "r", ""), row("files", "cascade", odd)];
    r.finish_load("db", Some(rows), 10);
    assert!(r.check("db", &t(&["x"]), 20, 1000).0);
    assert!(!r.check("db", &t(&[odd]), 20, 1000).0, "its scopes could be x's");
    assert_eq!(r.reach("db", std::iter::empty(), t(&["files"])), None, "a write reaching it");
}

#[test]
fn writes_reach_through_cascades_and_triggers() {
    let r = Relations::default();
    let t = |names: &[&str]| names.iter().map(|n| Arc::<str>::from(*n)).collect::<Vec<_>>();
    let rows =
        vec![row("files", "cascade", "chunks"), row("chunks", "cascade", "notes"), row("audited", "trigger", "")];
    r.finish_load("db", Some(rows), 10);
    let none = || std::iter::empty();
    assert_eq!(r.reach("db", none(), t(&["files"])), Some(t(&["files", "chunks", "notes"])));
    assert_eq!(r.reach("db", none(), t(&["notes"])), Some(t(&["notes"])));
    assert_eq!(r.reach("db", none(), t(&["audited"])), None);
    use scopes::WriteKind::{Delete, Insert, Update};
    assert_eq!(r.reach("db", [("files", Delete)], t(&[])), Some(t(&["chunks", "notes"])), "beyond a key");
    assert_eq!(r.reach("db", [("files", Update), ("files", Insert)], t(&[])), Some(t(&[])), "no ON UPDATE action");
    assert_eq!(r.reach("db", [("files", Delete), ("chunks", Update)], t(&[])), Some(t(&["chunks", "notes"])));
    assert_eq!(r.reach("db", [("audited", Update)], t(&[])), None);
    r.finish_load("db", Some(vec![row("v", "v", ""), row("read committed", "isolation", "")]), 20);
    assert_eq!(r.reach("db", none(), t(&["v"])), None, "a write through a view");
    assert!(!r.snapshot_default("db"));
}

#[test]
fn code_is_found_through_views_cascades_and_partitions_on_reads_or_writes() {
    let r = Relations::default();
    let rows = vec![
        row("plain", "r", ""),
        row("parent", "r", ""),
        row("child", "r", ""),
        row("parent", "cascade", "child"),
        row("child", "trigger", ""),
        row("base", "r", ""),
        row("v1", "v", ""),
        row("v1", "reads", "base"),
        row("v1", "code", ""),
        row("v2", "v", ""),
        row("v2", "reads", "v1"),
        row("v3", "v", ""),
        row("v3", "reads", "plain"),
        row("v4", "v", ""),
        row("v4", "reads", "child"),
        row("secured", "r", ""),
        row("secured", "code", ""),
        row("v5", "v", ""),
        row("v5", "reads", "secured"),
        row("guarded", "r", ""),
        row("guarded", "policy_reads", "v1"),
        row("audited", "r", ""),
        row("audited", "policy_reads", "child"),
        row("part", "p", ""),
        row("part", "inherit", "leaf"),
        row("leaf", "r", ""),
        row("leaf", "code_write", ""),
    ];
    let none: [Arc<str>; 0] = [];
    assert_eq!(r.runs_attached_code("db", &[Arc::from("v1")], &none), None, "not loaded");
    r.finish_load("db", Some(rows), 1);
    let read = |t: &str| r.runs_attached_code("db", &[Arc::from(t)], &none).unwrap();
    let write = |t: &str| r.runs_attached_code("db", &none, &[Arc::from(t)]).unwrap();
    for t in ["v1", "v2", "secured", "v5", "guarded"] {
        assert!(read(t), "a read of {t} runs code");
    }
    for t in ["plain", "base", "v3", "parent", "child", "v4", "part", "leaf", "unlisted", "audited"] {
        assert!(!read(t), "a read of {t} runs none");
    }
    for t in ["parent", "child", "v4", "secured", "v5", "part", "leaf", "v1", "v2", "guarded"] {
        assert!(write(t), "a write to {t} runs code");
    }
    for t in ["plain", "base", "v3", "unlisted", "audited"] {
        assert!(!write(t), "a write to {t} runs none (a policy reading a table with a trigger: {t})");
    }
    assert_eq!(r.code_free("db", 1, 60_000), (false, false));
    r.mark_stale("db");
    assert_eq!(r.runs_attached_code("db", &none, &[Arc::from("plain")]), None, "stale after DDL");
    r.finish_load("plain_db", Some(vec![row("plain", "r", ""), row("v3", "reads", "plain")]), 1);
    assert_eq!(r.code_free("plain_db", 1, 60_000), (true, false));
    assert_eq!(r.code_free("plain_db", 60_001, 60_000), (true, true), "a reload is due");
    r.mark_stale("plain_db");
    assert!(!r.code_free("plain_db", 2, 60_000).0, "stale after DDL: asked per statement");
}

#[test]
fn an_operator_or_cast_that_runs_code_makes_every_statement_count() {
    let r = Relations::default();
    let none: [Arc<str>; 0] = [];
    r.finish_load("db", Some(vec![row("plain", "r", ""), row("", "expr_code", "")]), 1);
    assert_eq!(r.runs_attached_code("db", &none, &none), Some(true), "a statement naming no relation");
    assert_eq!(r.runs_attached_code("db", &[Arc::from("plain")], &none), Some(true));
    assert_eq!(r.code_free("db", 1, 60_000), (false, false));
    r.finish_load("db", Some(vec![row("plain", "r", "")]), 2);
    assert_eq!(r.runs_attached_code("db", &[Arc::from("plain")], &none), Some(false), "the operator dropped");
    assert_eq!(r.code_free("db", 2, 60_000), (true, false));
}

#[test]
fn a_trigger_body_is_read_and_a_function_it_may_call_counts() {
    let r = Relations::default();
    let none: [Arc<str>; 0] = [];
    let stamp = "BEGIN NEW.at := now(); RETURN NEW; END";
    let rows = vec![
        row("stamped", "r", ""),
        row("stamped", "trigger_body", stamp),
        row("leaky", "r", ""),
        row("leaky", "trigger_body", stamp),
        row("leaky", "trigger_body", "BEGIN PERFORM set_config('a.b', 'c', false); RETURN NEW; END"),
        row("my_helper", "user_function", ""),
        row("my_helper", "function_name", ""),
    ];
    r.finish_load("db", Some(rows.clone()), 1);
    let write = |t: &str| r.runs_attached_code("db", &none, &[Arc::from(t)]).unwrap();
    assert!(!write("stamped"), "a timestamp trigger");
    assert!(write("leaky"), "one of its triggers sets a setting");
    assert!(!r.write_view("db", "stamped").alone, "a write to a table with a trigger may reach anything");
    assert_eq!(r.code_free("db", 1, 60_000), (false, false));
    // A function named as a word of the body: a namesake of `now`, or `NEW.at` calling `at(row)`.
    for name in ["now", "at"] {
        let mut more = rows.clone();
        more.push(row(name, "function_name", ""));
        r.finish_load("db", Some(more), 2);
        assert!(write("stamped"), "a function named {name}");
        assert_eq!(r.runs_attached_code("db", &none, &none), Some(false), "only that table's writes");
    }
}

#[test]
fn a_name_holding_the_scope_separator_keeps_its_code_and_cascades() {
    let r = Relations::default();
    let odd = format!("a{}b", scopes::SEP);
    let rows = vec![
        row(&odd, "r", ""),
        row(&odd, "cascade", "q"),
        row("q", "r", ""),
        row("q", "trigger", ""),
        row("p", "r", ""),
        row("p", "cascade", &odd),
    ];
    r.finish_load("db", Some(rows), 1);
    let none: [Arc<str>; 0] = [];
    assert_eq!(r.runs_attached_code("db", &none, &[Arc::from("p")]), Some(true));
    assert_eq!(r.runs_attached_code("db", &none, &[Arc::from(odd.as_str())]), Some(true));
}

#[test]
fn a_load_that_read_the_catalog_before_ddl_leaves_the_list_stale() {
    let r = Relations::default();
    assert!(r.begin_load("db"));
    r.finish_load("db", Some(vec![row("t", "r", "")]), 1);
    let none: [Arc<str>; 0] = [];
    assert_eq!(r.runs_attached_code("db", &none, &[Arc::from("t")]), Some(false));
    assert!(r.begin_load("db"));
    r.mark_stale("db"); // DDL while that load reads the catalog
    r.finish_load("db", Some(vec![row("t", "r", "")]), 2);
    assert_eq!(r.runs_attached_code("db", &none, &[Arc::from("t")]), None, "still stale");
    assert!(r.begin_load("db"));
    r.finish_load("db", Some(vec![row("t", "r", ""), row("t", "trigger", "")]), 3);
    assert_eq!(r.runs_attached_code("db", &none, &[Arc::from("t")]), Some(true));
    // A failed load: the next waits a while (each statement once started another).
    assert!(r.begin_load("db"));
    r.mark_stale("db");
    r.finish_load("db", None, 10);
    assert!(!r.code_free("db", 11, 60_000).1, "resting after a failure");
    assert!(r.code_free("db", 10 + 5_000, 60_000).1, "due again");
}

#[test]
fn the_catalog_query_names_every_built_in_a_clients_statement_counts_as_hidden_code() {
    // The two lists (Rust for a client's own text, SQL for stored expressions) must not drift.
    for name in crate::sql::session_effect::HIDDEN_CODE {
        assert!(super::QUERY.contains(&format!("'{name}'")), "{name} missing from session_builtin");
    }
}
