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

/// A precise monotonic timestamp (nanoseconds of CLOCK_MONOTONIC, the clock `Instant` reads on
/// Linux) for the latencies insights measure, three per statement: read straight from the vDSO
/// and subtracted as integers (`Instant` normalises a seconds/nanoseconds pair on every read and
/// subtraction, ~130 instructions per statement between them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

impl Stamp {
    #[inline]
    pub fn now() -> Self {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Linux, and
        // on the impossible failure `ts` stays zero (a zero duration, never a panic).
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Self((ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64))
    }

    /// Zero when `earlier` is in fact later.
    #[inline]
    pub fn saturating_duration_since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    pub fn elapsed(self) -> Duration {
        Self::now().saturating_duration_since(self)
    }
}

impl std::ops::Add<Duration> for Stamp {
    type Output = Stamp;

    fn add(self, d: Duration) -> Stamp {
        Stamp(self.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod stamp_tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")] // (elsewhere `Instant` reads another clock)
    fn stamps_agree_with_instant() {
        let (i0, s0) = (Instant::now(), Stamp::now());
        std::thread::sleep(Duration::from_millis(20));
        let (s1, i1) = (Stamp::now(), Instant::now());
        let (by_stamp, by_instant) = (s1.saturating_duration_since(s0), i1.duration_since(i0));
        assert!(by_stamp >= Duration::from_millis(20) && by_stamp <= by_instant, "{by_stamp:?} {by_instant:?}");
        assert_eq!(s0.saturating_duration_since(s1), Duration::ZERO, "earlier minus later");
        assert_eq!((s0 + Duration::from_millis(5)).saturating_duration_since(s0), Duration::from_millis(5));
    }
}
