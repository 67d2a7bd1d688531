//! Which lookups are worth making: a read whose results rarely repeat (pgbench -S, an id lookup
//! over a large table) pays for a key, a lookup, a captured copy and a store on every run and
//! seldom gets a hit back. Per statement shape the cache counts, over a window of runs
//! (`strategy.cache_window`), how often the parameters were seen recently (a doorkeeper, as in
//! TinyLFU) and how long a miss takes on the server; a shape whose parameters repeat in fewer
//! runs than it takes to pay for its lookups goes straight to the server. The doorkeeper keeps
//! counting while a shape is skipped, so a shape whose parameters start repeating is looked up
//! again from the next window, and every `strategy.cache_reprobe_s` a skipped shape is looked up
//! for a whole window whatever the doorkeeper says.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use crate::config::StrategyConfig;
use crate::sql::learned::{Learned, Pinned};

/// The thresholds of `[strategy]` the admission reads on every run (copied out of the config).
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Runs per decision: large enough that one burst does not flip a shape, small enough that a
    /// non-repeating read stops costing within a few hundred runs.
    pub window: u32,
    /// Repeat share below which a cheap shape is skipped. Measured on pgbench -S at 10 clients (a
    /// ~0.3 ms read, ~5% repeats): looking every run up cost 45 us of proxy CPU per transaction
    /// against 25 us with the cache off.
    pub min_ratio: f64,
    /// A shape whose misses take less than this on the server is cheap: the full `min_ratio`
    /// applies. A dearer one needs proportionally fewer repeats (a 200-400 ms vector search
    /// repays thousands of lookups with one hit).
    pub cheap_miss_us: u32,
    /// A shape skipped this long is looked up for one whole window again (0: never).
    pub reprobe_ms: u64,
}

