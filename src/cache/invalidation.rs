//! What a commit's writes bump: the generation scopes of the tables (or keys) it wrote, where
//! something here or on another replica may depend on them, and the other replicas told.
//!
//! A session keeps what it asks about each table it writes (`TableViews`: the catalog's answers,
//! the table's watch deadline and, without Redis, its counters and write rate: `KeptCounters`),
//! so deciding what its statements note and what its commits bump takes no lock and no lookup
//! by name while the catalog's list is unchanged (with Redis a commit that wrote something
//! watched builds the scopes' names to send, and bumps them by name); invalidations from
//! elsewhere (replication, a reload) and writes that reach beyond their tables take the shared
//! path.

use std::sync::Arc;

use smallvec::SmallVec;

use super::generations::Watch;
use super::kept_counters::KeptCounters;
use super::relations::WriteView;
use super::scopes::{self, Family, WriteKind, Written};
use super::{now_ms, wall_ms, CacheStats, ResultCache};

/// Tables a session keeps views of; a session writing more asks the shared maps for the others.
const MAX_VIEWS: usize = 256;

/// One table as a session's writes see it.
struct TableView {
    name: Arc<str>,
    /// `Relations::version` when `write` was read.
    version: u64,
    write: WriteView,
    watch: Watch,
    kept: KeptCounters,
}

impl TableView {
    fn new(cache: &ResultCache, db: &str, table: &Arc<str>, version: u64) -> TableView {
        let mut write = cache.relations.write_view(db, table);
        // (A name holding the scope separator could share another table's scopes: not alone.)
        write.alone &= !table.contains(scopes::SEP);
        // Only a table that changes alone has its watch matter (for any other, `write_key`'s
        // answer is its key, worth noting anyway, or none, and a commit takes the shared path),
        // so only a listed table gets a place in the watch list: a name written but never
        // listed takes none.
        let watch = if write.alone { cache.gens.watch_of(db, table) } else { Watch::always() };
        TableView { name: table.clone(), version, write, watch, kept: KeptCounters::default() }
    }

    /// A committed write to it must bump counters: something here may depend on it, or (with
    /// Redis) another replica may.
    fn watched(&self, cache: &ResultCache, now_ms: u64) -> bool {
        cache.redis.is_some() || self.watch.watched(now_ms)
    }

    /// Its key column when a write's keys are worth noting: something watches the table, or
    /// foreign-key actions lead from it (which fire depends on the key).
    fn write_key(&self, cache: &ResultCache) -> Option<(Arc<str>, Family)> {
        let worth = self.write.beyond || self.watched(cache, now_ms());
        self.write.key.as_ref().filter(|_| worth).cloned()
    }
}

/// The views of the tables one session (one database) writes.
#[derive(Default)]
pub struct TableViews(Vec<TableView>);

impl TableViews {
    /// Where `table`'s view is, read again when the catalog's list moved; None for a new table
    /// past `MAX_VIEWS`.
    fn index(&mut self, cache: &ResultCache, db: &str, table: &Arc<str>) -> Option<usize> {
        let version = cache.relations.version();
        // (Analyses share names, `sql::names`: the pointer finds it, the bytes only otherwise.)
        let at = self.0.iter().position(|v| Arc::ptr_eq(&v.name, table));
        match at.or_else(|| self.0.iter().position(|v| v.name == *table)) {
            Some(i) if self.0[i].version == version => Some(i),
            Some(i) => {
                self.0[i] = TableView::new(cache, db, table, version);
                Some(i)
            }
            None if self.0.len() < MAX_VIEWS => {
                self.0.push(TableView::new(cache, db, table, version));
                Some(self.0.len() - 1)
            }
            None => None,
        }
    }

    /// The key column of `table` when a write's keys are worth noting (`TableView::write_key`).
    pub fn write_key(&mut self, cache: &ResultCache, db: &str, table: &Arc<str>) -> Option<(Arc<str>, Family)> {
        match self.index(cache, db, table) {
            Some(i) => self.0[i].write_key(cache),
            None => TableView::new(cache, db, table, 0).write_key(cache),
        }
    }

    /// Where each written table's view is, when every one changes only itself (the common
    /// case); None: ask the shared path.
    fn alone(&mut self, cache: &ResultCache, db: &str, written: &[Written]) -> Option<SmallVec<[usize; 8]>> {
        let mut at: SmallVec<[usize; 8]> = SmallVec::with_capacity(written.len());
        for w in written {
            let i = self.index(cache, db, &w.table)?;
            if !self.0[i].write.alone {
                return None;
            }
            at.push(i);
        }
        Some(at)
    }

