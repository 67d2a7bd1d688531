//! Adaptive pool sizing: each tick, a pool's measured load becomes a target size between
//! `min_size` and `max_size`, and the decision (with its reason) is kept for /health/status, SHOW
//! POOLS and the `pgpilot_pool_target` gauge.
//!
//! Little's law gives the connections in use on average: L = arrival rate x time held = (time
//! held in the tick) / (tick length). The target is what keeps utilization at `TARGET_UTILIZATION`
//! (the seed's `calculate_optimal_pool_size`: concurrent / 0.75), sized from the busiest of the
//! recent ticks (`DEMAND_WINDOW`) so a burst is not forgotten at once. Growth is immediate
//! (checkouts that had to wait raise it even between ticks, `Pool::grow_for_waiters`); shrinking
//! starts after `SHRINK_AFTER` quiet ticks and closes half the gap to the demand a tick (at least
//! 10% of the target): a pool sized for a step of 50 clients is back near its new demand within
//! ~4 s of the step's end, where a 10%-a-tick decay held twice the connections for half a minute
//! (measured: bench/strategy.sh, part B). Only idle connections above the target are closed.
//! Growth stops when the time a connection is held rises with concurrency while the work done does
//! not (a gradient limit, as in Netflix's concurrency-limits and TCP Vegas: at twice the lowest
//! mean hold time seen recently with fewer connections busy, no more checkouts a second than then,
//! and as many connections busy as the target allows, more connections only add contention on the
//! server). Hold time alone misreads busy clients as a busy server: measured at a step to 50
//! clients, a pool held at 5 by it waited 5x longer than a static pool of 8. Written here rather than taken from a crate: congestion-limiter and tower's limiters
//! govern requests in flight through a service, not a pool's size, and the rule is a few lines.

use std::collections::VecDeque;

pub const TARGET_UTILIZATION: f64 = 0.75;
/// Ticks of history the gradient's baseline (lowest mean hold time) is taken over.
const WINDOW: usize = 10;
/// Ticks the demand is taken over (the busiest of them).
const DEMAND_WINDOW: usize = 2;
/// Quiet ticks (demand below the target) before the target shrinks.
const SHRINK_AFTER: u32 = 2;
/// Hold time this many times the recent lowest, with the pool full: latency rises with concurrency.
const GRADIENT: f64 = 2.0;
/// ... and checkouts per second at most this much above that tick's: the extra concurrency bought
/// nothing.
const RATE_GAIN: f64 = 1.1;

/// What one tick measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Length of the tick (ms).
    pub tick_ms: f64,
    /// Checkouts in the tick.
    pub checkouts: u64,
    /// Checkouts that had to wait.
    pub waited: u64,
    /// Time connections were held by clients in the tick (ms, summed over connections).
    pub held_ms: f64,
    /// Connections the pool holds now, and waiters.
    pub size: usize,
    pub waiting: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    pub target: usize,
    pub reason: Reason,
    /// Connections in use on average in the tick (Little's law), and the arrival rate.
    pub in_use: f64,
    pub checkouts_per_s: f64,
    /// Mean time a checkout held its connection (ms).
    pub mean_hold_ms: f64,
}

/// Why a tick decided what it did (rendered only when shown: a tick costs no formatting).
#[derive(Debug, Clone, Copy)]
pub enum Reason {
    Contended { waited: u64, hold_ms: f64 },
    Growing { in_use: f64, waited: u64 },
    Shrinking { busiest: f64 },
    Quiet { busiest: f64 },
    Steady,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Reason::Contended { waited, hold_ms } => write!(
                f,
                "{waited} checkouts waited, but hold time {hold_ms:.1} ms is over {GRADIENT}x the recent low: not growing"
            ),
            Reason::Growing { in_use, waited } => {
                write!(f, "{in_use:.1} connections in use, {waited} checkouts waited: growing")
            }
            Reason::Shrinking { busiest } => write!(f, "at most {busiest:.1} connections in use recently: shrinking"),
            Reason::Quiet { busiest } => write!(
                f,
                "at most {busiest:.1} connections in use recently: shrinking after {SHRINK_AFTER} quiet ticks"
            ),
            Reason::Steady => f.write_str("steady"),
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The seed's `calculate_optimal_pool_size` from measured rate and mean time: what an
/// application-side pool (asyncpg `min_size` / `max_size`) should be set to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recommendation {
    pub min_size: usize,
    pub max_size: usize,
    pub expected_utilization: f64,
    pub qps: f64,
    pub mean_ms: f64,
}