impl Params {
    pub fn new(s: &StrategyConfig) -> Self {
        Self {
            window: s.cache_window.max(1),
            min_ratio: s.cache_min_hit_ratio,
            cheap_miss_us: (s.cache_cheap_miss_ms * 1000).min(u32::MAX as u64) as u32,
            reprobe_ms: s.cache_reprobe_s * 1000,
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Self::new(&StrategyConfig::default())
    }
}

/// Recently seen parameter hashes: a direct-mapped table of 32-bit tags (no locks; a collision
/// forgets an older hash, which only undercounts repeats).
pub struct Doorkeeper {
    slots: Box<[AtomicU32]>,
}

const SLOTS: usize = 1 << 17;

impl Default for Doorkeeper {
    fn default() -> Self {
        Self { slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect() }
    }
}

impl Doorkeeper {
    /// Records `hash` and says whether it was there already.
    pub fn seen(&self, hash: u64) -> bool {
        let slot = &self.slots[(hash as usize) & (SLOTS - 1)];
        let tag = ((hash >> 32) as u32) | 1;
        // A load and a store, not a locked swap: a racing session may lose one sighting.
        if slot.load(Relaxed) == tag {
            return true;
        }
        slot.store(tag, Relaxed);
        false
    }
}

/// A skipped shape checks only one run in this many against the doorkeeper, and counts each
/// repeat found for this many. The doorkeeper's slot is a random line of a 512 KiB table that
/// the kernel's share of a round trip has evicted by the next read: perf put that one load at
/// ~0.2 us per transaction at 10 pgbench clients (callgrind counts it as one instruction), the
/// largest part of what the cache cost reads it skips. A parameter set that starts repeating
/// often is still found (it is recorded and met in the sampled runs in proportion to its share);
/// sets that repeat once or twice in a window are undercounted, and those are the repeats a
/// cheap read is skipped for anyway.
const SKIPPED_CHECK_EVERY: u32 = 4; // = 2^(32 - 30), the top two bits in `admit`

/// One run of a cacheable read: whether the cache should look it up. `seen` asks the
/// doorkeeper whether its parameters were seen recently (and records them).
pub fn admit(learned: &Learned, p: &Params, seen: impl FnOnce() -> bool) -> bool {
    match learned.pinned() {
        Some(Pinned::Cache) => return true,
        Some(Pinned::PassThrough) => return false,
        _ => {}
    }
    let run = learned.runs.fetch_add(1, Relaxed) + 1;
    let weight = match learned.skipped() {
        false => 1,
        // Runs picked by a scrambled run number: a client's period (every 4th run the same id)
        // cannot line up with them.
        true if run.wrapping_mul(0x9E37_79B9) >> 30 == 0 => SKIPPED_CHECK_EVERY,
        true => 0,
    };
    if weight > 0 && seen() {
        learned.repeats.fetch_add(weight, Relaxed);
    }
    if run == p.window {
        decide(learned, p); // exactly one session sees the count reach the window
    }
    // A skipped shape still sends one run per window through the cache, so its miss time stays
    // measured (a read that became slow comes back even if it repeats rarely).
    !learned.skipped() || run % p.window == 1
}

/// The end of a window: skip a shape while too few of its runs could be hits to pay for the
/// lookups of all of them.
fn decide(learned: &Learned, p: &Params) {
    // Runs counted past the window meanwhile stay for the next one.
    learned.runs.fetch_sub(p.window, Relaxed);
    let repeats = learned.repeats.swap(0, Relaxed).max(learned.hits.swap(0, Relaxed));
    let miss_us = learned.miss_us.load(Relaxed);
    // An unmeasured miss time (no fill completed yet) is no reason to skip.
    let needed = match miss_us {
        0 => 0.0,
        us => p.min_ratio * (p.cheap_miss_us as f64 / us as f64).min(1.0),
    };
    let mut skip = (repeats as f64) < needed * p.window as f64;
    let now = super::wall_ms();
    let changed = learned.skipped_changed_ms.load(Relaxed);
    if skip && learned.skipped() && p.reprobe_ms > 0 && now.saturating_sub(changed) >= p.reprobe_ms {
        skip = false; // re-probe: one window of real lookups and hits
    }
    if learned.cache_skipped.swap(skip, Relaxed) != skip {
        learned.skipped_changed_ms.store(now, Relaxed);
    }
}

pub fn note_hit(learned: &Learned) {
    learned.hits.fetch_add(1, Relaxed);
}

/// A miss took `took` from being sent to its stored result (smoothed 1/8: about what a hit saves
/// the server).
pub fn note_miss_time(learned: &Learned, took: Duration) {
    let us = took.as_micros().min(u32::MAX as u128) as u32;
    let old = learned.miss_us.load(Relaxed);
    let new = if old == 0 { us } else { old - old / 8 + us / 8 };
    learned.miss_us.store(new, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params { window: 200, min_ratio: 0.3, cheap_miss_us: 2000, reprobe_ms: 60_000 };

    fn window(l: &Learned, d: &Doorkeeper, params: impl Fn(u32) -> u64) -> u32 {
        (0..P.window).filter(|&i| admit(l, &P, || d.seen(params(i)))).count() as u32
    }

    #[test]
    fn unrepeated_cheap_reads_are_skipped_from_the_next_window() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(200));
        assert_eq!(window(&l, &d, |i| 1_000_003 * i as u64 + 7), P.window - 1, "looked up while learning");
        assert!(l.skipped());
        assert_eq!(window(&l, &d, |i| 7_000_009 * i as u64 + 11), 1, "one sampled run per window");
    }

