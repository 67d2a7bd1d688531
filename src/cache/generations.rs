//! Invalidation by generation counters: a committed write bumps the generation of each table it
//! changed (or of its whole database when pgpilot cannot tell which). An entry remembers the
//! generations it was filled under and is valid only while they are unchanged. This catches
//! fills racing a commit (the snapshot is taken before the query is sent) without scanning the
//! cache, which moka's lazy `invalidate_entries_if` could not promise.
//!
//! Tables are also *watched*: a lookup or a store marks each table it depends on until a
//! deadline (the end of a fill, the end of an entry's life), and a write to a table nobody
//! watches needs no counter (nothing cached or being filled can depend on it). Without Redis
//! (whose replicas may watch it) such a write then costs no key scopes and no bump: a
//! TPC-B-like transaction writes three tables it never reads through the cache.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::scopes::table_of;

/// Tables tracked per database before writes fall back to the database-wide generation.
const MAX_TABLES: usize = 100_000;

#[derive(Default)]
struct Db {
    generation: u64,
    /// Per scope (table, wide or key scope: `scopes`). Shared: a session keeps the ones its
    /// commits bump (`counter`), entries are never removed.
    tables: HashMap<Arc<str>, Arc<AtomicU64>>,
    /// Per table: until when (`clock::now_ms`) an entry or a fill may depend on it. Shared:
    /// a session keeps the ones of the tables it writes (`watch_of`), entries are never removed.
    watched: HashMap<Arc<str>, Arc<AtomicU64>>,
}

#[derive(Default)]
pub struct Generations {
    epoch: AtomicU64,
    dbs: RwLock<HashMap<Arc<str>, Db>>,
}

impl Generations {
    /// [epoch, database generation, one per table]: what an entry must still match to be served.
    /// Marks each table watched until `watch_until` first (under the same lock, before the
    /// counters are read: a write that then finds the table unwatched committed before this).
    pub fn snapshot(&self, db: &str, tables: &[Arc<str>], watch_until: u64) -> Vec<u64> {
        let mut out = Vec::with_capacity(tables.len() + 2);
        out.push(self.epoch.load(Ordering::Acquire));
        let dbs = self.dbs.read();
        if let Some(d) = dbs.get(db).filter(|d| d.mark(tables, watch_until)) {
            out.push(d.generation);
            out.extend(tables.iter().map(|t| d.count(t)));
            return out;
        }
        drop(dbs);
        // A table (or database) seen for the first time: its mark needs the write lock.
        let mut dbs = self.dbs.write();
        let d = Self::db_mut(&mut dbs, db);
        for t in tables {
            d.place(table_of(t));
        }
        d.mark(tables, watch_until);
        out.push(d.generation);
        out.extend(tables.iter().map(|t| d.count(t)));
        out
    }

