//! Invalidation by generation counters: a committed write bumps the generation of each table it
//! changed (or of its whole database when pgpilot cannot tell which). An entry remembers the
//! generations it was filled under and is valid only while they are unchanged. This catches
//! fills racing a commit (the snapshot is taken before the query is sent) without scanning the
//! cache, which moka's lazy `invalidate_entries_if` could not promise.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// Tables tracked per database before writes fall back to the database-wide generation.
const MAX_TABLES: usize = 100_000;

#[derive(Default)]
struct Db {
    generation: u64,
    tables: HashMap<Arc<str>, u64>,
}

#[derive(Default)]
pub struct Generations {
    epoch: AtomicU64,
    dbs: RwLock<HashMap<Arc<str>, Db>>,
}

impl Generations {
    /// [epoch, database generation, one per table]: what an entry must still match to be served.
    pub fn snapshot(&self, db: &str, tables: &[Arc<str>]) -> Vec<u64> {
        let mut out = Vec::with_capacity(tables.len() + 2);
        out.push(self.epoch.load(Ordering::Acquire));
        let dbs = self.dbs.read();
        match dbs.get(db) {
            Some(d) => {
                out.push(d.generation);
                out.extend(tables.iter().map(|t| d.tables.get(&**t).copied().unwrap_or(0)));
            }
            None => out.extend(std::iter::repeat_n(0, tables.len() + 1)),
        }
        out
    }

    /// Committed writes to `tables` of `db`.
    pub fn bump_tables(&self, db: &str, tables: &[Arc<str>]) {
        let mut dbs = self.dbs.write();
        if !dbs.contains_key(db) {
            dbs.insert(Arc::from(db), Db::default());
        }
        let d = dbs.get_mut(db).expect("inserted above");
        for t in tables {
            if d.tables.len() >= MAX_TABLES && !d.tables.contains_key(&**t) {
                d.generation += 1;
                continue;
            }
            match d.tables.get_mut(&**t) {
                Some(g) => *g += 1,
                None => drop(d.tables.insert(t.clone(), 1)),
            }
        }
    }

    /// A committed write pgpilot cannot attribute to tables (user function, CALL, DO...).
    pub fn bump_database(&self, db: &str) {
        self.dbs.write().entry(Arc::from(db)).or_default().generation += 1;
    }

    /// Everything cached so far is invalid (flush, or invalidations from other replicas may
    /// have been missed while Redis was unreachable).
    pub fn bump_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_move_with_their_tables_only() {
        let g = Generations::default();
        let t: Vec<Arc<str>> = vec!["a".into(), "b".into()];
        let s0 = g.snapshot("db", &t);
        g.bump_tables("db", &["c".into()]);
        g.bump_tables("other", &["a".into()]);
        assert_eq!(g.snapshot("db", &t), s0, "other tables and databases do not matter");
        g.bump_tables("db", &["b".into()]);
        let s1 = g.snapshot("db", &t);
        assert_ne!(s1, s0);
        g.bump_database("db");
        assert_ne!(g.snapshot("db", &t), s1);
        let s2 = g.snapshot("db", &t);
        g.bump_all();
        assert_ne!(g.snapshot("db", &t), s2);
    }
}