    #[test]
    fn repeating_reads_are_looked_up() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(200));
        window(&l, &d, |i| (i % 20) as u64);
        assert!(!l.skipped());
    }

    #[test]
    fn a_skipped_shape_comes_back_when_its_parameters_repeat() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(200));
        window(&l, &d, |i| 1_000_003 * i as u64 + 7);
        assert!(l.skipped());
        window(&l, &d, |i| (i % 8) as u64);
        assert!(!l.skipped());
    }

    #[test]
    fn a_skipped_shape_comes_back_when_one_hot_value_takes_half_its_runs() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(200));
        window(&l, &d, |i| 1_000_003 * i as u64 + 7);
        assert!(l.skipped());
        // Every 2nd run carries the hot value (a period the checked runs must not line up with).
        window(&l, &d, |i| if i % 2 == 1 { 42 } else { 7_000_009 * i as u64 + 11 });
        assert!(!l.skipped(), "sampled checks still find a value that takes 50% of the runs");
    }

    #[test]
    fn a_cheap_read_below_the_configured_hit_ratio_is_skipped() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(300));
        // One run in five repeats: 20%, under the default 0.3.
        window(&l, &d, |i| if i % 5 == 0 { 1 } else { 1_000_003 * i as u64 + 7 });
        assert!(l.skipped());
        let lenient = Params { min_ratio: 0.1, ..P };
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(300));
        let runs = (0..lenient.window)
            .filter(|&i| admit(&l, &lenient, || d.seen(if i % 5 == 0 { 1 } else { 1_000_003 * i as u64 + 7 })));
        assert_eq!(runs.count() as u32, lenient.window, "all looked up while learning");
        assert!(!l.skipped(), "20% is enough at cache_min_hit_ratio = 0.1");
    }

    #[test]
    fn a_shape_skipped_for_the_reprobe_period_is_looked_up_for_a_window() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(200));
        window(&l, &d, |i| 1_000_003 * i as u64 + 7);
        assert!(l.skipped());
        window(&l, &d, |i| 3_000_017 * i as u64 + 5);
        assert!(l.skipped(), "not yet: skipped for less than cache_reprobe_s");
        l.skipped_changed_ms.store(crate::cache::wall_ms() - 61_000, Relaxed);
        window(&l, &d, |i| 5_000_011 * i as u64 + 3);
        assert!(!l.skipped(), "re-probed");
        assert_eq!(
            window(&l, &d, |i| 9_000_041 * i as u64 + 1),
            P.window - 1,
            "looked up while probing (the last run sees the new decision)"
        );
        assert!(l.skipped(), "and skipped again after the probe found no repeats");
    }

    #[test]
    fn pins_override_the_measurement() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(200));
        l.pin(Some(Pinned::Cache));
        assert_eq!(window(&l, &d, |i| 1_000_003 * i as u64 + 7), P.window);
        assert_eq!(window(&l, &d, |i| 7_000_009 * i as u64 + 7), P.window, "never skipped");
        l.pin(Some(Pinned::PassThrough));
        assert_eq!(window(&l, &d, |i| (i % 2) as u64), 0, "never looked up");
    }

    #[test]
    fn a_skipped_shape_touches_the_doorkeeper_once_in_four_runs() {
        let l = Learned::default();
        note_miss_time(&l, Duration::from_micros(200));
        l.cache_skipped.store(true, std::sync::atomic::Ordering::Relaxed);
        let checked = std::cell::Cell::new(0);
        for _ in 0..P.window - 1 {
            admit(&l, &P, || {
                checked.set(checked.get() + 1);
                false
            });
        }
        let expected = (P.window - 1) / SKIPPED_CHECK_EVERY;
        assert!((expected * 3 / 4..=expected * 5 / 4).contains(&checked.get()), "{} checks", checked.get());
    }

    #[test]
    fn slow_reads_are_looked_up_at_a_low_repeat_share() {
        // A 300 ms search repeated 3 times in 200 runs still saves far more than lookups cost.
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_millis(300));
        window(&l, &d, |i| if i % 64 == 0 { 1 } else { 1_000_003 * i as u64 + 7 });
        assert!(!l.skipped());
    }

    #[test]
    fn cheap_reads_repeating_in_one_run_of_twenty_are_skipped() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(300));
        window(&l, &d, |i| if i % 20 == 0 { 1 } else { 1_000_003 * i as u64 + 7 });
        assert!(l.skipped(), "5% repeats of a 0.3 ms read");
        window(&l, &d, |i| (i % 4) as u64);
        assert!(!l.skipped());
    }

    #[test]
    fn an_unmeasured_miss_time_is_no_reason_to_skip() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        window(&l, &d, |i| 1_000_003 * i as u64 + 7);
        assert!(!l.skipped());
    }

    #[test]
    fn doorkeeper_remembers_and_forgets_on_collision() {
        let d = Doorkeeper::default();
        assert!(!d.seen(42));
        assert!(d.seen(42));
        assert!(!d.seen(42 + ((SLOTS as u64) << 40))); // same slot, other tag
        assert!(!d.seen(42));
    }
}
