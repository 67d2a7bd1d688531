//! Live counters of one statement shape, shared (through its `Analysis`) by every session that
//! runs it: what per-shape decisions learn from without a lookup of their own. They are not part
//! of what the analysis says about the text, so two analyses compare equal whatever they count.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// Where a shape's server-prepared trial stands (`prepared::adaptive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreparedPhase {
    /// Runs alternate between as the client sent them (unnamed) and served from a
    /// server-prepared statement, and both are timed.
    Measuring = 0,
    /// Server-prepared was no slower: repeated unnamed Parses are served from it.
    Kept = 2,
    /// It was slower: they go to the server as sent.
    Dropped = 3,
}

/// The latest server times (µs) of a shape's runs on each side of the server-prepared trial,
/// each side a ring of its most recent samples (`prepared::adaptive` fills and reads them).
#[derive(Debug, Default)]
pub struct PreparedSamples {
    pub as_sent: std::collections::VecDeque<u32>,
    pub prepared: std::collections::VecDeque<u32>,
}

/// A strategy an operator pinned on a shape (`[[strategy.pins]]`, set by the strategy tick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    /// Always looked up in the result cache.
    Cache,
    /// Never looked up, never in the slow lane.
    PassThrough,
    /// Always in the slow lane.
    SlowLane,
}

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
    /// `[[strategy.pins]]` over this shape (0: none; else 1 + the pinned strategy's index), set
    /// by the strategy tick.
    pinned: AtomicU8,
    /// The shape runs long against its pool's others: it takes its connection in the slow lane.
    pub slow_lane: AtomicBool,
    /// Wall-clock ms when `slow_lane` last changed (0: never).
    pub lane_changed_ms: AtomicU64,
    /// The shape arrives in unnamed Parses (what the server-prepared strategy is about).
    pub unnamed: AtomicBool,
    /// The server-prepared trial (`prepared::adaptive`): phase, the alternation's turn, the
    /// samples being gathered, each side's typical server time (µs) at the last decision,
    /// and when the phase last changed (wall-clock ms).
    prepared_phase: AtomicU8,
    pub prepared_turn: AtomicU32,
    /// Locked only while the shape is measured (a few hundred runs every ten minutes).
    pub prepared_samples: std::sync::Mutex<PreparedSamples>,
    pub prepared_unnamed_us: AtomicU64,
    pub prepared_trial_us: AtomicU64,
    pub prepared_changed_ms: AtomicU64,
}

impl Learned {
    pub fn skipped(&self) -> bool {
        self.cache_skipped.load(Relaxed)
    }

    pub fn prepared_phase(&self) -> PreparedPhase {
        match self.prepared_phase.load(std::sync::atomic::Ordering::Acquire) {
            2 => PreparedPhase::Kept,
            3 => PreparedPhase::Dropped,
            _ => PreparedPhase::Measuring,
        }
    }

    pub fn set_prepared_phase(&self, phase: PreparedPhase, now_ms: u64) {
        // The time first: a reader that sees the new phase must not pair it with the old time.
        self.prepared_changed_ms.store(now_ms, Relaxed);
        self.prepared_phase.store(phase as u8, std::sync::atomic::Ordering::Release);
    }

    pub fn pinned(&self) -> Option<Pinned> {
        match self.pinned.load(Relaxed) {
            1 => Some(Pinned::Cache),
            2 => Some(Pinned::PassThrough),
            3 => Some(Pinned::SlowLane),
            _ => None,
        }
    }

    /// Sets (or clears) the operator's pin; a pinned pass-through is also skipped by the cache's
    /// first check, so it costs nothing there.
    pub fn pin(&self, pin: Option<Pinned>) {
        let code = match pin {
            None => 0,
            Some(Pinned::Cache) => 1,
            Some(Pinned::PassThrough) => 2,
            Some(Pinned::SlowLane) => 3,
        };
        if self.pinned.swap(code, Relaxed) == code {
            return;
        }
        match pin {
            Some(Pinned::PassThrough) => self.cache_skipped.store(true, Relaxed),
            Some(Pinned::Cache) => self.cache_skipped.store(false, Relaxed),
            _ => {}
        }
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
