//! The analysis's kinds, write scopes, volatility and locks, statement by statement.
use super::*;
use crate::sql::tokens::shapes;

fn a(sql: &str) -> Analysis {
    analyze(sql, &shapes(sql)[0].text)
}

#[test]
fn literals_whitespace_comments_and_list_lengths_share_a_fingerprint() {
    let base = a("SELECT * FROM users WHERE id IN (1, 2, 3) AND name = 'x'");
    for other in [
        "select *\n from users where id in (4,5) and name='yy' -- c",
        "/* hi */ SELECT * FROM users WHERE id IN (7, 8, 9, 10, 11) AND name = 'z'",
    ] {
        assert_eq!(a(other).fingerprint, base.fingerprint, "{other}");
    }
    assert_ne!(a("SELECT * FROM users WHERE id = 1").fingerprint, base.fingerprint);
    assert_eq!(base.normalized, "SELECT * FROM users WHERE id IN ($1, ...) AND name = $4");
    assert_eq!(base.kind, StatementKind::Read);
    assert_eq!(base.tables_read, ["users"]);
}

#[test]
fn pgvector_jsonb_casts_and_ctes_parse() {
    let v = a("SELECT id FROM code_chunks ORDER BY embedding <=> $1::vector LIMIT 10");
    assert!(v.parsed && v.paginated);
    let j = a("SELECT * FROM entities WHERE data @> '{\"a\":1}'::jsonb AND tags @> ARRAY['x']");
    assert!(j.parsed);
    let c = a("WITH RECURSIVE d AS (SELECT id FROM work_items WHERE id = $1 UNION ALL SELECT w.id FROM work_items w JOIN d ON w.parent_id = d.id) SELECT * FROM d");
    assert_eq!(c.tables_read, ["work_items"], "CTE names are not tables");
    let w = a("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x");
    assert_eq!(w.kind, StatementKind::Write);
    assert_eq!(w.tables_written, ["t"]);
}

#[test]
fn kinds_volatility_and_locks() {
    assert_eq!(a("INSERT INTO t VALUES (1)").kind, StatementKind::Write);
    assert_eq!(a("CREATE TABLE t2 (a int)").kind, StatementKind::Ddl);
    for ddl in [
        "CREATE INDEX i ON t ((f(a)))",
        "CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)",
        "CREATE VIEW v AS SELECT f()",
        "CREATE OPERATOR === (leftarg = int, rightarg = int, function = f)",
        "CREATE TYPE pair AS (a int, b int)",
        "CREATE RULE r AS ON INSERT TO t DO ALSO SELECT f()",
        "GRANT admins TO app",
        "COMMENT ON TABLE t IS 'x'",
    ] {
        assert_eq!(a(ddl).kind, StatementKind::Ddl, "{ddl}");
    }
    assert_eq!(a("BEGIN").kind, StatementKind::Transaction);
    assert_eq!(a("SET search_path = x").kind, StatementKind::Utility);
    assert!(a("SELECT now()").volatile);
    assert!(a("SELECT nextval('s')").volatile);
    assert!(!a("SELECT count(*) FROM t").volatile);
    assert!(a("SELECT * FROM t WHERE id = 1 FOR UPDATE").locks_rows);
    assert!(!a("SELECT * FROM t").locks_rows);
}

#[test]
fn write_scopes_and_function_safety() {
    assert_eq!(a("SELECT count(*) FROM t").writes, WriteScope::Nothing);
    assert!(a("SELECT count(*), lower(x) FROM t").functions_stable);
    assert!(!a("SELECT now() FROM t").functions_stable);
    assert_eq!(a("SELECT my_func(1)").writes, WriteScope::Unknown);
    assert!(!a("SELECT my_func(1) FROM t").functions_stable);
    assert_eq!(a("UPDATE t SET a = 1").writes, WriteScope::Tables);
    assert_eq!(a("INSERT INTO t VALUES (my_func())").writes, WriteScope::Unknown);
    assert_eq!(a("CALL p()").writes, WriteScope::Unknown);
    assert_eq!(a("DO $$ BEGIN END $$").writes, WriteScope::Unknown);
    assert_eq!(a("SET search_path = x").writes, WriteScope::Nothing);
    assert_eq!(a("COMMIT").writes, WriteScope::Nothing);
    assert_eq!(a("COMMIT PREPARED 'x'").writes, WriteScope::Unknown);
    assert_eq!(a("TRUNCATE t").writes, WriteScope::Tables);
    assert_eq!(a("COPY t FROM STDIN").writes, WriteScope::Tables);
    assert_eq!(a("DROP TABLE t").writes, WriteScope::Tables);
    assert_eq!(a("SELECT pg_backend_pid()").writes, WriteScope::Nothing);
    assert_eq!(a("TRUNCATE t CASCADE").writes, WriteScope::Unknown);
    assert_eq!(&*a("SELECT * FROM public.t JOIN s.u ON true").read_names, [Arc::from("t"), Arc::from("u")]);
    assert_eq!(a("SET LOCAL search_path = x").cache_effect, CacheEffect::Transaction);
    assert_eq!(a("SELECT set_config('a.b', 'c', true)").cache_effect, CacheEffect::Transaction);
    assert_eq!(a("BEGIN ISOLATION LEVEL SERIALIZABLE").cache_effect, CacheEffect::Transaction);
    assert_eq!(a("SET default_transaction_isolation = 'serializable'").cache_effect, CacheEffect::Session);
    assert_eq!(a("BEGIN").cache_effect, CacheEffect::None);
}

#[test]
fn unparsable_text_still_gets_a_stable_fingerprint() {
    let x = a("SELEC * FROM t WHERE id = 1");
    let y = a("selec * from t where id = 99");
    assert!(!x.parsed);
    assert_eq!(x.fingerprint, y.fingerprint);
    assert_eq!(x.normalized, "selec * from t where id = ?");
}

#[test]
fn list_collapse() {
    assert_eq!(collapse_lists("a IN ($1, $2, $3)"), "a IN ($1, ...)");
    assert_eq!(collapse_lists("ANY(ARRAY[$1,$2])"), "ANY(ARRAY[$1, ...])");
    assert_eq!(collapse_lists("f($1)"), "f($1)");
    assert_eq!(collapse_lists("VALUES ($1, now())"), "VALUES ($1, now())");
    assert_eq!(collapse_lists("VALUES ($1, $2)"), "VALUES ($1, $2)");
    assert_eq!(collapse_lists("x NOT IN ($1,$2)"), "x NOT IN ($1, ...)");
}
