//! Background upkeep: close idle connections past idle_timeout or lifetime, keep min_size warm.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{sizing, Pool};

impl Pool {
    /// One maintenance pass: expire idle connections, then open up to min_size.
    pub async fn maintain(self: &Arc<Self>) {
        let cfg = self.config.load_full();
        let idle_timeout = Duration::from_millis(cfg.pool.idle_timeout_ms);
        let lifetime = Duration::from_millis(cfg.pool.lifetime_ms);
        let min = cfg.pool.min_size.min(self.max_size());
        self.resize(&cfg);
        let limit = self.limit();
        let expired = {
            let mut st = self.state.lock();
            let mut expired = Vec::new();
            for conn in std::mem::take(&mut st.idle) {
                let old = crate::clock::since(conn.created_ms) >= lifetime;
                let unused = crate::clock::since(conn.last_used_ms) >= idle_timeout && st.total > min;
                let above_target = st.total > limit;
                if old || unused || above_target || conn.looks_broken() {
                    st.release(&self.budget);
                    expired.push(conn);
                } else {
                    st.idle.push(conn);
                }
            }
            expired
        };
        if !expired.is_empty() {
            tracing::debug!(database = %self.key.database, closed = expired.len(), "closed expired idle server connections");
        }
        drop(expired);
        self.warm_up(min).await;
    }

    /// One sizing tick (`sizing`): what the pool measured since the last one becomes its target.
    fn resize(&self, cfg: &crate::config::Config) {
        if !cfg.pool.adaptive {
            // Static: the limit is max_size (a reload that changes it applies at this tick).
            self.target.store(cfg.pool_max_for(&self.key.user), Ordering::Relaxed);
            return;
        }
        let now = crate::clock::now_ms();
        let (checkouts, waited, held) = (
            self.checkouts.load(Ordering::Relaxed),
            self.waited.load(Ordering::Relaxed),
            self.held_ms.load(Ordering::Relaxed),
        );
        let (size, waiting) = {
            let st = self.state.lock();
            (st.total, st.waiters.iter().filter(|w| !w.tx.is_closed()).count())
        };
        let sample = {
            let mut last = self.last_tick.lock();
            let s = sizing::Sample {
                tick_ms: now.saturating_sub(last.0) as f64,
                checkouts: checkouts.saturating_sub(last.1),
                waited: waited.saturating_sub(last.2),
                held_ms: held.saturating_sub(last.3) as f64,
                size,
                waiting,
            };
            *last = (now, checkouts, waited, held);
            s
        };
        if sample.tick_ms <= 0.0 {
            return;
        }
        let max = cfg.pool_max_for(&self.key.user);
        let mut c = self.sizing.lock();
        let before = c.target();
        let d = c.tick(&sample, cfg.pool.min_size.min(max), max);
        self.target.store(d.target, Ordering::Relaxed);
        drop(c);
        if d.target != before {
            tracing::debug!(database = %self.key.database, user = %self.key.user, from = before, to = d.target,
                reason = %d.reason, "pool target");
        }
        *self.decision.lock() = Some(d);
    }

    /// Opens connections until the pool holds `min` (used at start and by maintenance).
    pub async fn warm_up(self: &Arc<Self>, min: usize) {
        loop {
            {
                if !self.state.lock().reserve(min.min(self.max_size()), &self.budget) {
                    return;
                }
            }
            match self.open().await {
                Ok(conn) => self.checkin(conn),
                Err(err) => {
                    self.free_slot();
                    tracing::warn!(database = %self.key.database, user = %self.key.user, "warm-up connect failed: {err}");
                    return;
                }
            }
        }
    }
}

/// Runs maintenance on every pool once a second until the process ends.
pub async fn run(pools: Arc<super::set::PoolSet>) {
    let mut tick = crate::timers::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for pool in pools.all() {
            pool.maintain().await;
        }
        rebalance(&pools.all(), &pools.budget);
        let after = Duration::from_millis(pools.config().pool.drop_idle_pool_after_ms);
        let dropped = pools.drop_unused(after);
        if dropped > 0 {
            tracing::debug!(dropped, "dropped pools unused for pool.drop_idle_pool_after_ms");
        }
    }
}

/// With the server budget used up, a pool whose checkouts wait gets a connection that another
/// pool holds idle (closed, its budget handed over): no pool keeps idle what another is waiting
/// for. Once a tick; a pool's own connections coming back serve its waiters first.
fn rebalance(pools: &[Arc<Pool>], budget: &super::budget::Budget) {
    if !budget.exhausted() {
        return;
    }
    for hungry in pools.iter().filter(|p| p.has_waiters()) {
        let donor = pools.iter().find(|p| !Arc::ptr_eq(p, hungry) && p.close_one_idle());
        if donor.is_some() {
            tracing::debug!(database = %hungry.key.database, user = %hungry.key.user, "pool: budget handed over");
            hungry.offer_slot();
        }
    }
}
