//! Live counters of one statement shape, shared (through its `Analysis`) by every session that
//! runs it: what per-shape decisions learn from without a lookup of their own. They are not part
//! of what the analysis says about the text, so two analyses compare equal whatever they count.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Updated with relaxed atomics by many sessions at once: a repeat counted just as a window
/// closes may land in the next one, which no decision here is sensitive to.
#[derive(Default)]
pub struct Learned {
    /// Runs the result cache looked at in the current window.
    pub runs: AtomicU32,
    /// Of those, runs whose parameters were seen recently (a result cache could have answered).
    pub repeats: AtomicU32,
    /// Of those, runs answered from the cache.
    pub hits: AtomicU32,
    /// Smoothed time a cache miss took from lookup to stored result, in microseconds: what a hit
    /// saves.
    pub miss_us: AtomicU32,
    /// The cache looks past this shape (its results do not repeat enough to pay for the lookup).
    pub cache_skipped: AtomicBool,
    /// Wall-clock ms when `cache_skipped` last changed (0: never): /queries' `since`.
    pub skipped_changed_ms: AtomicU64,
    /// Row-limited misses whose rest did not fit an entry (more rows than the continuation
    /// fetches, or too many bytes) since one was last stored.
    pub cut_short: AtomicU32,
}

impl Learned {
    pub fn skipped(&self) -> bool {
        self.cache_skipped.load(Relaxed)
    }

    /// Whether a row-limited miss of this shape is worth fetching whole for the cache: not
    /// after three that could not be stored, except one run in 64 (the data may have shrunk).
    pub fn worth_continuing(&self) -> bool {
        self.cut_short.load(Relaxed) < 3 || self.runs.load(Relaxed) % 64 == 0
    }
}

impl PartialEq for Learned {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Learned {}

impl std::fmt::Debug for Learned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Learned(runs {}, skipped {})", self.runs.load(Relaxed), self.skipped())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_cut_short_three_times_is_continued_once_in_64_runs() {
        let l = Learned::default();
        l.runs.store(5, Relaxed);
        for _ in 0..2 {
            l.cut_short.fetch_add(1, Relaxed);
            assert!(l.worth_continuing());
        }
        l.cut_short.fetch_add(1, Relaxed);
        assert!(!l.worth_continuing());
        l.runs.store(64, Relaxed);
        assert!(l.worth_continuing(), "tried again now and then");
        l.runs.store(65, Relaxed);
        l.cut_short.store(0, Relaxed);
        assert!(l.worth_continuing(), "a stored entry resets the count");
    }
}
