//! What the catalog says matters for caching, per database: which names are ordinary tables (only
//! their reads are cached: a view, materialized view or foreign table is not invalidated by writes
//! to what it reads, and catalog tables change behind pgpilot's back), which tables a write reaches
//! beyond itself (foreign keys with ON DELETE/UPDATE CASCADE, SET NULL or SET DEFAULT), and which
//! tables have user triggers or rules (a write there may change anything), and which relations run
//! code that may change the session when read or written (session isolation's question,
//! `runs_attached_code`). Read in the background, re-read periodically and after DDL seen through
//! pgpilot; until a database's list is known its reads are simply not cached.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::scopes;
use super::table_facts::Known;

/// Rows (name, 'code' | 'code_write', '') for relations whose attached objects run code that may
/// change the session: on reads and writes a view's query, a policy and a column type's
/// functions ('code'), on writes also rules, defaults, constraints, index and partition key
/// expressions and domain checks ('code_write'). Code is a function or operator outside
/// pg_catalog and extensions (pg_depend), or a built-in that changes the session called in the
/// stored expression: pg_depend records no dependency on pinned built-ins, so the node trees
/// (`pg_node_tree` text, no deparse and so no locks) are searched for their `:funcid`s.
macro_rules! code_rows {
    () => {
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
           WHERE x.classid = d.refclassid AND x.objid = d.refobjid AND x.deptype = 'e') \
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
         AND o.tree ~ (':funcid (' || (SELECT pg_catalog.string_agg(p.oid::text, '|') FROM pg_catalog.pg_proc p \
           WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace AND (p.proname IN ('set_config', 'ts_stat', \
           'ts_rewrite') OR p.proname LIKE 'pg\\_advisory\\_lock%' OR p.proname LIKE 'pg\\_try\\_advisory\\_lock%' \
           OR p.proname LIKE '%\\_to\\_xml%')) || ') ')"
    };
}

