//! One session's view of the shared analyzer, with the last few analyses it looked up kept at
//! hand. The shared cache (moka) records every read for its eviction policy, which costs ~950
//! instructions per lookup (callgrind, pgbench -S simple: 5% of a transaction); a session mostly
//! repeats a handful of statement shapes, so a small direct-mapped table answers first.
//!
//! Shapes answered here are not counted as reads by the shared cache: under pressure it may
//! evict a shape that sessions keep using; they keep their copy, and a new session parses it once.

use std::sync::Arc;

use super::{tokens, Analysis, Analyzed, Analyzer};

/// Slots of the table (the key is a seeded 128-bit hash, so its low bits pick the slot).
const SLOTS: usize = 8;

pub struct LocalAnalyzer {
    shared: Arc<Analyzer>,
    recent: [Option<(u128, Arc<Analysis>)>; SLOTS],
}

impl LocalAnalyzer {
    pub fn new(shared: Arc<Analyzer>) -> Self {
        Self { shared, recent: Default::default() }
    }

    pub fn shared(&self) -> &Arc<Analyzer> {
        &self.shared
    }

    /// As `Analyzer::cached_shapes`, this session's recent shapes first.
    pub fn cached_shapes(&mut self, sql: &str, shapes: &[tokens::Shape]) -> Option<Analyzed> {
        shapes
            .iter()
            .map(|shape| {
                let key = self.shared.key(shape);
                let slot = &mut self.recent[key as usize % SLOTS];
                let analysis = match slot {
                    Some((k, a)) if *k == key => a.clone(),
                    _ => {
                        let a = self.shared.cache.get(&key)?;
                        *slot = Some((key, a.clone()));
                        a
                    }
                };
                let piece = sql[shape.start..shape.end].trim();
                Some((analysis, tokens::fnv1a(piece.as_bytes())))
            })
            .collect()
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
}
