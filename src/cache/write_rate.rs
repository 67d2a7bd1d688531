//! How often each watched table (`generations`: one a cached result may depend on) is written
//! (commits pgpilot saw or read from the replication stream):
//! the TTL of a result is a few of its tables' mean intervals between writes, bounded by the
//! configured TTL. A table written every second keeps its results for seconds, not the 300 s
//! default: an entry there would be invalidated soon anyway, so a long TTL only bounds what a
//! write pgpilot does not see (another writer) could leave stale, and holds memory for nothing.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::scopes::table_of;

/// Tables tracked; past this the map starts over (a database with more tables than this gets
/// the configured TTL for those not written lately).
const MAX_TABLES: usize = 10_000;
/// Writes closer than this count as one: a transaction's statements, and the replication
/// stream's second invalidation of the same commit (`visibility`), are one write to a table.
const BURST_MS: u64 = 100;
/// Below this a TTL gains nothing (the cache's own lookups take longer to pay back).
const MIN_TTL: Duration = Duration::from_secs(1);

/// One table's writes. Atomics, not a value under the map's lock: a session keeps the rate of
/// each table it writes (`note_kept`) and notes a commit with no lock and no lookup; one within
/// `BURST_MS` of the last (most of a busy table's) is a load and a compare.
pub struct Rate {
    last_ms: AtomicU64,
    /// Smoothed interval between writes (1/4 weight to the newest), ms; 0 until a second write.
    interval_ms: AtomicU64,
}

impl Rate {
    fn starting(now_ms: u64) -> Arc<Rate> {
        Arc::new(Rate { last_ms: AtomicU64::new(now_ms), interval_ms: AtomicU64::new(0) })
    }

    /// A committed write at `now_ms`: counted unless within `BURST_MS` of the last one counted.
    pub fn note(&self, now_ms: u64) {
        let mut last = self.last_ms.load(Relaxed);
        loop {
            let gap = now_ms.saturating_sub(last);
            if gap < BURST_MS {
                return;
            }
            match self.last_ms.compare_exchange_weak(last, now_ms, Relaxed, Relaxed) {
                Ok(_) => {
                    let smoothed = |old: u64| Some(if old == 0 { gap } else { old - old / 4 + gap / 4 });
                    let _ = self.interval_ms.fetch_update(Relaxed, Relaxed, smoothed);
                    return;
                }
                Err(seen) => last = seen, // (another note came first: the gap is from it now)
            }
        }
    }
}

/// A database's tables.
type Tables = HashMap<Arc<str>, Arc<Rate>>;

/// Per database, per table: looked up by `&str`, so a store allocates nothing.
#[derive(Default)]
pub struct WriteRates {
    tables: Mutex<HashMap<Arc<str>, Tables>>,
    count: AtomicUsize,
    /// How many times the map started over: a kept `Rate` from before is no longer read.
    restarts: AtomicU64,
}

