//! Live counters of one statement shape, shared (through its `Analysis`) by every session that
//! runs it: what per-shape decisions learn from without a lookup of their own. They are not part
//! of what the analysis says about the text, so two analyses compare equal whatever they count.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

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
}

impl Learned {
    pub fn skipped(&self) -> bool {
        self.cache_skipped.load(Relaxed)
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
