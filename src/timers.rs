//! pgpilot's timers live on a runtime of their own, not on the one that relays messages.
//!
//! tokio's time driver works at every park of its runtime: with any timer in its wheel it reads the
//! clock twice, scans the wheel and runs an expiry pass (~1,100 instructions per -S transaction,
//! two parks each, measured under callgrind). pgpilot always has timers pending (pool maintenance,
//! metrics upkeep, the statistics period), so the data runtime paid that on every message. Timers
//! made here belong to a small current-thread runtime on its own thread: the data runtime's wheel
//! stays empty, and a timer that fires wakes its task across threads, which for periodic work and
//! timeouts that rarely fire costs less than the per-park work it replaces.
//!
//! A `Sleep` keeps the runtime handle it was created under (tokio's `TimerEntry`), so creating it
//! inside `Handle::enter` is all it takes; polling and dropping it may happen anywhere. Before
//! `start` (unit tests, tools) the helpers use the current runtime's timers as plain tokio does.
//! The data runtime is built without a time driver at all (main.rs), so a timer made there panics:
//! pgpilot's code makes none (tests/layering.rs), the HTTP server runs here (`spawn`), and the Redis
//! client, which makes its own timeouts and reconnect back-offs wherever it runs, is the one reason
//! the data runtime gets a time driver (only when a Redis tier is configured).

use std::future::IntoFuture;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::{Instant, Interval, Sleep, Timeout};

static TIMERS: OnceLock<Handle> = OnceLock::new();
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts the timer thread (once; later calls do nothing).
pub fn start() -> std::io::Result<()> {
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if TIMERS.get().is_some() {
        return Ok(());
    }
    // I/O too: the HTTP server runs here (axum sleeps after an accept error, a timer of its own).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("pgpilot-timers".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    let _ = TIMERS.set(handle);
    Ok(())
}

/// Runs `make` with the timer runtime as the current one, so the timers it creates register there.
fn on_timer_runtime<T>(make: impl FnOnce() -> T) -> T {
    match TIMERS.get() {
        Some(handle) => {
            let _entered = handle.enter();
            make()
        }
        None => make(),
    }
}

/// Runs `future` on the timer runtime: for work whose libraries make tokio timers themselves.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match TIMERS.get() {
        Some(handle) => handle.spawn(future),
        None => tokio::spawn(future),
    }
}

pub fn sleep(duration: Duration) -> Sleep {
    on_timer_runtime(|| tokio::time::sleep(duration))
}

pub fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    on_timer_runtime(|| tokio::time::timeout(duration, future))
}

pub fn timeout_at<F: IntoFuture>(deadline: Instant, future: F) -> Timeout<F::IntoFuture> {
    on_timer_runtime(|| tokio::time::timeout_at(deadline, future))
}

/// A periodic tick that waits a whole period after a tick it missed (the work it paces is not
/// worth catching up on).
pub fn interval(period: Duration) -> Interval {
    let mut every = on_timer_runtime(|| tokio::time::interval(period));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_made_here_fires_for_a_runtime_without_a_time_driver() {
        start().unwrap();
        let data = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        let began = std::time::Instant::now();
        data.block_on(async {
            sleep(Duration::from_millis(30)).await;
            let never = std::future::pending::<()>();
            assert!(timeout(Duration::from_millis(20), never).await.is_err());
            let mut every = interval(Duration::from_millis(10));
            every.tick().await;
            every.tick().await;
        });
        assert!(began.elapsed() >= Duration::from_millis(55));
    }
}