    /// The scopes a commit of `written` bumps when every table it wrote changes only itself
    /// (the common case); None: ask the shared path.
    fn scopes(&mut self, cache: &ResultCache, db: &str, written: &[Written]) -> Option<Vec<Arc<str>>> {
        let at = self.alone(cache, db, written)?;
        let views = &self.0;
        let (tables, keyed) = split(written, |i, kind| views[at[i]].write.keyed_ok(kind));
        let now = now_ms();
        // (Every table bumped is one of `written`'s, shared: found by pointer.)
        let view_of = |t: &Arc<str>| written.iter().position(|w| Arc::ptr_eq(&w.table, t)).map(|i| &views[at[i]]);
        Some(bumped(&tables, &keyed, |t| view_of(t).is_none_or(|v| v.watched(cache, now))))
    }
}

impl TableViews {
    /// `scopes`' bumps made through the kept counters, with the write rates noted (no Redis:
    /// no names to send). None when a table is not alone (the shared path decides), false when
    /// a counter is past the bound (the scopes by name count the commit; bumping some counters
    /// twice costs only misses).
    fn bump_kept(&mut self, cache: &ResultCache, db: &str, written: &[Written]) -> Option<bool> {
        let at = self.alone(cache, db, written)?;
        // A table written whole anywhere in the commit is bumped whole (its keys need no scope):
        // `split`'s rule, by view (one per table).
        let whole = |j: usize| written[j].key.is_none_or(|(kind, _)| !self.0[at[j]].write.keyed_ok(kind));
        let reached: SmallVec<[usize; 8]> = (0..written.len()).filter(|&j| whole(j)).map(|j| at[j]).collect();
        let (now, wall) = (now_ms(), wall_ms());
        let mut done: SmallVec<[usize; 8]> = SmallVec::new();
        let mut keys: SmallVec<[(usize, u16); 8]> = SmallVec::new(); // (one bump per scope, as `bumped`)
        for (j, w) in written.iter().enumerate() {
            let (i, key) = (at[j], w.key.filter(|_| !reached.contains(&at[j])));
            let v = &mut self.0[i];
            if !v.watched(cache, now) {
                continue;
            }
            if !done.contains(&i) {
                done.push(i);
                if !v.kept.bump_table(cache, db, &w.table, key.is_none()) {
                    return Some(false);
                }
                v.kept.note_rate(cache, db, &w.table, wall);
            }
            if let Some((_, slot)) = key.filter(|&(_, slot)| !keys.contains(&(i, slot))) {
                keys.push((i, slot));
                if !v.kept.bump_key(cache, db, &w.table, slot) {
                    return Some(false);
                }
            }
        }
        Some(true)
    }
}

/// A commit's writes as whole tables and keys (table, kind, slot): a key stays a key only where
/// `keyed_ok` says the write changed no other row of its table.
type Split<'a> = (SmallVec<[Arc<str>; 8]>, SmallVec<[(&'a Arc<str>, WriteKind, u16); 8]>);

fn split(written: &[Written], keyed_ok: impl Fn(usize, WriteKind) -> bool) -> Split<'_> {
    let (mut tables, mut keyed): Split<'_> = Default::default();
    for (i, w) in written.iter().enumerate() {
        match w.key {
            None => tables.push(w.table.clone()),
            Some((kind, slot)) if keyed_ok(i, kind) => keyed.push((&w.table, kind, slot)),
            Some(_) if tables.contains(&w.table) => {}
            Some(_) => tables.push(w.table.clone()),
        }
    }
    (tables, keyed)
}