impl WriteRates {
    /// Committed writes to these tables (or generation scopes of them) of `db` at `now_ms`.
    pub fn note<'a>(&self, db: &str, names: impl IntoIterator<Item = &'a Arc<str>>, now_ms: u64) {
        self.in_db(db, |tables, count, _| {
            for name in names {
                Self::note_one(tables, count, name, now_ms);
            }
        })
    }

    /// Runs `f` on `db`'s tables (made at its first write) under the lock, with the restart
    /// count they belong to: the one get-or-insert both notes share.
    fn in_db<R>(&self, db: &str, f: impl FnOnce(&mut Tables, &AtomicUsize, u64) -> R) -> R {
        let mut map = self.tables.lock();
        self.restart_if_full(&mut map);
        let restarts = self.restarts.load(Relaxed);
        // (One lookup of the database when it is there, as it is after the first commit.)
        let tables = match map.get_mut(db) {
            Some(tables) => tables,
            None => map.entry(Arc::from(db)).or_default(),
        };
        f(tables, &self.count, restarts)
    }

    fn restart_if_full(&self, map: &mut HashMap<Arc<str>, Tables>) {
        if self.count.load(Relaxed) >= MAX_TABLES {
            map.clear();
            self.count.store(0, Relaxed);
            self.restarts.fetch_add(1, Relaxed);
        }
    }

    /// A write to the table of `name` (a table or one of its scopes): its rate, made at the first.
    fn note_one<'t>(tables: &'t mut Tables, count: &AtomicUsize, name: &str, now_ms: u64) -> &'t Arc<Rate> {
        let table = table_of(name);
        if let Some(rate) = tables.get(table) {
            rate.note(now_ms);
        } else {
            count.fetch_add(1, Relaxed);
            tables.insert(Arc::from(table), Rate::starting(now_ms));
        }
        &tables[table]
    }

    /// `note` for one table, whose rate is returned to keep and note without a lock, with the
    /// restart count it belongs to (`current`).
    pub fn note_kept(&self, db: &str, table: &str, now_ms: u64) -> (Arc<Rate>, u64) {
        self.in_db(db, |tables, count, restarts| (Self::note_one(tables, count, table, now_ms).clone(), restarts))
    }

    /// Whether `table` of `db` has a rate (a write noted since the map last started over).
    #[cfg(test)]
    pub fn knows(&self, db: &str, table: &str) -> bool {
        self.tables.lock().get(db).is_some_and(|t| t.contains_key(table))
    }

    /// A `Rate` kept since `restarts` is still the one `bound` reads.
    pub fn current(&self, restarts: u64) -> bool {
        self.restarts.load(Relaxed) == restarts
    }

    /// `ttl` shortened to `intervals` mean write intervals of the most written of `tables` (at
    /// least `MIN_TTL`). A table quiet for longer than its interval counts its quiet time: writes
    /// that stop do not keep its TTL short.
    pub fn bound(&self, db: &str, tables: &[Arc<str>], ttl: Duration, intervals: u32, now_ms: u64) -> Duration {
        if intervals == 0 || tables.is_empty() {
            return ttl;
        }
        let map = self.tables.lock();
        let Some(known) = map.get(db) else { return ttl };
        let shortest = tables
            .iter()
            .filter_map(|t| known.get(table_of(t)))
            .map(|r| (r.interval_ms.load(Relaxed), r.last_ms.load(Relaxed)))
            .filter(|&(interval, _)| interval > 0)
            .map(|(interval, last)| interval.max(now_ms.saturating_sub(last)))
            .min();
        match shortest {
            Some(ms) => ttl.min(Duration::from_millis(ms.saturating_mul(intervals as u64)).max(MIN_TTL)),
            None => ttl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<Arc<str>> {
        n.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn a_table_written_every_second_gets_a_ttl_of_ten_seconds() {
        let w = WriteRates::default();
        for i in 0..20 {
            w.note("db", &names(&["items"]), 1_000_000 + i * 1000);
        }
        let ttl = w.bound("db", &names(&["items", "quiet"]), Duration::from_secs(300), 10, 1_019_500);
        assert_eq!(ttl, Duration::from_secs(10));
    }

    #[test]
    fn unwritten_tables_keep_the_configured_ttl_and_quiet_ones_get_longer() {
        let w = WriteRates::default();
        assert_eq!(w.bound("db", &names(&["t"]), Duration::from_secs(300), 10, 5), Duration::from_secs(300));
        w.note("db", &names(&["t"]), 1000);
        assert_eq!(w.bound("db", &names(&["t"]), Duration::from_secs(300), 10, 1500), Duration::from_secs(300));
        w.note("db", &names(&["t"]), 1050);
        assert_eq!(
            w.bound("db", &names(&["t"]), Duration::from_secs(300), 10, 1060),
            Duration::from_secs(300),
            "one burst"
        );
        w.note("db", &names(&["t"]), 1100);
        assert_eq!(w.bound("db", &names(&["t"]), Duration::from_secs(300), 10, 1200), MIN_TTL, "at least 1 s");
        let later = w.bound("db", &names(&["t"]), Duration::from_secs(300), 10, 61_100);
        assert_eq!(later, Duration::from_secs(300), "quiet for a minute: the configured TTL again");
        assert_eq!(w.bound("other", &names(&["t"]), Duration::from_secs(300), 10, 1200), Duration::from_secs(300));
    }

    #[test]
    fn a_kept_rate_is_the_one_bound_reads_until_the_map_starts_over() {
        let w = WriteRates::default();
        let t: Arc<str> = Arc::from("t");
        let (rate, restarts) = w.note_kept("db", &t, 1000);
        rate.note(1050);
        rate.note(2000);
        assert_eq!(w.bound("db", &names(&["t"]), Duration::from_secs(300), 10, 2000), Duration::from_secs(10));
        w.note("db", &names(&["t"]), 4000);
        assert_eq!(rate.last_ms.load(Relaxed), 4000, "a note by name is the kept rate's");
        let (again, _) = w.note_kept("db", &t, 4050);
        assert!(Arc::ptr_eq(&rate, &again) && w.current(restarts), "one rate, by name or kept");
        assert_eq!(rate.interval_ms.load(Relaxed), 1250, "the note by name counted, the one within a burst not");
        w.count.store(MAX_TABLES, Relaxed);
        w.note("db", &names(&["u"]), 4000);
        assert!(!w.current(restarts), "started over: the kept rate is no longer read");
        rate.note(9000);
        assert_eq!(w.bound("db", &names(&["t"]), Duration::from_secs(300), 10, 9000), Duration::from_secs(300));
    }

    #[test]
    fn keyed_writes_count_for_their_table() {
        let w = WriteRates::default();
        w.note("db", &names(&["t\u{1f}u7"]), 0);
        w.note("db", &names(&["t"]), 2000);
        assert_eq!(w.bound("db", &names(&["t"]), Duration::from_secs(300), 10, 2000), Duration::from_secs(20));
        assert_eq!(
            w.bound("db", &names(&["t", "t\u{1f}k3"]), Duration::from_secs(300), 0, 2000),
            Duration::from_secs(300)
        );
    }
}
