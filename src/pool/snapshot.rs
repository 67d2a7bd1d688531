//! What a pool looks like at one moment, for /health/status, /metrics and the admin console.

use std::sync::atomic::Ordering;

use super::{sizing, Pool};

/// Point-in-time numbers for /health/status and /metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolSnapshot {
    pub database: String,
    pub user: String,
    pub active: usize,
    pub idle: usize,
    pub waiting: usize,
    /// How long the oldest waiting checkout has waited (µs; 0: none waits).
    pub max_wait_us: u64,
    pub size: usize,
    pub max_size: usize,
    pub pool_utilization: f64,
    /// The adaptive target (the configured maximum with `pool.adaptive = false`).
    pub target: usize,
    /// The last sizing decision and its reason, and the seed's pool size for the measured load.
    pub decision: Option<sizing::Decision>,
    pub recommendation: Option<sizing::Recommendation>,
    /// How often the target grew and shrank so far.
    pub grows: u64,
    pub shrinks: u64,
    /// Connections held by slow-lane statements now, and slow checkouts that waited for the lane.
    pub slow_lane_active: usize,
    pub slow_lane_waited: u64,
}

impl Pool {
    pub fn snapshot(&self) -> PoolSnapshot {
        self.snapshot_and_idle(false).0
    }

    /// The snapshot and (with `servers`) its idle connections, read under one lock: the idle
    /// count and the idle list agree, and the console locks each pool once.
    pub fn snapshot_and_idle(&self, servers: bool) -> (PoolSnapshot, Vec<(i32, super::SocketAddrAge)>) {
        let (max, target) = (self.max_size(), self.limit());
        let decision = self.decision.lock().clone();
        let (recommendation, (grows, shrinks)) = {
            let sizing = self.sizing.lock();
            (sizing.recommendation(), sizing.resizes())
        };
        let mut st = self.state.lock();
        st.waiters.retain(|w| !w.tx.is_closed());
        let max_wait_us = st.waiters.front().map_or(0, |w| w.since.elapsed().as_micros() as u64);
        let (size, idle, waiting) = (st.total, st.idle.len(), st.waiters.len());
        let idle_servers = if servers { st.idle.iter().map(|c| super::idle_server(c)).collect() } else { Vec::new() };
        drop(st);
        let snapshot = PoolSnapshot {
            database: self.key.database.clone(),
            user: self.key.user.clone(),
            active: size - idle,
            idle,
            waiting,
            max_wait_us,
            size,
            max_size: max,
            pool_utilization: (size - idle) as f64 / max.max(1) as f64,
            target,
            decision,
            recommendation,
            grows,
            shrinks,
            slow_lane_active: self.lane.held(),
            slow_lane_waited: self.lane.waited.load(Ordering::Relaxed),
        };
        (snapshot, idle_servers)
    }
}