pub const QUERY: &str = concat!(
    "SELECT c.relname, c.relkind::text, '' FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
     UNION ALL SELECT DISTINCT c.relname, 'trigger', '' FROM pg_catalog.pg_trigger t \
     JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal \
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

#[derive(Default)]
pub struct Relations {
    dbs: RwLock<HashMap<Arc<str>, Known>>,
    /// Woken at every finished load (reads waiting for a database's first list).
    loaded: tokio::sync::Notify,
    /// Moves at every change to any database's list: a copy taken under one version
    /// (`WriteView`) is good while it has not moved.
    version: AtomicU64,
}

/// What a write to one table needs from the list, copied out: a session keeps it while
/// `Relations::version` has not moved, so its statements and commits ask no shared map (a
/// tpcb-like transaction asked it ~12 times, each a lock and two lookups).
#[derive(Clone, Default, Debug)]
pub struct WriteView {
    /// As `key_column` says.
    pub key: Option<(Arc<str>, scopes::Family)>,
    /// Foreign-key actions lead from it: which fire depends on the key.
    pub beyond: bool,
    /// A write changes this table and nothing else: no trigger or rule, no foreign-key action,
    /// no view or the like of its name (`reach` would add nothing).
    pub alone: bool,
    /// `keyed_write_ok` for an UPDATE, a DELETE and an INSERT.
    keyed_update: bool,
    keyed_delete: bool,
    keyed_insert: bool,
}

impl WriteView {
    pub fn keyed_ok(&self, kind: scopes::WriteKind) -> bool {
        match kind {
            scopes::WriteKind::Update => self.keyed_update,
            scopes::WriteKind::Delete => self.keyed_delete,
            scopes::WriteKind::Insert => self.keyed_insert,
        }
    }
}

impl Relations {
    /// Whether every table is known to be ordinary, and whether the list should be (re)loaded.
    pub fn check(&self, db: &str, tables: &[Arc<str>], now_ms: u64, refresh_ms: u64) -> (bool, bool) {
        let dbs = self.dbs.read();
        let Some(k) = dbs.get(db) else { return (false, true) };
        let due = k.due(now_ms, refresh_ms);
        let ok = k.loaded_ms > 0
            && tables.iter().all(|t| {
                let f = k.facts(t);
                f.ordinary && !f.other && !f.policy_reads_others && !t.starts_with("pg_")
            });
        (ok, due)
    }

    /// `db`'s list has never been loaded but a load is under way.
    pub fn first_load_running(&self, db: &str) -> bool {
        self.dbs.read().get(db).is_some_and(|k| k.loaded_ms == 0 && k.loading)
    }

    /// Waits (at most `wait`) until `db`'s list has been loaded once, or the load under way ended
    /// without it (a failed load wakes its waiters too); whether it has been loaded.
    pub async fn wait_loaded(&self, db: &str, wait: std::time::Duration) -> bool {
        let state = || self.dbs.read().get(db).map_or((false, false), |k| (k.loaded_ms > 0, k.loading));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut woken = std::pin::pin!(self.loaded.notified());
            woken.as_mut().enable(); // registered before the check: a load ending now still wakes it
            match state() {
                (true, _) => return true,
                (false, false) => return false,
                (false, true) => {}
            }
            if crate::timers::timeout_at(deadline, woken).await.is_err() {
                return state().0;
            }
        }
    }

    /// Claims the reload of `db`'s list (false when another task already does it).
    pub fn begin_load(&self, db: &str) -> bool {
        let mut dbs = self.dbs.write();
        let k = dbs.entry(Arc::from(db)).or_default();
        let starts = !std::mem::replace(&mut k.loading, true);
        if starts {
            k.marks_at_load = k.marks;
        }
        starts
    }

    /// Stores the rows of `QUERY` (name, kind, cascade target); `None` when the load failed.
    /// What changed since the previous load: tables whose shape changed or that are gone, or
    /// None for the whole database (role memberships changed).
    pub fn finish_load(&self, db: &str, rows: Option<Vec<(String, String, String)>>, now_ms: u64) -> Changed {
        let changed = self.store_load(db, rows, now_ms);
        self.loaded.notify_waiters();
        changed
    }

    fn store_load(&self, db: &str, rows: Option<Vec<(String, String, String)>>, now_ms: u64) -> Changed {
        let fresh = rows.map(Known::from_rows);
        let mut dbs = self.dbs.write();
        let k = dbs.entry(Arc::from(db)).or_default();
        k.loading = false;
        let Some(fresh) = fresh else {
            k.failed_ms = now_ms.max(1);
            return Changed::Tables(Vec::new());
        };
        self.version.fetch_add(1, Ordering::AcqRel);
        let before = std::mem::replace(&mut k.shapes, fresh.shapes);
        k.tables = fresh.tables;
        k.snapshot_default = fresh.snapshot_default;
        k.any_code = fresh.any_code;
        k.loaded_ms = now_ms.max(1);
        k.failed_ms = 0;
        // DDL marked the list while this load read the catalog (maybe before that DDL committed):
        // still stale, read again.
        k.stale = k.marks != k.marks_at_load;
        if before.is_empty() {
            return Changed::Tables(Vec::new()); // a first load: nothing was cached under another shape
        }
        if before.get("") != k.shapes.get("") {
            return Changed::Database;
        }
        let gone_or_changed = before.iter().filter(|(name, shape)| k.shapes.get(*name) != Some(*shape));
        Changed::Tables(gone_or_changed.map(|(name, _)| Arc::from(&**name)).collect())
    }

    /// Transactions in `db` default to REPEATABLE READ or SERIALIZABLE.
    pub fn snapshot_default(&self, db: &str) -> bool {
        self.dbs.read().get(db).is_some_and(|k| k.snapshot_default)
    }

    /// The tables a committed write to `tables` (and writes of known keys to `keyed`) may have
    /// changed as a whole: `tables` with foreign-key actions followed, and what the keyed writes'
    /// own actions reach beyond their tables (rows of keys nobody named, even in a table another
    /// keyed write of the commit names); None when a trigger or rule means anything may have
    /// changed. One lock and one list: this runs at every commit that wrote.
    pub fn reach<'a>(
        &self,
        db: &str,
        keyed: impl IntoIterator<Item = (&'a str, scopes::WriteKind)>,
        tables: Vec<Arc<str>>,
    ) -> Option<Vec<Arc<str>>> {
        let dbs = self.dbs.read();
        let Some(k) = dbs.get(db) else { return Some(tables) };
        let mut out = tables;
        for (table, kind) in keyed {
            let f = k.facts(table);
            if f.triggers || f.other {
                return None;
            }
            // (An INSERT fires no foreign-key action; an UPDATE that keeps its key only ON UPDATE ones.)
            let edges = match kind {
                scopes::WriteKind::Insert => continue,
                scopes::WriteKind::Update => &f.update_cascades,
                scopes::WriteKind::Delete => &f.cascades,
            };
            for next in edges {
                if !out.contains(next) {
                    out.push(next.clone());
                }
            }
        }
        let mut i = 0;
        while i < out.len() {
            // Triggers and rules may write anywhere; a view (or other non-table) writes its base.
            let f = k.facts(&out[i]);
            if f.triggers || f.other {
                return None;
            }
            for next in &f.cascades {
                if !out.contains(next) {
                    out.push(next.clone());
                }
            }
            i += 1;
        }
        Some(out)
    }

    /// The column (and its type) a read or write of `table` may be keyed on: its primary key,
    /// when the table is plain (no inheritance, triggers, rules or view of that name).
    pub fn key_column(&self, db: &str, table: &str) -> Option<(Arc<str>, scopes::Family)> {
        let dbs = self.dbs.read();
        let k = dbs.get(db)?;
        key_of(k, k.facts(table))
    }

    /// Whether a committed write of known keys to `table` changed no other row of it: a DELETE
    /// may cascade, an UPDATE (which never assigns the key) only through ON UPDATE actions; a
    /// foreign-key path back to the table itself would change rows of other keys.
    pub fn keyed_write_ok(&self, db: &str, table: &str, kind: scopes::WriteKind) -> bool {
        let dbs = self.dbs.read();
        dbs.get(db).is_some_and(|k| keyed_ok(k.facts(table), kind))
    }

    /// The version `WriteView`s are taken under (read it before taking one: a change meanwhile
    /// then makes the copy look old at once).
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Everything a write to `table` asks of the list, in one lock and one lookup (a name the
    /// list does not hold, or a database not loaded yet: nothing known, the shared path decides).
    pub fn write_view(&self, db: &str, table: &str) -> WriteView {
        use scopes::WriteKind::{Delete, Insert, Update};
        let dbs = self.dbs.read();
        let Some((k, f)) = dbs.get(db).and_then(|k| Some((k, k.tables.get(table)?))) else {
            return WriteView::default();
        };
        let quiet = f.cascades.is_empty() && f.update_cascades.is_empty();
        WriteView {
            key: key_of(k, f),
            beyond: !quiet,
            alone: quiet && !f.triggers && !f.other,
            keyed_update: keyed_ok(f, Update),
            keyed_delete: keyed_ok(f, Delete),
            keyed_insert: keyed_ok(f, Insert),
        }
    }

    /// Whether a statement reading `reads` and writing `writes` may run code attached to them
    /// (`code_rows`; also through views, cascades and partitions) that can change the session
    /// unseen (`set_config`, a temporary table, an advisory lock): the connection is then reset
    /// before another client gets it. `None`: the list is not loaded, or DDL went through since.
    pub fn runs_attached_code(&self, db: &str, reads: &[Arc<str>], writes: &[Arc<str>]) -> Option<bool> {
        let dbs = self.dbs.read();
        let k = dbs.get(db).filter(|k| k.loaded_ms > 0 && !k.stale)?;
        let code = reads.iter().any(|t| k.facts(t).code_on_read) || writes.iter().any(|t| k.facts(t).code_on_write);
        Some(k.any_code && code)
    }

    /// `db`'s list is loaded, up to date and names no relation that runs user code (a session
    /// may skip `runs_attached_code` until `version` moves), and whether a (re)load is due.
    pub fn code_free(&self, db: &str, now_ms: u64, refresh_ms: u64) -> (bool, bool) {
        let dbs = self.dbs.read();
        let Some(k) = dbs.get(db) else { return (false, true) };
        let due = k.due(now_ms, refresh_ms);
        (k.loaded_ms > 0 && !k.stale && !k.any_code, due)
    }

    /// DDL went through: the list may be out of date (a table may now be a view).
    pub fn mark_stale(&self, db: &str) {
        if let Some(k) = self.dbs.write().get_mut(db) {
            self.version.fetch_add(1, Ordering::AcqRel);
            k.stale = true;
            k.marks += 1;
            for f in k.tables.values_mut() {
                f.ordinary = false;
                f.key = None;
            }
        }
    }
}

/// What a reload found changed behind pgpilot's back.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    Tables(Vec<Arc<str>>),
    Database,
}

