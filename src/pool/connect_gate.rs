//! How many server connects a pool runs at once (`pool.max_parallel_connects`), following the
//! live configuration: a RELOAD that changes the limit applies to pools that already exist.

use parking_lot::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};

/// More parallel connects than this is no limit at all (and the semaphore's own maximum is far).
const MAX_LIMIT: usize = 1024;

pub struct ConnectGate {
    permits: Semaphore,
    /// The limit the semaphore's permits add up to (held ones included).
    limit: Mutex<usize>,
}

impl ConnectGate {
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, MAX_LIMIT);
        Self { permits: Semaphore::new(limit), limit: Mutex::new(limit) }
    }

    /// Waits for a connect slot under `want` (the configured limit now). A lowered limit takes
    /// effect as permits come back: free ones are withdrawn here, and a permit handed to a waiter
    /// while the limit is still too high is withdrawn by that waiter, which waits again.
    pub async fn enter(&self, want: usize) -> Option<SemaphorePermit<'_>> {
        let want = want.clamp(1, MAX_LIMIT);
        {
            let mut limit = self.limit.lock();
            if want > *limit {
                self.permits.add_permits(want - *limit);
                *limit = want;
            } else if want < *limit {
                *limit -= self.permits.forget_permits(*limit - want);
            }
        }
        loop {
            let permit = self.permits.acquire().await.ok()?;
            let mut limit = self.limit.lock();
            if *limit <= want {
                return Some(permit);
            }
            permit.forget();
            *limit -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_follows_the_configuration_both_ways() {
        let gate = ConnectGate::new(1);
        let a = gate.enter(1).await;
        assert!(
            crate::timers::timeout(std::time::Duration::from_millis(20), gate.enter(1)).await.is_err(),
            "1 at once"
        );
        let b = crate::timers::timeout(std::time::Duration::from_secs(1), gate.enter(2))
            .await
            .expect("raised: a second connect goes at once");
        assert!(a.is_some() && b.is_some());
        drop((a, b));
        let c = gate.enter(1).await; // lowered: one of the two free permits withdrawn
        assert!(crate::timers::timeout(std::time::Duration::from_millis(20), gate.enter(1)).await.is_err(), "1 again");
        drop(c);
    }

    #[tokio::test]
    async fn a_limit_lowered_while_connects_queue_holds_at_the_next_release() {
        let gate = std::sync::Arc::new(ConnectGate::new(2));
        let (a, b) = (gate.enter(2).await, gate.enter(2).await);
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.enter(1).await.map(|p| p.forget()).is_some() });
        crate::timers::sleep(std::time::Duration::from_millis(20)).await;
        drop(a); // handed to the waiter while the limit is 2: withdrawn, and it waits on
        crate::timers::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "two connects at once under a limit of one");
        drop(b);
        assert!(crate::timers::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap());
    }
}
