//! The slow lane: statements the strategy found slow (`strategy.slow_lane_*`) may hold at most a
//! share of a pool's connections, so a flood of 300 ms searches cannot take every connection and
//! leave a 3 ms lookup queueing behind them. A slow checkout first takes a ticket here (waiting
//! its turn among the slow ones), then a connection as any other; the ticket goes back with the
//! connection. Fast statements never wait here.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::{CheckoutError, Pool, PooledConn};

#[derive(Default)]
pub struct Lane {
    held: AtomicUsize,
    freed: Notify,
    /// Slow checkouts that had to wait for a ticket (SHOW POOLS, /health/status).
    pub waited: AtomicU64,
}

/// A place in the lane, held with the connection it was taken for.
pub struct Ticket(Arc<Lane>);

impl Lane {
    /// A ticket once fewer than `cap` are out, or None at `deadline`.
    pub async fn enter(self: &Arc<Self>, cap: usize, deadline: tokio::time::Instant) -> Option<Ticket> {
        let cap = cap.max(1);
        let mut counted = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check: a ticket returned between the check and the wait
            // still wakes this one.
            freed.as_mut().enable();
            if self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| (h < cap).then_some(h + 1)).is_ok() {
                return Some(Ticket(self.clone()));
            }
            if !counted {
                self.waited.fetch_add(1, Ordering::Relaxed);
                counted = true;
            }
            if crate::timers::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    /// Tickets out now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

impl Pool {
    /// A connection for a statement in the slow lane: first a place among at most `share` of
    /// the pool's maximum size (within the checkout timeout), then a connection as any other
    /// checkout (within the checkout timeout again: a slow statement may wait up to twice it).
    pub async fn checkout_slow_lane(self: &Arc<Self>, share: f64) -> Result<PooledConn, CheckoutError> {
        let timeout = self.config.load().checkout_timeout();
        let cap = (self.max_size() as f64 * share).floor() as usize;
        let Some(ticket) = self.lane.enter(cap, tokio::time::Instant::now() + timeout).await else {
            return Err(self.timeout_error(timeout));
        };
        let mut conn = self.checkout().await?;
        conn.ticket = Some(ticket);
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn at_most_cap_tickets_and_a_returned_one_wakes_a_waiter() {
        let lane = Arc::new(Lane::default());
        let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
        let a = lane.enter(2, soon()).await.expect("first");
        let _b = lane.enter(2, soon()).await.expect("second");
        assert!(lane.enter(2, soon()).await.is_none(), "a third waits and times out");
        assert_eq!(lane.held(), 2);
        let waiter = {
            let lane = lane.clone();
            tokio::spawn(
                async move { lane.enter(2, tokio::time::Instant::now() + Duration::from_secs(5)).await.is_some() },
            )
        };
        crate::timers::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert!(waiter.await.unwrap(), "woken by the returned ticket");
        assert_eq!(lane.held(), 1, "the waiter's ticket went back with its task");
        assert_eq!(lane.waited.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_cap_of_zero_still_lets_one_through() {
        let lane = Arc::new(Lane::default());
        assert!(lane.enter(0, tokio::time::Instant::now()).await.is_some());
    }
}
