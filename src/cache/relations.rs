//! Which names are ordinary tables, per database: only reads of ordinary (or partitioned)
//! tables are cached. A view, materialized view or foreign table is not invalidated by writes to
//! what it reads, and catalog tables change behind pgpilot's back. Read from pg_class in the
//! background, re-read periodically and after DDL seen through pgpilot; until a database's list
//! is known its reads are simply not cached.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;

pub const QUERY: &str = "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'";

#[derive(Default)]
struct Known {
    ordinary: HashSet<Box<str>>,
    /// Views and the like: a name that is one of these in any schema is never cached.
    other: HashSet<Box<str>>,
    loaded_ms: u64,
    loading: bool,
    stale: bool,
}

#[derive(Default)]
pub struct Relations {
    dbs: RwLock<HashMap<Arc<str>, Known>>,
}

impl Relations {
    /// Whether every table is known to be ordinary, and whether the list should be (re)loaded.
    pub fn check(&self, db: &str, tables: &[Arc<str>], now_ms: u64, refresh_ms: u64) -> (bool, bool) {
        let dbs = self.dbs.read();
        let Some(k) = dbs.get(db) else { return (false, true) };
        let due = !k.loading && (k.stale || now_ms.saturating_sub(k.loaded_ms) >= refresh_ms);
        let ok = k.loaded_ms > 0
            && tables.iter().all(|t| k.ordinary.contains(&**t) && !k.other.contains(&**t) && !t.starts_with("pg_"));
        (ok, due)
    }

    /// Claims the reload of `db`'s list (false when another task already does it).
    pub fn begin_load(&self, db: &str) -> bool {
        let mut dbs = self.dbs.write();
        let k = dbs.entry(Arc::from(db)).or_default();
        !std::mem::replace(&mut k.loading, true)
    }

    /// Stores the rows of `QUERY` (name, relkind); `None` when the load failed.
    pub fn finish_load(&self, db: &str, rows: Option<Vec<(String, String)>>, now_ms: u64) {
        let mut dbs = self.dbs.write();
        let k = dbs.entry(Arc::from(db)).or_default();
        k.loading = false;
        let Some(rows) = rows else { return };
        k.ordinary.clear();
        k.other.clear();
        for (name, kind) in rows {
            if matches!(kind.as_str(), "r" | "p") {
                k.ordinary.insert(name.into());
            } else {
                k.other.insert(name.into());
            }
        }
        k.loaded_ms = now_ms.max(1);
        k.stale = false;
    }

    /// DDL went through: the list may be out of date (a table may now be a view).
    pub fn mark_stale(&self, db: &str) {
        if let Some(k) = self.dbs.write().get_mut(db) {
            k.stale = true;
            k.ordinary.clear();
        }
    }
}

/// Loads `db`'s relation list on a pooled connection, in the background.
pub fn spawn_load(app: Arc<crate::app::App>, pool: Arc<crate::pool::Pool>, db: Arc<str>) {
    tokio::spawn(async move {
        let rows = match pool.checkout().await {
            Ok(mut conn) => match conn.run_internal(QUERY).await {
                Ok(rows) => {
                    conn.release();
                    Some(rows.into_iter().filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?))).collect())
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
        app.cache.relations.finish_load(&db, rows, crate::clock::now_ms());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_ordinary_tables_pass() {
        let r = Relations::default();
        let t = |names: &[&str]| names.iter().map(|n| Arc::<str>::from(*n)).collect::<Vec<_>>();
        assert_eq!(r.check("db", &t(&["a"]), 10, 1000), (false, true), "unknown database: load it");
        assert!(r.begin_load("db"));
        assert!(!r.begin_load("db"), "one loader at a time");
        let rows = vec![("a".into(), "r".into()), ("v".into(), "v".into()), ("s".into(), "r".into())];
        r.finish_load("db", Some(vec![("s".into(), "m".into())].into_iter().chain(rows).collect()), 10);
        assert_eq!(r.check("db", &t(&["a"]), 20, 1000), (true, false));
        assert!(!r.check("db", &t(&["a", "v"]), 20, 1000).0, "a view");
        assert!(!r.check("db", &t(&["s"]), 20, 1000).0, "a table and a matview share the name");
        assert!(!r.check("db", &t(&["nope"]), 20, 1000).0);
        assert!(r.check("db", &t(&["a"]), 2000, 1000).1, "refresh due");
        r.mark_stale("db");
        assert_eq!(r.check("db", &t(&["a"]), 20, 1000), (false, true));
    }
}
