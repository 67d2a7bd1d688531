//! Background upkeep: close idle connections past idle_timeout or lifetime, keep min_size warm.

use std::sync::Arc;
use std::time::Duration;

use super::Pool;
use crate::backend::connect::connect;

impl Pool {
    /// One maintenance pass: expire idle connections, then open up to min_size.
    pub async fn maintain(self: &Arc<Self>) {
        let cfg = self.config.load_full();
        let idle_timeout = Duration::from_millis(cfg.pool.idle_timeout_ms);
        let lifetime = Duration::from_millis(cfg.pool.lifetime_ms);
        let min = cfg.pool.min_size.min(self.max_size());
        let expired = {
            let mut st = self.state.lock();
            let mut keep = Vec::with_capacity(st.idle.len());
            let mut expired = Vec::new();
            let mut total = st.total;
            for conn in st.idle.drain(..) {
                let old = crate::clock::since(conn.created_ms) >= lifetime;
                let unused = crate::clock::since(conn.last_used_ms) >= idle_timeout && total > min;
                if old || unused || conn.looks_broken() {
                    total -= 1;
                    expired.push(conn);
                } else {
                    keep.push(conn);
                }
            }
            st.idle = keep;
            st.total = total;
            expired
        };
        if !expired.is_empty() {
            tracing::debug!(database = %self.key.database, closed = expired.len(), "closed expired idle server connections");
        }
        drop(expired);
        self.warm_up(min).await;
    }

    /// Opens connections until the pool holds `min` (used at start and by maintenance).
    pub async fn warm_up(self: &Arc<Self>, min: usize) {
        loop {
            {
                let mut st = self.state.lock();
                if st.total >= min || st.total >= self.max_size() {
                    return;
                }
                st.total += 1;
            }
            match connect(&self.target()).await {
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
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for pool in pools.all() {
            pool.maintain().await;
        }
    }
}
