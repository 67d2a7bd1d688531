//! Which lookups are worth making: a read whose results do not repeat (pgbench -S, an
//! id lookup over a large table) pays for a key, a lookup, a captured copy and a store on every
//! run and never gets a hit back. Per statement shape the cache counts, over a window of runs,
//! how often the parameters were seen recently (a doorkeeper, as in TinyLFU) and how long a miss
//! takes; when the expected saving of a lookup (repeat ratio x miss time) is below what the lookup
//! costs, the shape's runs go straight to the server. The doorkeeper keeps counting while a shape
//! is skipped, so a shape whose parameters start repeating is looked up again from the next window.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use crate::sql::learned::Learned;

/// Runs per decision: large enough that one burst does not flip a shape, small enough that a
/// non-repeating read stops costing within a few hundred runs.
pub const WINDOW: u32 = 256;
/// What a lookup, capture and store of a miss cost the proxy, measured with callgrind (about
/// 17k instructions per pgbench -S transaction, ~5 us on this machine): a lookup pays for itself
/// when repeat ratio x miss time exceeds it.
const LOOKUP_COST_US: u64 = 5;
/// Below this share of repeats a shape is skipped even when its misses are slow and unmeasured:
/// a cache that cannot answer one run in 16 is not worth its memory for that shape.
const MIN_REPEAT_SHARE: u32 = 16;

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
        slot.swap(tag, Relaxed) == tag
    }
}

/// One run of a cacheable read: whether the cache should look it up. `seen`: the doorkeeper
/// knew its parameters.
pub fn admit(learned: &Learned, seen: bool) -> bool {
    if seen {
        learned.repeats.fetch_add(1, Relaxed);
    }
    if learned.runs.fetch_add(1, Relaxed) + 1 >= WINDOW {
        decide(learned);
    }
    !learned.skipped()
}

/// The end of a window: skip the shape while its lookups cost more than they save.
fn decide(learned: &Learned) {
    let runs = learned.runs.swap(0, Relaxed);
    if runs < WINDOW {
        return; // another session closed this window first
    }
    let repeats = learned.repeats.swap(0, Relaxed).max(learned.hits.swap(0, Relaxed));
    let saving_us = repeats as u64 * learned.miss_us.load(Relaxed) as u64;
    let skip = repeats * MIN_REPEAT_SHARE < runs && saving_us < runs as u64 * LOOKUP_COST_US;
    learned.cache_skipped.store(skip, Relaxed);
}

pub fn note_hit(learned: &Learned) {
    learned.hits.fetch_add(1, Relaxed);
}

/// A miss took `took` from lookup to result (smoothed 1/8: a hit saves about this much).
pub fn note_miss_time(learned: &Learned, took: Duration) {
    let us = took.as_micros().min(u32::MAX as u128) as u32;
    let old = learned.miss_us.load(Relaxed);
    let new = if old == 0 { us } else { old - old / 8 + us / 8 };
    learned.miss_us.store(new, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(l: &Learned, d: &Doorkeeper, params: impl Fn(u32) -> u64) -> u32 {
        (0..WINDOW).filter(|&i| admit(l, d.seen(params(i)))).count() as u32
    }

    #[test]
    fn unrepeated_cheap_reads_are_skipped_from_the_next_window() {
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_micros(200));
        assert_eq!(window(&l, &d, |i| 1_000_003 * i as u64 + 7), WINDOW - 1, "looked up while learning");
        assert!(l.skipped());
        assert_eq!(window(&l, &d, |i| 7_000_009 * i as u64 + 11), 0);
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
        window(&l, &d, |i| 1_000_003 * i as u64 + 7);
        assert!(l.skipped());
        window(&l, &d, |i| (i % 8) as u64);
        assert!(!l.skipped());
    }

    #[test]
    fn slow_reads_are_looked_up_at_a_low_repeat_share() {
        // A 300 ms search repeated 4 times in 256 runs still saves far more than lookups cost.
        let (l, d) = (Learned::default(), Doorkeeper::default());
        note_miss_time(&l, Duration::from_millis(300));
        window(&l, &d, |i| if i % 64 == 0 { 1 } else { 1_000_003 * i as u64 + 7 });
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