pub fn recommend(qps: f64, mean_ms: f64) -> Recommendation {
    let concurrent = qps * mean_ms / 1000.0;
    let max_size = (concurrent / TARGET_UTILIZATION) as usize;
    let min_size = 5.max((max_size as f64 * 0.3) as usize);
    Recommendation { min_size, max_size, expected_utilization: TARGET_UTILIZATION, qps, mean_ms }
}

pub struct Controller {
    target: usize,
    /// (connections in use, mean hold ms, checkouts per second) of recent ticks.
    history: VecDeque<(f64, f64, f64)>,
    quiet: u32,
    /// The last tick found hold time rising with concurrency: waiters do not grow the pool.
    contended: bool,
    /// Smoothed checkouts per second and mean hold time (ms), for the recommendation.
    rate: f64,
    hold: f64,
    /// Decisions that moved the target up and down so far (`pgpilot_pool_resizes_total`).
    grows: u64,
    shrinks: u64,
}

impl Controller {
    pub fn new(start: usize) -> Self {
        Self {
            target: start,
            history: VecDeque::with_capacity(WINDOW),
            quiet: 0,
            contended: false,
            rate: 0.0,
            hold: 0.0,
            grows: 0,
            shrinks: 0,
        }
    }

    pub fn target(&self) -> usize {
        self.target
    }

    /// (grows, shrinks): how often a decision moved the target, for the dashboard.
    pub fn resizes(&self) -> (u64, u64) {
        (self.grows, self.shrinks)
    }

    fn set_target(&mut self, target: usize) {
        match target.cmp(&self.target) {
            std::cmp::Ordering::Greater => self.grows += 1,
            std::cmp::Ordering::Less => self.shrinks += 1,
            std::cmp::Ordering::Equal => {}
        }
        self.target = target;
    }

    /// The seed's sizing for the load measured so far (None before any checkout).
    pub fn recommendation(&self) -> Option<Recommendation> {
        (self.rate > 0.0).then(|| recommend(self.rate, self.hold))
    }

    /// A checkout has to wait between ticks: one more connection, up to `max`, unless the last
    /// tick found the server contended. Whether it grew.
    pub fn grow_for_waiter(&mut self, max: usize) -> bool {
        if self.contended || self.target >= max {
            return false;
        }
        self.set_target(self.target + 1);
        self.quiet = 0;
        true
    }

    /// One tick: the new target within [min, max] and why.
    pub fn tick(&mut self, s: &Sample, min: usize, max: usize) -> Decision {
        let in_use = if s.tick_ms > 0.0 { s.held_ms / s.tick_ms } else { 0.0 };
        let mean_hold = if s.checkouts > 0 { s.held_ms / s.checkouts as f64 } else { 0.0 };
        if self.history.len() == WINDOW {
            self.history.pop_front();
        }
        let rate = if s.tick_ms > 0.0 { s.checkouts as f64 * 1000.0 / s.tick_ms } else { 0.0 };
        self.history.push_back((in_use, mean_hold, rate));
        // Checkouts waiting now are demand the tick's hold time has not seen yet.
        let busiest =
            self.history.iter().rev().take(DEMAND_WINDOW).map(|h| h.0).fold(in_use, f64::max) + s.waiting as f64;
        let wanted = ((busiest / TARGET_UTILIZATION).ceil() as usize).max(1);
        // The baseline: the lowest mean hold time of recent ticks with clearly fewer connections in
        // use (a change of workload at the same concurrency is not contention).
        let fewer = in_use * TARGET_UTILIZATION;
        // Contention is hold time up *and* no more done: with twice the hold time at more than
        // twice the concurrency the pool still serves more checkouts a second (busy clients, not a
        // busy server), and growing it is what lets them through.
        let baseline = self
            .history
            .iter()
            .filter(|h| h.1 > 0.0 && h.0 < fewer)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|h| (h.1, h.2));
        let contended = baseline
            .is_some_and(|(hold, base_rate)| mean_hold > GRADIENT * hold && rate <= base_rate * RATE_GAIN)
            && in_use >= self.target as f64 * TARGET_UTILIZATION
            && self.target >= 2;
        self.contended = contended;
        let waited = s.waited.max(s.waiting as u64);
        let (target, reason) = if waited > 0 && contended {
            self.quiet = 0;
            (self.target, Reason::Contended { waited, hold_ms: mean_hold })
        } else if waited > 0 || (wanted > self.target && !contended) {
            self.quiet = 0;
            let grown = self.target.max(wanted).max(self.target + usize::from(waited > 0));
            (grown, Reason::Growing { in_use, waited })
        } else if wanted < self.target {
            self.quiet += 1;
            if self.quiet >= SHRINK_AFTER {
                let step = (self.target / 10).max(self.target.saturating_sub(wanted) / 2).max(1);
                (self.target.saturating_sub(step).max(wanted), Reason::Shrinking { busiest })
            } else {
                (self.target, Reason::Quiet { busiest })
            }
        } else {
            self.quiet = 0;
            (self.target, Reason::Steady)
        };
        self.set_target(target.clamp(min.min(max), max));
        let checkouts_per_s = rate;
        // Smoothed over ~10 ticks; a tick without checkouts leaves the hold time as it was.
        self.rate += 0.1 * (checkouts_per_s - self.rate);
        if s.checkouts > 0 {
            self.hold = if self.hold == 0.0 { mean_hold } else { self.hold + 0.1 * (mean_hold - self.hold) };
        }
        Decision { target: self.target, reason, in_use, checkouts_per_s, mean_hold_ms: mean_hold }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(checkouts: u64, held_ms: f64, waited: u64, size: usize) -> Sample {
        Sample { tick_ms: 1000.0, checkouts, waited, held_ms, size, waiting: 0 }
    }