/// The scopes to bump: each reached table whole (and its wide scope), each keyed write's key
/// where its table was not reached; only what is `watched`.
fn bumped(
    reached: &[Arc<str>],
    keyed: &[(&Arc<str>, WriteKind, u16)],
    watched: impl Fn(&Arc<str>) -> bool,
) -> Vec<Arc<str>> {
    let mut out = Vec::with_capacity(2 * reached.len() + 2 * keyed.len());
    for (n, t) in reached.iter().enumerate().filter(|(_, t)| watched(t)) {
        if !reached[..n].contains(t) {
            out.push(t.clone());
            out.push(scopes::wide(t));
        }
    }
    for &(t, _, slot) in keyed {
        if reached.contains(t) || !watched(t) {
            continue; // written as a whole (a cascade from another keyed write, or by name), or unwatched
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
        let scope = scopes::key_scope(t, slot.into());
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    out
}

impl ResultCache {
    /// A commit made these writes to `db`; None: unknown tables, the whole database. Local
    /// entries are invalid at once; Redis and the other replicas are told before returning.
    pub async fn invalidate(&self, db: &str, written: Option<&[Written]>) {
        let bumped = written.and_then(|w| self.scopes_of(db, w));
        self.apply(db, written, bumped).await;
    }

    /// `invalidate` for a session's commit, its tables' views kept in `views`.
    pub async fn invalidate_seen(&self, db: &str, written: &[Written], views: &mut TableViews) {
        let bumped = match self.redis.is_none().then(|| views.bump_kept(self, db, written)) {
            Some(Some(true)) => {
                CacheStats::add(&self.stats.invalidations, written.len() as u64);
                return;
            }
            Some(None) => self.scopes_of(db, written), // (a table not alone: the views cannot answer)
            _ => views.scopes(self, db, written).or_else(|| self.scopes_of(db, written)),
        };
        self.apply(db, Some(written), bumped).await;
    }

    async fn apply(&self, db: &str, written: Option<&[Written]>, bumped: Option<Vec<Arc<str>>>) {
        let scopes = bumped.as_deref();
        // Rates matter only for what may be cached: the watched tables (the plain names; none
        // watched, the common commit: no lock).
        match (scopes, written) {
            (Some([]), _) => {}
            (Some(s), _) => self.write_rates.note(db, s.iter().filter(|n| !n.contains(scopes::SEP)), wall_ms()),
            (None, Some(w)) => self.write_rates.note(db, w.iter().map(|w| &w.table), wall_ms()),
            (None, None) => {}
        }
        match scopes {
            Some([]) => {} // (nothing watched was written)
            Some(s) => self.gens.bump_tables(db, s),
            None => self.gens.bump_database(db),
        }
        CacheStats::add(&self.stats.invalidations, written.map_or(1, |w| w.len() as u64));
        if let Some(r) = &self.redis {
            r.invalidate(db, scopes).await;
        }
    }

    /// The generation scopes a commit of these writes bumps (None: the whole database). A key
    /// stays a key only where `relations` says the write changed no other row of its table;
    /// what a write reaches beyond its table (cascades) is table-level; in doubt, tables. A
    /// table nothing watches bumps nothing (`generations`).
    fn scopes_of(&self, db: &str, written: &[Written]) -> Option<Vec<Arc<str>>> {
        if written.iter().any(|w| w.table.contains(scopes::SEP)) {
            return None; // (its scopes could be another table's)
        }
        let (tables, keyed) = split(written, |i, kind| self.relations.keyed_write_ok(db, &written[i].table, kind));
        let reached = self.relations.reach(db, keyed.iter().map(|(t, kind, _)| (&***t, *kind)), tables.into_vec())?;
        let watching = self.gens.watching(db, now_ms());
        Some(bumped(&reached, &keyed, |t| self.redis.is_some() || watching.watched(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheConfig, StrategyConfig};

    fn row(name: &str, kind: &str, target: &str) -> (String, String, String) {
        (name.to_string(), kind.to_string(), target.to_string())
    }

    fn plain() -> Vec<(String, String, String)> {
        let mut rows = vec![row("t", "r", ""), row("t", "pkey:23", "id"), row("u", "r", ""), row("u", "pkey:23", "id")];
        rows.extend([row("p", "r", ""), row("p", "pkey:23", "id"), row("c", "r", ""), row("p", "cascade", "c")]);
        rows
    }

    fn cache(rows: Vec<(String, String, String)>) -> ResultCache {
        let c = ResultCache::new(&CacheConfig::default(), &StrategyConfig::default()).expect("cache");
        c.relations.finish_load("db", Some(rows), 1);
        c
    }

    #[test]
    fn a_view_follows_the_watch_and_the_catalog() {
        let c = cache(plain());
        let (mut views, t): (TableViews, Arc<str>) = (TableViews::default(), Arc::from("t"));
        assert_eq!(views.write_key(&c, "db", &t), None, "nothing watches t: its keys are not worth noting");
        c.gens.snapshot("db", std::slice::from_ref(&t), u64::MAX);
        assert_eq!(views.write_key(&c, "db", &t), Some((Arc::from("id"), Family::Int)), "a read watches it now");
        let written = [Written::key(&t, WriteKind::Update, b"1")];
        let (_, slot) = written[0].key.unwrap();
        let expected = vec![t.clone(), scopes::key_scope("t", slot.into())];
        assert_eq!(views.scopes(&c, "db", &written), Some(expected.clone()), "t changes only itself");
        assert_eq!(c.scopes_of("db", &written), Some(expected), "as the shared path says");
        let mut rows = plain();
        rows.push(row("t", "trigger", ""));
        c.relations.finish_load("db", Some(rows), 2);
        assert_eq!(views.scopes(&c, "db", &written), None, "a trigger since: the shared path decides");
        assert_eq!(c.scopes_of("db", &written), None, "which invalidates the whole database");
    }

    /// Wherever the kept views answer, they answer what the shared path does: before and after
    /// DDL, for keys of every kind, tables that cascade (on delete, on update, back to
    /// themselves), a view, a trigger and an unlisted name.
    #[test]
    fn views_agree_with_the_shared_path() {
        let mut rows = plain();
        rows.extend([row("s", "r", ""), row("s", "pkey:23", "id"), row("s", "cascade", "s"), row("v", "v", "")]);
        rows.extend([row("q", "r", ""), row("q", "pkey:23", "id"), row("q", "ucascade", "c"), row("g", "r", "")]);
        rows.push(row("g", "trigger", ""));
        let c = cache(rows);
        let names: Vec<Arc<str>> = ["t", "u", "p", "c", "s", "v", "q", "g", "unlisted"].map(Arc::from).to_vec();
        c.gens.snapshot("db", &[names[0].clone(), names[2].clone(), names[3].clone()], u64::MAX);
        let mut views = TableViews::default();
        let mut answered = 0;
        for stale in [false, true] {
            if stale {
                c.relations.mark_stale("db");
            }
            for (i, a) in names.iter().enumerate() {
                for (j, b) in names.iter().enumerate() {
                    for kind in [WriteKind::Update, WriteKind::Delete, WriteKind::Insert] {
                        let mut written = vec![Written::key(a, kind, i.to_string().as_bytes())];
                        written.push(if j % 2 == 0 { Written::table(b.clone()) } else { Written::key(b, kind, b"7") });
                        if let Some(fast) = views.scopes(&c, "db", &written) {
                            assert_eq!(Some(fast), c.scopes_of("db", &written), "stale {stale}: {written:?}");
                            answered += 1;
                        }
                    }
                }
            }
        }
        assert!(answered >= 40, "the views answered {answered} of 486");
    }

    /// The kept counters bump what the named scopes would: two caches alike, one commit by
    /// each path, every scope involved compared after each (bumped alike, or both unmoved).
    #[test]
    fn kept_counters_bump_what_the_names_would() {
        let mut rows = plain();
        rows.extend([row("s", "r", ""), row("s", "pkey:23", "id"), row("s", "cascade", "s")]);
        let (kept, named) = (cache(rows.clone()), cache(rows));
        let names: Vec<Arc<str>> = ["t", "u", "p", "c", "s", "unlisted"].map(Arc::from).to_vec();
        for c in [&kept, &named] {
            c.gens.snapshot("db", &[names[0].clone(), names[2].clone(), names[4].clone()], u64::MAX);
        }
        let mut views = TableViews::default();
        let mut bumped = 0;
        for (i, a) in names.iter().enumerate() {
            for (j, b) in names.iter().enumerate() {
                for kind in [WriteKind::Update, WriteKind::Delete, WriteKind::Insert] {
                    let mut written = vec![Written::key(a, kind, i.to_string().as_bytes())];
                    written.push(match j % 3 {
                        0 => Written::table(b.clone()),
                        1 => Written::key(b, kind, b"7"),
                        _ => Written::key(a, WriteKind::Delete, i.to_string().as_bytes()), // (one key twice)
                    });
                    let scopes = views.scopes(&kept, "db", &written);
                    if views.bump_kept(&kept, "db", &written) != Some(true) {
                        assert_eq!(scopes, None, "the kept path declines only where the views do: {written:?}");
                        continue;
                    }
                    let expected = named.scopes_of("db", &written).expect("answered by the views");
                    named.gens.bump_tables("db", &expected);
                    named.write_rates.note("db", expected.iter().filter(|n| !n.contains(scopes::SEP)), wall_ms());
                    for t in &names {
                        let (k, n) = (kept.write_rates.knows("db", t), named.write_rates.knows("db", t));
                        assert_eq!(k, n, "{t}'s write rate after {written:?}");
                    }
                    bumped += !expected.is_empty() as usize;
                    let mut all: Vec<Arc<str>> = names.iter().flat_map(|t| [t.clone(), scopes::wide(t)]).collect();
                    all.extend(written.iter().filter_map(|w| Some(scopes::key_scope(&w.table, w.key?.1.into()))));
                    let (k, n) = (kept.gens.snapshot("db", &all, 0), named.gens.snapshot("db", &all, 0));
                    assert_eq!(k, n, "{written:?} bumps {expected:?}");
                }
            }
        }
        assert!(bumped >= 10, "{bumped} commits bumped something");
    }
}