/// How long a load may wait for the server's answer: a server that stopped answering must not keep
/// the load's connection (and its pool slot) forever; that connection is then closed.
const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Loads `db`'s relation list on a pooled connection, in the background; what changed since the
/// last load is invalidated (so DDL, GRANT/REVOKE and policies changed outside pgpilot are
/// bounded by `relations_refresh_s`).
pub fn spawn_load(cache: Arc<super::ResultCache>, pool: Arc<crate::pool::Pool>, db: Arc<str>) {
    let relations = cache.relations.clone();
    tokio::spawn(async move {
        let rows = match pool.checkout().await {
            Ok(mut conn) => match crate::timers::timeout(LOAD_WAIT, conn.run_internal(QUERY))
                .await
                .unwrap_or(Err(crate::backend::ServerError::Timeout))
            {
                Ok(rows) => {
                    conn.release();
                    let col = |r: &crate::backend::internal::Row, i: usize| r.get(i).cloned().flatten();
                    Some(
                        rows.iter()
                            .filter_map(|r| Some((col(r, 0)?, col(r, 1)?, col(r, 2).unwrap_or_default())))
                            .collect(),
                    )
                }
                Err(e) => {
                    tracing::warn!(database = %db, "cache: could not read the table list: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(database = %db, "cache: no connection to read the table list: {e}");
                None
            }
        };
        match relations.finish_load(&db, rows, crate::clock::now_ms()) {
            Changed::Tables(t) if t.is_empty() => {}
            Changed::Tables(t) => {
                tracing::info!(database = %db, tables = ?t, "cache: tables changed outside pgpilot; invalidated");
                let written: Vec<super::Written> = t.into_iter().map(super::Written::table).collect();
                cache.invalidate(&db, Some(&written)).await;
            }
            Changed::Database => {
                tracing::info!(database = %db, "cache: roles changed outside pgpilot; database invalidated");
                cache.invalidate(&db, None).await;
            }
        }
    });
}

/// Whether a committed write of known keys to a table with these facts changed no other row of
/// it (see `keyed_write_ok`).
fn keyed_ok(f: &super::table_facts::Facts, kind: scopes::WriteKind) -> bool {
    // (`inherited`: as `key_column` says; the list may have reloaded since the write.)
    f.key.is_some()
        && !f.inherited
        && match kind {
            scopes::WriteKind::Insert => true,
            scopes::WriteKind::Delete => !f.loops_on_delete,
            scopes::WriteKind::Update => !f.loops_on_update,
        }
}

/// The column a read or write of a table with these facts may be keyed on (see `key_column`).
fn key_of(k: &Known, f: &super::table_facts::Facts) -> Option<(Arc<str>, scopes::Family)> {
    let plain = !f.inherited && !f.triggers && !f.other;
    f.key.clone().filter(|_| plain && k.loaded_ms > 0)
}

#[cfg(test)]
#[path = "relations_tests.rs"]
mod tests;