    #[test]
    fn the_seeds_formula() {
        let r = recommend(100.0, 340.0);
        assert_eq!((r.min_size, r.max_size), (13, 45));
        let r = recommend(200.0, 80.0);
        assert_eq!((r.min_size, r.max_size), (6, 21));
        assert_eq!(recommend(1.0, 1.0).min_size, 5);
    }

    #[test]
    fn grows_with_load_and_shrinks_after() {
        let mut c = Controller::new(2);
        // 40 connections busy on average (40 s of hold time in a 1 s tick), checkouts waiting.
        let d = c.tick(&sample(4000, 40_000.0, 500, 2), 2, 100);
        assert!(d.target >= 54, "{d:?}");
        let grown = d.target;
        // Load gone: the target holds for a few ticks (the busiest recent tick), then steps down.
        let mut targets = Vec::new();
        for _ in 0..(WINDOW + 60) {
            targets.push(c.tick(&sample(10, 10.0, 0, grown), 2, 100).target);
        }
        assert_eq!(targets[0], grown, "no shrink right after the burst");
        assert!(targets.windows(2).all(|w| w[1] <= w[0]), "shrinks monotonically: {targets:?}");
        assert!(*targets.last().unwrap() <= 3, "back near the minimum: {targets:?}");
        let first_shrink = targets.iter().position(|t| *t < grown).unwrap();
        assert!(first_shrink >= DEMAND_WINDOW + SHRINK_AFTER as usize - 2, "held a few ticks: {targets:?}");
        assert!(first_shrink <= DEMAND_WINDOW + SHRINK_AFTER as usize, "then shrinks: {targets:?}");
        assert!(targets[first_shrink + 4] <= 8, "half the gap a tick: {targets:?}");
        assert!(targets.windows(2).all(|w| w[0] - w[1] <= (w[0] - 2).div_ceil(2).max(w[0] / 10)), "{targets:?}");
    }

    #[test]
    fn a_longer_hold_that_still_serves_more_is_no_contention() {
        let mut c = Controller::new(5);
        // 5 busy, 5 ms each (1000/s); then checkouts waiting, 15 busy at 12 ms each... and 1250/s.
        c.tick(&sample(1000, 5_000.0, 0, 5), 2, 100);
        let d = c.tick(&sample(1250, 15_000.0, 10, 5), 2, 100);
        assert!(d.target > 5, "{d:?}");
        assert!(d.reason.to_string().contains("growing"), "{}", d.reason);
    }

    #[test]
    fn stays_within_bounds_and_stops_growing_when_hold_time_rises() {
        let mut c = Controller::new(5);
        assert_eq!(c.tick(&sample(100_000, 900_000.0, 10, 5), 5, 20).target, 20, "bounded by max");
        let mut c = Controller::new(10);
        // 5 ms per checkout, 5 busy; then the pool is full, checkouts wait, each holding 4x as long.
        c.tick(&sample(1000, 5_000.0, 0, 10), 2, 100);
        let d = c.tick(&sample(500, 10_000.0, 50, 10), 2, 100);
        assert_eq!(d.target, 10, "{d:?}");
        assert!(d.reason.to_string().contains("not growing"), "{}", d.reason);
    }
}
