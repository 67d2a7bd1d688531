//! One session's view of the shared analyzer, with the last few analyses it looked up kept at
//! hand. The shared cache (moka) records every read for its eviction policy, which costs ~950
//! instructions per lookup (callgrind, pgbench -S simple: 5% of a transaction); a session mostly
//! repeats a handful of statement shapes, so a small direct-mapped table answers first.
//!
//! One hit in `RECHECK` per slot still goes to the shared cache: its eviction policy keeps seeing
//! that the shape is used, and a session holding an analysis the shared cache lost (evicted, then
//! parsed again by another session) converges on one copy, so every session's runs of a shape
//! share one `Learned` (pins, slow lane, admission counts).

use std::sync::Arc;

use super::{tokens, Analysis, Analyzed, Analyzer};

/// Slots of the table (the key is a seeded 128-bit hash, so its low bits pick the slot).
const SLOTS: usize = 8;
/// Every this many hits on a slot, the shared cache is asked again.
const RECHECK: u8 = 64;

pub struct LocalAnalyzer {
    shared: Arc<Analyzer>,
    /// (shape key, analysis, hits since the shared cache was last asked)
    recent: [Option<(u128, Arc<Analysis>, u8)>; SLOTS],
}

impl LocalAnalyzer {
    pub fn new(shared: Arc<Analyzer>) -> Self {
        Self { shared, recent: Default::default() }
    }

    pub fn shared(&self) -> &Arc<Analyzer> {
        &self.shared
    }

    /// Asks the shared cache again for a shape this session holds the analysis of (what a slot
    /// does every `RECHECK` hits), for a holder that skips the slots (`frontend::known_texts`).
    pub fn refresh(&self, key: u128, analysis: &mut Arc<Analysis>) {
        refresh_in(&self.shared, key, analysis);
    }

    /// As `Analyzer::cached_shapes`, this session's recent shapes first.
    pub fn cached_shapes(&mut self, sql: &str, shapes: &[tokens::Shape]) -> Option<Analyzed> {
        // A plain loop into an exact-size list (an Option-collecting iterator costs ~70 more).
        let mut out = Analyzed::with_capacity(shapes.len());
        for shape in shapes {
            let key = self.shared.key(shape);
            let slot = &mut self.recent[key as usize % SLOTS];
            let analysis = match slot {
                Some((k, a, hits)) if *k == key && *hits < RECHECK => {
                    *hits += 1;
                    a.clone()
                }
                Some((k, a, hits)) if *k == key => {
                    *hits = 0;
                    refresh_in(&self.shared, key, a);
                    a.clone()
                }
                _ => {
                    let a = self.shared.cache.get(&key)?;
                    *slot = Some((key, a.clone(), 0));
                    a
                }
            };
            let piece = sql[shape.start..shape.end].trim();
            out.push((analysis, tokens::params_hash(piece.as_bytes())));
        }
        Some(out)
    }
}

/// The shared cache's copy of a shape's analysis, or this one given back to it.
fn refresh_in(shared: &Analyzer, key: u128, analysis: &mut Arc<Analysis>) {
    match shared.cache.get(&key) {
        Some(theirs) => *analysis = theirs,
        None => shared.cache.insert(key, analysis.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::LocalAnalyzer;
    use crate::sql::{tokens::shapes, Analyzer};

    #[test]
    fn recent_shapes_answer_and_others_go_to_the_shared_cache() {
        let shared = Arc::new(Analyzer::new(100));
        let mut local = LocalAnalyzer::new(shared.clone());
        let (a, b) = ("SELECT v FROM t WHERE k = 1", "SELECT v FROM t WHERE k = 2");
        assert!(local.cached_shapes(a, &shapes(a)).is_none(), "never analyzed: the parser's turn");
        let parsed = shared.analyze_all(a);
        let first = local.cached_shapes(a, &shapes(a)).expect("in the shared cache");
        assert!(Arc::ptr_eq(&first[0].0, &parsed[0].0));
        // Gone from the shared cache, the shape is still this session's.
        shared.cache.invalidate_all();
        let again = local.cached_shapes(b, &shapes(b)).expect("answered from the recent table");
        assert!(Arc::ptr_eq(&again[0].0, &parsed[0].0));
        assert_ne!(again[0].1, first[0].1, "the literal text's hash is this text's");
        let other = "SELECT w FROM u";
        assert!(local.cached_shapes(other, &shapes(other)).is_none());
    }

    #[test]
    fn a_shape_the_shared_cache_lost_is_given_back_and_a_reparsed_one_adopted() {
        let shared = Arc::new(Analyzer::new(100));
        let mut local = LocalAnalyzer::new(shared.clone());
        let a = "SELECT v FROM t WHERE k = 1";
        let parsed = shared.analyze_all(a)[0].0.clone();
        local.cached_shapes(a, &shapes(a)).expect("in the shared cache");
        shared.cache.invalidate_all();
        for _ in 0..=super::RECHECK {
            local.cached_shapes(a, &shapes(a)).expect("this session's");
        }
        let back = shared.cache.get(&shared.key(&shapes(a)[0])).expect("given back to the shared cache");
        assert!(Arc::ptr_eq(&back, &parsed), "the session's copy, with its Learned");
        // Another session parsed the shape again after an eviction: this one adopts that copy.
        shared.cache.invalidate_all();
        let reparsed = shared.analyze_all(a)[0].0.clone();
        assert!(!Arc::ptr_eq(&reparsed, &parsed));
        let mut seen = Vec::new();
        for _ in 0..=super::RECHECK {
            seen.push(local.cached_shapes(a, &shapes(a)).expect("answered")[0].0.clone());
        }
        assert!(Arc::ptr_eq(seen.last().unwrap(), &reparsed), "converged on the shared copy");
    }
}
