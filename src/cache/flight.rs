//! Single flight: while one client's miss is being filled, identical misses wait for it instead
//! of running the same (200-400 ms) search again.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

#[derive(Default)]
pub struct Flight {
    running: Mutex<HashMap<u128, watch::Receiver<()>>>,
}

/// Held by the client filling a key; dropping it (stored, abandoned or session gone) wakes the waiters.
pub struct FillGuard {
    flight: Arc<Flight>,
    key: u128,
    _done: watch::Sender<()>,
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
}

impl Flight {
    pub fn begin(self: &Arc<Self>, key: u128) -> Begin {
        let mut running = self.running.lock();
        if let Some(rx) = running.get(&key) {
            return Begin::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        running.insert(key, rx);
        Begin::Fill(FillGuard { flight: self.clone(), key, _done: tx })
    }
}

/// Waits until the fill ends (its guard is dropped) or `timeout` passes.
pub async fn wait(mut rx: watch::Receiver<()>, timeout: std::time::Duration) {
    let _ = tokio::time::timeout(timeout, async { while rx.changed().await.is_ok() {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_miss_waits_for_the_first() {
        let f = Arc::new(Flight::default());
        let Begin::Fill(guard) = f.begin(7) else { panic!("first is the filler") };
        let Begin::Wait(rx) = f.begin(7) else { panic!("second waits") };
        assert!(matches!(f.begin(8), Begin::Fill(_)), "other keys are independent");
        let waiter = tokio::spawn(wait(rx, std::time::Duration::from_secs(5)));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        waiter.await.expect("woken");
        assert!(matches!(f.begin(7), Begin::Fill(_)), "the key is free again");
    }
}
