//! The per-fingerprint strategy, decided from what insights measured and re-decided every tick:
//! an operator's pins, and the slow lane (a fingerprint far slower than its pool's others holds
//! at most a share of the pool). The result cache's own half (whether a read is worth looking
//! up) is decided per window of runs in `cache::admission`, which reads the pins set here. What
//! is decided lands in each shape's `Learned`, where the data path reads it without a lookup.

pub mod lanes;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::insights::stats::QueryStats;

/// How often lanes and pins are re-decided.
const TICK: Duration = Duration::from_secs(1);
/// Every this many ticks the recent latencies start over: a fingerprint that became fast leaves
/// the slow lane within about this long.
const RECENT_TICKS: u32 = 30;

/// Runs for the life of the process.
pub async fn run(stats: Arc<QueryStats>, config: Arc<ArcSwap<Config>>) {
    let mut interval = crate::timers::interval(TICK);
    let mut ticks = 0u32;
    loop {
        interval.tick().await;
        ticks = ticks.wrapping_add(1);
        let cfg = config.load();
        let inputs = stats.lane_inputs(cfg.strategy.slow_lane_min_calls, ticks % RECENT_TICKS == 0);
        lanes::decide(&inputs, &cfg.strategy, crate::clock::wall_ms());
    }
}
