//! The one catalog query a database's table list is read with (`relations::spawn_load`): its
//! rows (name, kind, target) are what `table_facts` makes of them. Kept apart from the list's
//! bookkeeping because it is long and changes for its own reasons (a new kind of attached code).

/// Rows (name, 'code' | 'code_write', '') for relations whose attached objects run code that may
/// change the session: on reads and writes a view's query, a policy and a column type's
/// functions ('code'), on writes also rules, defaults, constraints, index and partition key
/// expressions and domain checks ('code_write'). Code is a function or operator outside
/// pg_catalog and extensions (pg_depend), or a built-in that changes the session called in the
/// stored expression: pg_depend records no dependency on pinned built-ins, so the node trees
/// (`pg_node_tree` text, no deparse and so no locks) are searched for their `:funcid`s.
macro_rules! code_rows {
    () => {
        concat!(
        " UNION ALL SELECT DISTINCT c.relname, o.kind, '' FROM pg_catalog.pg_depend d JOIN LATERAL ( \
           SELECT r.ev_class AS rel, CASE WHEN r.rulename = '_RETURN' AND v.relkind = 'v' THEN 'code' \
             ELSE 'code_write' END AS kind FROM pg_catalog.pg_rewrite r \
             JOIN pg_catalog.pg_class v ON v.oid = r.ev_class \
             WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = d.objid \
           UNION ALL SELECT a.adrelid, 'code_write' FROM pg_catalog.pg_attrdef a \
             WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND a.oid = d.objid \
           UNION ALL SELECT k.conrelid, 'code_write' FROM pg_catalog.pg_constraint k \
             WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND k.oid = d.objid AND k.conrelid <> 0 \
           UNION ALL SELECT a.attrelid, 'code_write' FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_attribute a ON a.atttypid = k.contypid AND NOT a.attisdropped \
             WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND k.oid = d.objid AND k.contypid <> 0 \
           UNION ALL SELECT a.attrelid, 'code' FROM pg_catalog.pg_attribute a \
             WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND a.atttypid = d.objid AND NOT a.attisdropped \
           UNION ALL SELECT p.oid, 'code_write' FROM pg_catalog.pg_class p \
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND p.oid = d.objid AND p.relkind = 'p' \
           UNION ALL SELECT p.polrelid, 'code' FROM pg_catalog.pg_policy p \
             WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND p.oid = d.objid \
           UNION ALL SELECT i.indrelid, 'code_write' FROM pg_catalog.pg_index i \
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND i.indexrelid = d.objid) o ON true \
         JOIN pg_catalog.pg_class c ON c.oid = o.rel \
         WHERE d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass) \
         AND d.refobjid >= 16384 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend x \
           WHERE x.classid = d.refclassid AND x.objid = d.refobjid AND x.deptype = 'e' AND ( \
             CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
             THEN (SELECT f.proowner FROM pg_catalog.pg_proc f WHERE f.oid = d.refobjid) \
             ELSE (SELECT f.oprowner FROM pg_catalog.pg_operator f WHERE f.oid = d.refobjid) END) IN \
             (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolsuper)) \
         UNION ALL SELECT DISTINCT c.relname, o.kind, '' FROM ( \
           SELECT r.ev_class AS rel, CASE WHEN r.rulename = '_RETURN' AND v.relkind = 'v' THEN 'code' \
             ELSE 'code_write' END AS kind, r.ev_action::text AS tree FROM pg_catalog.pg_rewrite r \
             JOIN pg_catalog.pg_class v ON v.oid = r.ev_class \
           UNION ALL SELECT a.adrelid, 'code_write', a.adbin::text FROM pg_catalog.pg_attrdef a \
           UNION ALL SELECT k.conrelid, 'code_write', k.conbin::text FROM pg_catalog.pg_constraint k \
             WHERE k.conrelid <> 0 AND k.conbin IS NOT NULL \
           UNION ALL SELECT a.attrelid, 'code_write', k.conbin::text FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_attribute a ON a.atttypid = k.contypid AND NOT a.attisdropped WHERE k.contypid <> 0 \
           UNION ALL SELECT a.attrelid, 'code_write', t.typdefaultbin::text FROM pg_catalog.pg_type t \
             JOIN pg_catalog.pg_attribute a ON a.atttypid = t.oid AND NOT a.attisdropped WHERE t.typdefaultbin IS NOT NULL \
           UNION ALL SELECT p.polrelid, 'code', pg_catalog.concat_ws(' ', p.polqual::text, p.polwithcheck::text) \
             FROM pg_catalog.pg_policy p \
           UNION ALL SELECT i.indrelid, 'code_write', pg_catalog.concat_ws(' ', i.indexprs::text, i.indpred::text) \
             FROM pg_catalog.pg_index i WHERE i.indexprs IS NOT NULL OR i.indpred IS NOT NULL) o \
         JOIN pg_catalog.pg_class c ON c.oid = o.rel JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
         AND o.tree ~ ",
        session_funcids!())
    };
}

