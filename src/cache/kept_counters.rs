//! What a session keeps of one table it writes to note its commits without a lock: the
//! generation counters of the table's scopes (`generations::Counter`) and its write rate
//! (`write_rate::Rate`). A watched table's commit otherwise took the write rates' mutex and the
//! generations' lock, looked the database and each scope up by name, and built the key scope's
//! name (~650 instructions per TPC-B-like transaction, whose branch table a cached read
//! watches). Only without Redis: the other replicas are told scope names.

use std::sync::Arc;

use smallvec::SmallVec;

use super::generations::Counter;
use super::scopes;
use super::write_rate::Rate;
use super::ResultCache;

/// Key scopes' counters kept per table, the oldest replaced past it (a table written at more
/// keys asks the shared map for the others: a read lock, a lookup and the key scope's name, the
/// write lock for a scope never bumped before).
const KEYS_KEPT: usize = 16;

#[derive(Default)]
pub struct KeptCounters {
    whole: Option<Counter>,
    wide: Option<Counter>,
    keys: SmallVec<[(u16, Counter); 4]>,
    /// The next of `keys` to replace once it is full.
    next: usize,
    /// The table's write rate and the write rates' restart count it belongs to.
    rate: Option<(Arc<Rate>, u64)>,
}

impl KeptCounters {
    /// Bumps `t` (its counter, and its wide scope's when `wide`); false when the generations'
    /// list is full (then the named path counts the commit).
    pub fn bump_table(&mut self, cache: &ResultCache, db: &str, t: &Arc<str>, wide: bool) -> bool {
        let Some(whole) = counter(&mut self.whole, cache, db, || t.clone()) else { return false };
        whole.bump();
        if wide {
            let Some(w) = counter(&mut self.wide, cache, db, || scopes::wide(t)) else { return false };
            w.bump();
        }
        true
    }

    /// Bumps the scope of key `slot` of `t`; false as `bump_table`.
    pub fn bump_key(&mut self, cache: &ResultCache, db: &str, t: &Arc<str>, slot: u16) -> bool {
        if let Some((_, c)) = self.keys.iter().find(|(s, _)| *s == slot) {
            c.bump();
            return true;
        }
        let Some(c) = cache.gens.counter(db, &scopes::key_scope(t, slot.into())) else { return false };
        c.bump();
        if self.keys.len() < KEYS_KEPT {
            self.keys.push((slot, c));
        } else {
            self.keys[self.next] = (slot, c);
            self.next = (self.next + 1) % KEYS_KEPT;
        }
        true
    }

    /// A committed write to `t` at `wall_ms`, for its write rate.
    pub fn note_rate(&mut self, cache: &ResultCache, db: &str, t: &Arc<str>, wall_ms: u64) {
        match &self.rate {
            Some((rate, restarts)) if cache.write_rates.current(*restarts) => rate.note(wall_ms),
            _ => self.rate = Some(cache.write_rates.note_kept(db, t, wall_ms)),
        }
    }
}

/// The counter kept in `slot`, asked for (by `name`) the first time.
fn counter<'a>(
    slot: &'a mut Option<Counter>,
    cache: &ResultCache,
    db: &str,
    name: impl FnOnce() -> Arc<str>,
) -> Option<&'a Counter> {
    if slot.is_none() {
        *slot = cache.gens.counter(db, &name());
    }
    slot.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheConfig, StrategyConfig};

    #[test]
    fn keys_past_those_kept_and_a_rate_past_a_restart_still_count() {
        let c = ResultCache::new(&CacheConfig::default(), &StrategyConfig::default()).expect("cache");
        let t: Arc<str> = Arc::from("t");
        let mut kept = KeptCounters::default();
        let names: Vec<Arc<str>> = (0..40u64).map(|slot| scopes::key_scope(&t, slot)).collect();
        let before = c.gens.snapshot("db", &names, 0);
        for _ in 0..2 {
            for slot in 0..40 {
                assert!(kept.bump_key(&c, "db", &t, slot));
            }
        }
        let after = c.gens.snapshot("db", &names, 0);
        let moved: Vec<u64> = after.iter().zip(&before).skip(2).map(|(a, b)| a - b).collect();
        assert_eq!(moved, vec![2; 40], "each key bumped twice, kept or not");
        assert_eq!(kept.keys.len(), KEYS_KEPT);
        kept.note_rate(&c, "db", &t, 1000);
        assert!(c.write_rates.knows("db", "t"));
        let many: Vec<Arc<str>> = (0..10_000).map(|i| Arc::from(format!("u{i}"))).collect();
        c.write_rates.note("db", &many, 1000);
        c.write_rates.note("db", &many[..1], 2000); // (the map, full, starts over)
        assert!(!c.write_rates.knows("db", "t"));
        kept.note_rate(&c, "db", &t, 3000);
        assert!(c.write_rates.knows("db", "t"), "a kept rate from before the restart is asked for again");
    }
}
