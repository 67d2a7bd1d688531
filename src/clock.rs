//! A coarse clock for pool bookkeeping (idle times, lifetimes): one atomic load instead of a
//! clock read per checkout and check-in. Ticks every 20 ms once `start` runs (each tick wakes the
//! runtime, so it is kept slow; the pool only needs tens-of-milliseconds precision).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ORIGIN: OnceLock<Instant> = OnceLock::new();
static NOW_MS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the process started, at most one tick old.
pub fn now_ms() -> u64 {
    NOW_MS.load(Ordering::Relaxed)
}

/// Time since a `now_ms()` reading.
pub fn since(ms: u64) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(ms))
}

/// Milliseconds since the Unix epoch (what is shown to people: `since` in /queries).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn tick() {
    let origin = ORIGIN.get_or_init(Instant::now);
    NOW_MS.store(origin.elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// Starts the ticker (inside the runtime).
pub fn start() {
    tick();
    tokio::spawn(async {
        let mut every = tokio::time::interval(Duration::from_millis(20));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            tick();
        }
    });
}