/// A regular expression matching a `pg_node_tree` text that calls a `session_builtin`.
macro_rules! session_funcids {
    () => {
        concat!(
            "(':funcid (' || (SELECT pg_catalog.string_agg(p.oid::text, '|') FROM pg_catalog.pg_proc p WHERE ",
            session_builtin!(),
            ") || ') ')"
        )
    };
}

/// `p` (a pg_proc row) is a built-in that changes the session or runs SQL given as text (as
/// `sql::session_effect` sees them by name in a client's own statement).
macro_rules! session_builtin {
    () => {
        "(p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace AND (p.proname IN ('set_config', 'ts_stat', \
         'ts_rewrite', 'brin_summarize_new_values', 'brin_summarize_range', 'gin_clean_pending_list', 'setseed') OR p.proname LIKE 'pg\\_advisory\\_lock%' OR p.proname LIKE 'pg\\_try\\_advisory\\_lock%' \
         OR p.proname LIKE '%\\_to\\_xml%'))"
    };
}

/// `p` (a pg_proc row) is user code: created after initdb, not made by the server with a type (a
/// range type's multirange constructors depend on it internally), and not an extension's unless
/// a non-superuser owns it (a tenant who made a trusted extension can add a function to it).
macro_rules! user_function {
    () => {
        "(p.oid >= 16384 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend x \
         WHERE x.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND x.objid = p.oid AND (x.deptype = 'i' \
         OR (x.deptype = 'e' AND p.proowner IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolsuper)))))"
    };
}

/// `p` (a pg_proc row) is user code or a built-in that changes the session.
macro_rules! runs_code {
    () => {
        concat!(user_function!(), " OR ", session_builtin!())
    };
}

/// One row ('', 'expr_code', '') when a user-made operator or cast, a domain's check, or a range
/// type's subtype_diff or canonical function (GiST and statistics call it on any column of the
/// range, its multirange or a domain over either), calls
/// user code or a built-in that changes the session: any statement may then run it from its own
/// text (`1 === 2`, an assignment cast in an INSERT, `'x'::a_domain`), which the parse tree alone
/// cannot tell from a built-in. One row (name, 'user_function', '') per name of a user
/// function: one named as a built-in (`lower(int)` in a schema on the search path) is called by
/// a text that looks like the built-in's call (`table_facts` compares the names). And one row
/// (name, 'function_name', '') per name of any function made after initdb (extensions' too): a
/// trigger body naming one may call it (`table_facts::check_bodies`).
macro_rules! expression_code_rows {
    () => {
        concat!(
            " UNION ALL SELECT DISTINCT p.proname::text, 'function_name', '' FROM pg_catalog.pg_proc p \
             WHERE p.oid >= 16384",
            " UNION ALL SELECT DISTINCT p.proname::text, 'user_function', '' FROM pg_catalog.pg_proc p WHERE ",
            user_function!(),
            " UNION ALL SELECT '', 'expr_code', '' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_operator o \
             JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode WHERE o.oid >= 16384 AND (",
            runs_code!(),
            ")) OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast k JOIN pg_catalog.pg_proc p ON p.oid = k.castfunc \
             WHERE k.oid >= 16384 AND (",
            runs_code!(),
            ")) OR EXISTS (SELECT 1 FROM pg_catalog.pg_range r JOIN pg_catalog.pg_proc p \
             ON p.oid IN (r.rngsubdiff, r.rngcanonical) WHERE ",
            runs_code!(),
            ") OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.contypid <> 0 AND (k.conbin::text ~ ",
            session_funcids!(),
            " OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid \
             WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = k.oid \
             AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND ",
            user_function!(),
            ")))"
        )
    };
}

