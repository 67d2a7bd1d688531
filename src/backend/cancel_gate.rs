//! Cancels in flight on one server connection. A session returning the connection first waits
//! until none is, so that a cancel meant for its last query cannot reach the next client's. A
//! cancel is counted in only while the client holds the connection: under the client's `server`
//! lock, which the session's `detach` takes before it waits, so once the count reads zero after a
//! detach no cancel of that client can follow.
//!
//! An atomic count with a `Notify` for the rare wait: the check at every return is one load,
//! where a tokio `RwLock` write lock (an `Arc` clone, an acquire future, and the semaphore's
//! mutex on release) was taken and dropped per transaction. The lock's guard also outlived the
//! check-in by a few instructions: on a multi-thread data runtime a cancel of the connection's
//! next client could in theory have found it taken and been dropped (never observed; on a
//! current-thread runtime there is no such window).
//!
//! A forwarded cancel that PostgreSQL has not confirmed within the forwarder's wait (the cancel
//! connection still open) may still be signalled later, to whatever the backend then runs: such a
//! connection is `doubtful` and is closed instead of going back to the pool.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct CancelGate {
    in_flight: AtomicU32,
    settled: Notify,
    doubtful: AtomicBool,
}

/// A cancel in flight: counted until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<CancelGate>);

impl CancelGate {
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// A cancel was given up on before PostgreSQL confirmed it: called before its `InFlight`
    /// drops, so the session that waits in `settled` reads it.
    pub fn mark_doubtful(&self) {
        self.doubtful.store(true, Ordering::Release);
    }

    /// Returns once no cancel is in flight: whether the connection may serve another client
    /// (false when a cancel for it was given up on and may still land).
    pub async fn settled(&self) -> bool {
        while self.in_flight.load(Ordering::Acquire) > 0 {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable(); // registered before the re-check: no wake-up is lost
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        !self.doubtful.load(Ordering::Acquire)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_return_waits_for_every_cancel_in_flight() {
        let gate = Arc::new(CancelGate::default());
        assert!(gate.settled().await, "none in flight: at once, reusable");
        let (a, b) = (gate.enter(), gate.enter());
        let waiting = crate::timers::timeout(Duration::from_millis(20), gate.settled()).await;
        assert!(waiting.is_err(), "two cancels in flight");
        drop(a);
        let waiting = crate::timers::timeout(Duration::from_millis(20), gate.settled()).await;
        assert!(waiting.is_err(), "one cancel still in flight");
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.settled().await });
        tokio::task::yield_now().await;
        drop(b);
        assert!(crate::timers::timeout(Duration::from_secs(1), waiter).await.expect("woken").unwrap());
    }

    #[tokio::test]
    async fn a_cancel_given_up_on_keeps_the_connection_from_reuse() {
        let gate = Arc::new(CancelGate::default());
        let held = gate.enter();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.settled().await });
        tokio::task::yield_now().await;
        gate.mark_doubtful();
        drop(held);
        let reusable = crate::timers::timeout(Duration::from_secs(1), waiter).await.expect("woken").unwrap();
        assert!(!reusable, "a cancel that may still land: the connection must not serve another client");
    }
}
