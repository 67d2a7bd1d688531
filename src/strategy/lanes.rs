//! Which fingerprints take the slow lane: per pool (database, user), those whose p95 is above
//! `slow_lane_factor` times the median p95 of the pool's measured fingerprints, after
//! `slow_lane_min_calls` calls and above `slow_lane_min_p95_ms` (a 2 ms statement among 0.1 ms
//! ones is not worth a lane). The median, not the mean: one flood of slow statements does not
//! raise the bar it is measured against. Pins come first.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::config::{PinnedStrategy, StrategyConfig};
use crate::insights::stats::LaneInput;
use crate::sql::learned::Pinned;

/// Applies pins and lane decisions to every measured fingerprint's `Learned`.
pub fn decide(inputs: &[LaneInput], cfg: &StrategyConfig, now_ms: u64) {
    let medians = medians(inputs, cfg.slow_lane_min_calls);
    for input in inputs {
        let a = &input.analysis;
        let pin = (!cfg.pins.is_empty())
            .then(|| {
                let tables: Vec<&str> = a.read_names.iter().chain(a.written_names.iter()).map(|t| &**t).collect();
                cfg.pin_for(&a.fingerprint_hex(), &tables)
            })
            .flatten();
        a.learned.pin(pin.map(pinned));
        let slow = match pin {
            Some(PinnedStrategy::SlowLane) => true,
            Some(PinnedStrategy::PassThrough) => false,
            _ => cfg.enabled && cfg.slow_lane && measured_slow(input, cfg, &medians),
        };
        if a.learned.slow_lane.swap(slow, Relaxed) != slow {
            a.learned.lane_changed_ms.store(now_ms, Relaxed);
            tracing::debug!(
                fingerprint = %a.fingerprint_hex(),
                database = %input.database,
                p95_ms = input.p95_us as f64 / 1000.0,
                median_p95_ms = medians.get(&(input.database.clone(), input.user.clone())).map(|m| *m as f64 / 1000.0),
                slow,
                "strategy: slow lane {}",
                if slow { "entered" } else { "left" }
            );
        }
    }
}

/// The configuration's spelling of a pin, as the data path reads it.
fn pinned(p: PinnedStrategy) -> Pinned {
    match p {
        PinnedStrategy::Cache => Pinned::Cache,
        PinnedStrategy::PassThrough => Pinned::PassThrough,
        PinnedStrategy::SlowLane => Pinned::SlowLane,
    }
}

fn measured_slow(input: &LaneInput, cfg: &StrategyConfig, medians: &HashMap<(Arc<str>, Arc<str>), u64>) -> bool {
    if input.calls < cfg.slow_lane_min_calls || (input.p95_us as f64) < cfg.slow_lane_min_p95_ms * 1000.0 {
        return false;
    }
    let Some(&median) = medians.get(&(input.database.clone(), input.user.clone())) else { return false };
    input.p95_us as f64 > cfg.slow_lane_factor * median as f64
}

/// The median p95 of each pool's fingerprints with enough calls (at least two of them: a pool
/// running one statement has nothing to be slow against).
fn medians(inputs: &[LaneInput], min_calls: u64) -> HashMap<(Arc<str>, Arc<str>), u64> {
    let mut by_pool: HashMap<(Arc<str>, Arc<str>), Vec<u64>> = HashMap::new();
    for i in inputs.iter().filter(|i| i.calls >= min_calls) {
        by_pool.entry((i.database.clone(), i.user.clone())).or_default().push(i.p95_us);
    }
    by_pool
        .into_iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(k, mut v)| {
            v.sort_unstable();
            (k, v[(v.len() - 1) / 2])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::strategy::Pin;

    fn input(db: &str, sql: &str, calls: u64, p95_ms: u64) -> LaneInput {
        let a = crate::sql::Analyzer::new(100).analyze(sql).expect("one statement");
        LaneInput { database: db.into(), user: "u".into(), analysis: a, calls, p95_us: p95_ms * 1000 }
    }

    fn slow(i: &LaneInput) -> bool {
        i.analysis.learned.slow_lane.load(Relaxed)
    }

    #[test]
    fn a_statement_far_above_its_pools_median_takes_the_slow_lane() {
        let inputs = vec![
            input("db", "SELECT a FROM t WHERE id = $1", 100, 2),
            input("db", "SELECT b FROM t WHERE id = $1", 100, 3),
            input("db", "SELECT c FROM t WHERE id = $1", 100, 4),
            input("db", "SELECT pg_sleep(0.3), d FROM t", 100, 300),
            input("db", "SELECT e FROM t", 5, 900),
            input("other", "SELECT f FROM t", 100, 40),
        ];
        decide(&inputs, &StrategyConfig::default(), 1);
        let got: Vec<bool> = inputs.iter().map(slow).collect();
        assert_eq!(got, [false, false, false, true, false, false], "too few calls, or alone in its pool: not slow");
        assert_eq!(inputs[3].analysis.learned.lane_changed_ms.load(Relaxed), 1);
    }

    #[test]
    fn a_slow_statement_below_the_floor_stays_and_pins_win() {
        let mut cfg = StrategyConfig::default();
        let inputs = vec![
            input("db", "SELECT a FROM t WHERE id = $1", 100, 1),
            input("db", "SELECT b FROM t WHERE id = $1", 100, 1),
            input("db", "SELECT c FROM t", 100, 10),
            input("db", "SELECT d FROM big", 100, 500),
        ];
        decide(&inputs, &cfg, 1);
        assert!(!slow(&inputs[2]), "10x the median but under slow_lane_min_p95_ms");
        assert!(slow(&inputs[3]));
        cfg.pins = vec![
            Pin { table: Some("big".into()), strategy: PinnedStrategy::PassThrough, ..Default::default() },
            Pin {
                fingerprint: Some(inputs[0].analysis.fingerprint_hex()),
                strategy: PinnedStrategy::SlowLane,
                ..Default::default()
            },
        ];
        decide(&inputs, &cfg, 2);
        assert!(!slow(&inputs[3]) && slow(&inputs[0]));
        assert_eq!(inputs[3].analysis.learned.pinned(), Some(Pinned::PassThrough));
        cfg.pins.clear();
        cfg.enabled = false;
        decide(&inputs, &cfg, 3);
        assert!(!slow(&inputs[3]) && !slow(&inputs[0]), "strategy off: no lanes");
        assert_eq!(inputs[3].analysis.learned.pinned(), None);
    }
}