pub const QUERY: &str = concat!(
    "SELECT c.relname, c.relkind::text, '' FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
     UNION ALL SELECT DISTINCT c.relname, CASE WHEN b.body THEN 'trigger_body' ELSE 'trigger' END, \
     CASE WHEN b.body THEN p.prosrc ELSE '' END FROM pg_catalog.pg_trigger t \
     JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
     JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
     CROSS JOIN LATERAL (SELECT t.tgqual IS NULL AND l.lanname = 'plpgsql' AND p.prosrc <> '' \
       AND p.proconfig IS NULL AS body) b \
     WHERE NOT t.tgisinternal \
     UNION ALL SELECT DISTINCT c.relname, 'trigger', '' FROM pg_catalog.pg_rewrite r \
     JOIN pg_catalog.pg_class c ON c.oid = r.ev_class WHERE c.relkind IN ('r', 'p', 'v') AND r.rulename <> '_RETURN' \
     AND c.relnamespace NOT IN ('pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace) \
     UNION ALL SELECT p.relname, 'inherit', ch.relname FROM pg_catalog.pg_inherits i \
     JOIN pg_catalog.pg_class p ON p.oid = i.inhparent JOIN pg_catalog.pg_class ch ON ch.oid = i.inhrelid \
     UNION ALL SELECT ch.relname, 'inherit', p.relname FROM pg_catalog.pg_inherits i \
     JOIN pg_catalog.pg_class p ON p.oid = i.inhparent JOIN pg_catalog.pg_class ch ON ch.oid = i.inhrelid \
     UNION ALL SELECT current_setting('default_transaction_isolation'), 'isolation', '' \
     UNION ALL SELECT p.relname, 'cascade', ch.relname FROM pg_catalog.pg_constraint k \
     JOIN pg_catalog.pg_class p ON p.oid = k.confrelid JOIN pg_catalog.pg_class ch ON ch.oid = k.conrelid \
     WHERE k.contype = 'f' AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd')) \
     UNION ALL SELECT DISTINCT c.relname, 'policy', '' FROM pg_catalog.pg_policy pol \
     JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid JOIN pg_catalog.pg_depend d \
     ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = pol.oid \
     WHERE (d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> pol.polrelid) \
     OR (d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid >= 16384) \
     UNION ALL SELECT p.relname, 'ucascade', ch.relname FROM pg_catalog.pg_constraint k \
     JOIN pg_catalog.pg_class p ON p.oid = k.confrelid JOIN pg_catalog.pg_class ch ON ch.oid = k.conrelid \
     WHERE k.contype = 'f' AND k.confupdtype IN ('c', 'n', 'd') \
     UNION ALL SELECT c.relname, 'pkey:' || a.atttypid::text, a.attname FROM pg_catalog.pg_index i \
     JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
     WHERE i.indisprimary AND i.indnkeyatts = 1 AND c.relkind = 'r' AND NOT c.relrowsecurity \
     AND a.atttypid IN (20, 21, 23, 2950, 25, 1043) \
     AND (a.attcollation = 0 OR a.attcollation IN \
       (SELECT oid FROM pg_catalog.pg_collation WHERE collisdeterministic)) \
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class o WHERE o.relname = c.relname AND o.oid <> c.oid \
       AND o.relkind IN ('r', 'p', 'v', 'm', 'f')) \
     UNION ALL SELECT c.relname, 'shape', md5(string_agg(concat_ws('|', c.relacl::text, c.relrowsecurity::text, \
       c.relforcerowsecurity::text, (SELECT string_agg(concat_ws(':', a.attname, a.atttypid::text, \
       a.atttypmod::text, a.attcollation::text, a.attacl::text), ',' ORDER BY a.attnum) \
       FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), \
       (SELECT string_agg(concat_ws(':', p.polname, p.polcmd::text, p.polpermissive::text, p.polroles::text, \
       pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)), \
       ',' ORDER BY p.polname) FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid)), ';' ORDER BY n.nspname)) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_%' GROUP BY c.relname \
     UNION ALL SELECT '', 'roles', md5(concat_ws('|', (SELECT string_agg(concat_ws(':', m.roleid::text, \
       m.member::text), ',' ORDER BY m.roleid, m.member) FROM pg_catalog.pg_auth_members m), \
       (SELECT string_agg(concat_ws(':', r.oid::text, r.rolsuper::text, r.rolbypassrls::text, r.rolinherit::text), \
       ',' ORDER BY r.oid) FROM pg_catalog.pg_roles r)))",
    code_rows!(),
    expression_code_rows!(),
    " UNION ALL SELECT DISTINCT v.relname, 'reads', b.relname FROM pg_catalog.pg_rewrite r \
     JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind = 'v' \
     AND v.relnamespace NOT IN ('pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace) \
     JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid \
     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
     JOIN pg_catalog.pg_class b ON b.oid = d.refobjid AND b.oid <> v.oid \
     UNION ALL SELECT DISTINCT c.relname, 'policy_reads', b.relname FROM pg_catalog.pg_policy p \
     JOIN pg_catalog.pg_class c ON c.oid = p.polrelid \
     JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = p.oid \
     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
     JOIN pg_catalog.pg_class b ON b.oid = d.refobjid AND b.oid <> p.polrelid"
);
