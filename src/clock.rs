//! A coarse clock for pool bookkeeping (idle times, lifetimes): one atomic load instead of a
//! clock read per checkout and check-in. Ticks every 20 ms once `start` runs, on its own thread (the
//! pool only needs tens-of-milliseconds precision).

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

/// Starts the ticker: a thread of its own, so that its 50 wake-ups a second never park or wake
/// the runtime that relays messages (as a task there, each tick was a whole park and wake-up).
pub fn start() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(start_thread);
}

fn start_thread() {
    tick();
    let spawned = std::thread::Builder::new().name("pgpilot-clock".into()).spawn(|| loop {
        std::thread::sleep(Duration::from_millis(20));
        tick();
    });
    if let Err(e) = spawned {
        tracing::error!("clock thread not started, pool idle times will not advance: {e}");
    }
}
