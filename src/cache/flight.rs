//! Single flight: while one client's miss is being filled, identical misses wait for it instead
//! of running the same (200-400 ms) search again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// Fills in progress. A fill counts as running only once its query was sent on a server
/// connection: a client that holds a connection (inside a transaction) and waited for a filler
/// still waiting for a connection itself could exhaust the pool.
#[derive(Default)]
pub struct Flight {
    running: Mutex<HashMap<u128, Running>>,
}

/// A fill's completion signal and whether its query was sent yet.
type Running = (watch::Receiver<()>, Arc<AtomicBool>);

/// Held by the client filling a key; dropping it (stored, abandoned or session gone) wakes the waiters.
pub struct FillGuard {
    flight: Arc<Flight>,
    key: u128,
    sent: Arc<AtomicBool>,
    _done: watch::Sender<()>,
}

impl FillGuard {
    /// The query is on its way to the server: identical misses may now wait for it.
    pub fn sent(&self) {
        self.sent.store(true, Ordering::Release);
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.flight.running.lock().remove(&self.key);
    }
}

impl std::fmt::Debug for FillGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FillGuard({:x})", self.key)
    }
}

pub enum Begin {
    Fill(FillGuard),
    Wait(watch::Receiver<()>),
    /// Another client is about to fill it but has not sent it yet: run it without filling.
    Busy,
}

impl Flight {
    pub fn begin(self: &Arc<Self>, key: u128) -> Begin {
        let mut running = self.running.lock();
        if let Some((rx, sent)) = running.get(&key) {
            return if sent.load(Ordering::Acquire) { Begin::Wait(rx.clone()) } else { Begin::Busy };
        }
        let (tx, rx) = watch::channel(());
        let sent = Arc::new(AtomicBool::new(false));
        running.insert(key, (rx, sent.clone()));
        Begin::Fill(FillGuard { flight: self.clone(), key, sent, _done: tx })
    }
}

/// Waits until the fill ends (its guard is dropped) or `timeout` passes.
pub async fn wait(mut rx: watch::Receiver<()>, timeout: std::time::Duration) {
    let _ = crate::timers::timeout(timeout, async { while rx.changed().await.is_ok() {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_miss_waits_for_the_first() {
        let f = Arc::new(Flight::default());
        let Begin::Fill(guard) = f.begin(7) else { panic!("first is the filler") };
        assert!(matches!(f.begin(7), Begin::Busy), "not sent yet: do not wait");
        guard.sent();
        let Begin::Wait(rx) = f.begin(7) else { panic!("second waits") };
        assert!(matches!(f.begin(8), Begin::Fill(_)), "other keys are independent");
        let waiter = tokio::spawn(wait(rx, std::time::Duration::from_secs(5)));
        crate::timers::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        waiter.await.expect("woken");
        assert!(matches!(f.begin(7), Begin::Fill(_)), "the key is free again");
    }
}
