//! How many server connects a pool runs at once (`pool.max_parallel_connects`), following the
//! live configuration: a RELOAD that changes the limit applies to pools that already exist.

use parking_lot::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};

pub struct ConnectGate {
    permits: Semaphore,
    /// The limit the semaphore's permits add up to (held ones included).
    limit: Mutex<usize>,
}

impl ConnectGate {
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self { permits: Semaphore::new(limit), limit: Mutex::new(limit) }
    }

    /// Waits for a connect slot under `want` (the configured limit now). A lowered limit takes
    /// effect as held permits come back: only free permits can be withdrawn.
    pub async fn enter(&self, want: usize) -> Option<SemaphorePermit<'_>> {
        let want = want.max(1);
        {
            let mut limit = self.limit.lock();
            if want > *limit {
                self.permits.add_permits(want - *limit);
                *limit = want;
            } else if want < *limit {
                *limit -= self.permits.forget_permits(*limit - want);
            }
        }
        self.permits.acquire().await.ok()
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
}
