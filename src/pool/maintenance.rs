//! Background upkeep: close idle connections past idle_timeout or lifetime, keep min_size warm.

use std::sync::Arc;
use std::time::Duration;

use super::Pool;

impl Pool {
    /// One maintenance pass: expire idle connections, then open up to min_size.
    pub async fn maintain(self: &Arc<Self>) {
        let cfg = self.config.load_full();
        let idle_timeout = Duration::from_millis(cfg.pool.idle_timeout_ms);
        let lifetime = Duration::from_millis(cfg.pool.lifetime_ms);
        let min = cfg.pool.min_size.min(self.max_size());
        let expired = {
            let mut st = self.state.lock();
            let mut expired = Vec::new();
            for conn in std::mem::take(&mut st.idle) {
                let old = crate::clock::since(conn.created_ms) >= lifetime;
                let unused = crate::clock::since(conn.last_used_ms) >= idle_timeout && st.total > min;
                if old || unused || conn.looks_broken() {
                    st.release();
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

    /// Opens connections until the pool holds `min` (used at start and by maintenance).
    pub async fn warm_up(self: &Arc<Self>, min: usize) {
        loop {
            {
                if !self.state.lock().reserve(min.min(self.max_size())) {
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
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for pool in pools.all() {
            pool.maintain().await;
        }
        let after = Duration::from_millis(pools.config().pool.drop_idle_pool_after_ms);
        let dropped = pools.drop_unused(after);
        if dropped > 0 {
            tracing::debug!(dropped, "dropped pools unused for pool.drop_idle_pool_after_ms");
        }
    }
}