    /// The watch list of `db`, for several tables under one lock and one lookup of the database
    /// (a commit on the shared path asks for each table it wrote).
    pub fn watching(&self, db: &str, now_ms: u64) -> Watching<'_> {
        let db = parking_lot::RwLockReadGuard::try_map(self.dbs.read(), |dbs| dbs.get(db)).ok();
        Watching { db, now_ms }
    }

    /// The watch deadline of `table` in `db`, to keep and read without a lookup (see `Watch`).
    pub fn watch_of(&self, db: &str, table: &str) -> Watch {
        if let Some(w) = self.dbs.read().get(db).and_then(|d| d.watched.get(table)) {
            return Watch(Some(w.clone()));
        }
        let mut dbs = self.dbs.write();
        Watch(Self::db_mut(&mut dbs, db).place(table).cloned())
    }

    /// The counter of `scope` in `db`, to keep and bump without a lock or a lookup (see
    /// `Counter`); None past the bound (then only `bump_tables` counts a write).
    pub fn counter(&self, db: &str, scope: &Arc<str>) -> Option<Counter> {
        if let Some(d) = self.dbs.read().get(db) {
            match d.tables.get(&**scope) {
                Some(c) => return Some(Counter(c.clone())),
                None if d.tables.len() >= MAX_TABLES => return None, // (entries are never removed)
                None => {}
            }
        }
        let mut dbs = self.dbs.write();
        let d = Self::db_mut(&mut dbs, db);
        if !d.tables.contains_key(&**scope) && d.tables.len() >= MAX_TABLES {
            return None;
        }
        Some(Counter(d.tables.entry(scope.clone()).or_default().clone()))
    }

    fn db_mut<'a>(dbs: &'a mut HashMap<Arc<str>, Db>, db: &str) -> &'a mut Db {
        if !dbs.contains_key(db) {
            dbs.insert(Arc::from(db), Db::default());
        }
        dbs.get_mut(db).expect("inserted above")
    }

    /// Committed writes to `tables` of `db` (take no `Watching` of the same cache meanwhile).
    pub fn bump_tables(&self, db: &str, tables: &[Arc<str>]) {
        // Counters bump under the read lock; only a scope without one yet needs the write lock.
        let mut missing: smallvec::SmallVec<[Arc<str>; 4]> = smallvec::SmallVec::new();
        match self.dbs.read().get(db) {
            Some(d) => {
                for t in tables {
                    match d.tables.get(&**t) {
                        Some(g) => drop(g.fetch_add(1, Ordering::AcqRel)),
                        None => missing.push(t.clone()),
                    }
                }
            }
            None => missing.extend(tables.iter().cloned()),
        }
        if !missing.is_empty() {
            Self::db_mut(&mut self.dbs.write(), db).bump(&missing);
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

impl Db {
    /// Committed writes to `tables` (past `MAX_TABLES` a new one bumps the whole database).
    fn bump(&mut self, tables: &[Arc<str>]) {
        for t in tables {
            let full = self.tables.len() >= MAX_TABLES;
            match self.tables.get(&**t) {
                Some(g) => drop(g.fetch_add(1, Ordering::AcqRel)),
                None if full => self.generation += 1,
                None => drop(self.tables.insert(t.clone(), Arc::new(AtomicU64::new(1)))),
            }
        }
    }

    fn count(&self, scope: &str) -> u64 {
        self.tables.get(scope).map_or(0, |g| g.load(Ordering::Acquire))
    }

    /// `table`'s place in the watch list, made when missing (None past the bound).
    fn place(&mut self, table: &str) -> Option<&Arc<AtomicU64>> {
        if !self.watched.contains_key(table) && self.watched.len() < MAX_TABLES {
            self.watched.insert(Arc::from(table), Arc::default());
        }
        self.watched.get(table)
    }

    /// Marks `names`' tables watched until `until`; false when one has no mark yet (past the
    /// bound a table is not marked: `watched` counts it anyway).
    fn mark(&self, names: &[Arc<str>], until: u64) -> bool {
        let full = self.watched.len() >= MAX_TABLES;
        names.iter().all(|n| match self.watched.get(table_of(n)) {
            Some(w) => {
                // (Read first: every lookup of a hot table passes here, the deadline moves once a tick.)
                if w.load(Ordering::Acquire) < until {
                    w.fetch_max(until, Ordering::AcqRel);
                }
                true
            }
            None => full,
        })
    }
}

/// A deadline not yet passed at `now_ms`; 0 is no deadline (a table written, never read: the
/// clock itself reads 0 in its first millisecond).
fn until_covers(until: &AtomicU64, now_ms: u64) -> bool {
    let until = until.load(Ordering::Acquire);
    until != 0 && until >= now_ms
}

/// One table's watch deadline, held outside the map: `watched` asks no lock and no lookup. None:
/// counts as watched (the list was full when it was asked for, or the holder never asks: a
/// table that does not change alone, `invalidation::TableView`).
#[derive(Clone, Debug)]
pub struct Watch(Option<Arc<AtomicU64>>);

impl Watch {
    /// A table the list has no place for (or one never asked about): it counts as watched.
    pub fn always() -> Watch {
        Watch(None)
    }

    pub fn watched(&self, now_ms: u64) -> bool {
        self.0.as_ref().is_none_or(|until| until_covers(until, now_ms))
    }
}

/// One scope's generation counter held outside the map: a session's commit bumps what it wrote
/// with no lock and no lookup by name. A snapshot reads each counter on its own, so it may see
/// one commit's bumps in part: harmless, as every counter a commit bumps moves after its COMMIT
/// came back, so an entry filled before it still differs on each scope it shares with it.
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// The watch list of one database (see `Generations::watching`; the whole map stays read-locked
/// while it lives, so it must be short-lived).
pub struct Watching<'a> {
    db: Option<parking_lot::MappedRwLockReadGuard<'a, Db>>,
    now_ms: u64,
}

impl Watching<'_> {
    /// Whether a committed write to `table` may leave something cached or being filled stale.
    pub fn watched(&self, table: &str) -> bool {
        let Some(d) = self.db.as_deref() else { return false };
        match d.watched.get(table) {
            Some(until) => until_covers(until, self.now_ms),
            None => d.watched.len() >= MAX_TABLES, // (past the bound, every table counts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_move_with_their_tables_only() {
        let g = Generations::default();
        let t: Vec<Arc<str>> = vec!["a".into(), "b".into()];
        let s0 = g.snapshot("db", &t, 0);
        g.bump_tables("db", &["c".into()]);
        g.bump_tables("other", &["a".into()]);
        assert_eq!(g.snapshot("db", &t, 0), s0, "other tables and databases do not matter");
        g.bump_tables("db", &["b".into()]);
        let s1 = g.snapshot("db", &t, 0);
        assert_ne!(s1, s0);
        g.bump_database("db");
        assert_ne!(g.snapshot("db", &t, 0), s1);
        let s2 = g.snapshot("db", &t, 0);
        g.bump_all();
        assert_ne!(g.snapshot("db", &t, 0), s2);
    }

    #[test]
    fn a_kept_counter_is_the_scope_snapshots_read() {
        let g = Generations::default();
        let a: Arc<str> = Arc::from("a");
        let s0 = g.snapshot("db", std::slice::from_ref(&a), 0);
        let c = g.counter("db", &a).expect("room");
        assert_eq!(g.snapshot("db", std::slice::from_ref(&a), 0), s0, "a counter made is no bump");
        c.bump();
        let s1 = g.snapshot("db", std::slice::from_ref(&a), 0);
        assert_ne!(s1, s0);
        g.bump_tables("db", std::slice::from_ref(&a));
        assert_ne!(g.snapshot("db", std::slice::from_ref(&a), 0), s1, "by name too");
        let many: Vec<Arc<str>> = (0..MAX_TABLES).map(|i| Arc::from(format!("t{i}"))).collect();
        g.bump_tables("db", &many);
        assert!(g.counter("db", &"new".into()).is_none(), "past the bound: no counter");
        assert!(g.counter("db", &a).is_some(), "one that exists is still had");
    }

    #[test]
    fn a_table_is_watched_until_its_deadline() {
        let g = Generations::default();
        let watched = |db: &str, t: &str, now: u64| g.watching(db, now).watched(t);
        assert!(!watched("db", "a", 5), "nothing looked up yet");
        g.snapshot("db", &["a\x1fw".into(), "a\x1fk7".into()], 100);
        assert!(watched("db", "a", 100), "a keyed read watches its table");
        assert!(!watched("db", "a", 101), "until its deadline");
        assert!(!watched("db", "b", 5) && !watched("other", "a", 5));
        g.snapshot("db", &["a".into()], 50);
        assert!(watched("db", "a", 100), "an earlier deadline does not shorten a later one");
        g.snapshot("db", &["a".into()], 300);
        assert!(watched("db", "a", 300));
        let (a, b) = (g.watch_of("db", "a"), g.watch_of("db", "b"));
        assert!(a.watched(300) && !a.watched(301) && !b.watched(5), "a kept watch reads the same deadline");
        assert!(!b.watched(0) && !watched("db", "b", 0), "a place in the list is no watch, even at 0");
        g.snapshot("db", &["b\x1fw".into()], 400);
        assert!(b.watched(400), "a watch kept before the table's first read sees it");
        assert!(Watch::always().watched(u64::MAX));
    }
}
