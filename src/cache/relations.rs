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

pub use super::catalog_query::QUERY;

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
        (k.any_code, k.code_in_expressions) = (fresh.any_code, fresh.code_in_expressions);
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
    /// before another client gets it. Any statement does in a database where a user-made operator
    /// or cast runs such code. `None`: the list is not loaded, or DDL went through since.
    pub fn runs_attached_code(&self, db: &str, reads: &[Arc<str>], writes: &[Arc<str>]) -> Option<bool> {
        let dbs = self.dbs.read();
        let k = dbs.get(db).filter(|k| k.loaded_ms > 0 && !k.stale)?;
        let code = reads.iter().any(|t| k.facts(t).code_on_read) || writes.iter().any(|t| k.facts(t).code_on_write);
        Some(k.code_in_expressions || (k.any_code && code))
    }

    /// `db`'s list is loaded, up to date and names no relation that runs user code (a session
    /// may skip `runs_attached_code` until `version` moves), and whether a (re)load is due.
    pub fn code_free(&self, db: &str, now_ms: u64, refresh_ms: u64) -> (bool, bool) {
        let dbs = self.dbs.read();
        let Some(k) = dbs.get(db) else { return (false, true) };
        let due = k.due(now_ms, refresh_ms);
        (k.loaded_ms > 0 && !k.stale && !k.any_code, due)
    }

    /// Every database's list is out of date (DDL announced by another replica may have been
    /// missed).
    pub fn mark_all_stale(&self) {
        let names: Vec<Arc<str>> = self.dbs.read().keys().cloned().collect();
        names.iter().for_each(|db| self.mark_stale(db));
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
