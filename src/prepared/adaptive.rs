//! The server-prepared strategy (`strategy.server_prepared`): a repeated unnamed statement can be
//! served from a statement prepared on the server (`prepared.reuse_unnamed`'s mechanism: no parse
//! and no plan upstream per run), but PostgreSQL then switches it to a generic plan after five
//! runs, which can be slower than the custom plan an unnamed statement gets each time. So it is
//! measured, not assumed: per statement shape, `RUNS` runs as the client sent them, then `RUNS`
//! served server-prepared, and the faster is kept (server-prepared only when at least
//! `KEEP_BELOW` of the unnamed mean); the choice is measured again every `REMEASURE_MS`.
//! Runs are attributed to the phase current when they complete (a run in flight across a phase
//! change counts for the next phase: noise of one run in `RUNS`).

use std::sync::atomic::Ordering::Relaxed;

use crate::sql::learned::{Learned, PreparedPhase};

/// Runs measured per phase.
pub const RUNS: u32 = 50;
/// Server-prepared is kept when its mean is below this share of the unnamed mean.
const KEEP_BELOW: f64 = 0.95;
/// A decision is measured again after this long.
const REMEASURE_MS: u64 = 10 * 60 * 1000;

/// Whether this run of the shape's unnamed Parse should be served from a server-prepared
/// statement (a trial, or a kept decision).
/// (`now_ms` is read only for a decided shape: a run being measured needs no clock.)
pub fn wants_server_prepared(l: &Learned, now_ms: impl Fn() -> u64) -> bool {
    match l.prepared_phase() {
        PreparedPhase::Measuring => false,
        PreparedPhase::Trying => true,
        phase => {
            let now = now_ms();
            if stale(l, now) {
                restart(l, now);
                return false;
            }
            phase == PreparedPhase::Kept
        }
    }
}

/// A completed run of the shape (server time `us`), not pipelined, not from the cache.
pub fn note_run(l: &Learned, us: u64, now_ms: impl Fn() -> u64) {
    let phase = l.prepared_phase();
    let sum = match phase {
        PreparedPhase::Measuring => &l.prepared_unnamed_us,
        PreparedPhase::Trying => &l.prepared_trial_us,
        PreparedPhase::Kept | PreparedPhase::Dropped => return,
    };
    sum.fetch_add(us, Relaxed);
    // Exactly one completion sees the count reach RUNS.
    if l.prepared_runs.fetch_add(1, Relaxed) + 1 != RUNS {
        return;
    }
    l.prepared_runs.store(0, Relaxed);
    let now_ms = now_ms();
    match phase {
        PreparedPhase::Measuring => l.set_prepared_phase(PreparedPhase::Trying, now_ms),
        _ => {
            let (unnamed, trial) = means(l);
            let keep = trial < unnamed * KEEP_BELOW;
            l.set_prepared_phase(if keep { PreparedPhase::Kept } else { PreparedPhase::Dropped }, now_ms);
            tracing::debug!(unnamed_us = unnamed, prepared_us = trial, keep, "strategy: server-prepared measured");
        }
    }
}

/// Mean server time (µs) of the last measurement: (as sent unnamed, served server-prepared).
pub fn means(l: &Learned) -> (f64, f64) {
    let mean = |sum: &std::sync::atomic::AtomicU64| sum.load(Relaxed) as f64 / RUNS as f64;
    (mean(&l.prepared_unnamed_us), mean(&l.prepared_trial_us))
}

fn stale(l: &Learned, now_ms: u64) -> bool {
    now_ms.saturating_sub(l.prepared_changed_ms.load(Relaxed)) >= REMEASURE_MS
}

fn restart(l: &Learned, now_ms: u64) {
    l.prepared_runs.store(0, Relaxed);
    l.prepared_unnamed_us.store(0, Relaxed);
    l.prepared_trial_us.store(0, Relaxed);
    l.set_prepared_phase(PreparedPhase::Measuring, now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase_runs(l: &Learned, us: u64, now: u64) {
        for _ in 0..RUNS {
            note_run(l, us, || now);
        }
    }

    #[test]
    fn kept_where_faster_dropped_where_slower() {
        let faster = Learned::default();
        assert!(!wants_server_prepared(&faster, || 1), "measured as sent first");
        phase_runs(&faster, 500, 1);
        assert!(wants_server_prepared(&faster, || 2), "then tried");
        phase_runs(&faster, 300, 2);
        assert_eq!(faster.prepared_phase(), PreparedPhase::Kept);
        assert!(wants_server_prepared(&faster, || 3));
        assert_eq!(means(&faster), (500.0, 300.0));

        let slower = Learned::default();
        phase_runs(&slower, 500, 1);
        phase_runs(&slower, 490, 2); // a generic plan no better than the custom one
        assert_eq!(slower.prepared_phase(), PreparedPhase::Dropped);
        assert!(!wants_server_prepared(&slower, || 3));
        note_run(&slower, 1, || 4);
        assert_eq!(slower.prepared_phase(), PreparedPhase::Dropped, "a decision is not moved by later runs");
    }

    #[test]
    fn a_decision_is_measured_again_after_a_while() {
        let l = Learned::default();
        phase_runs(&l, 500, 1);
        phase_runs(&l, 900, 2);
        assert_eq!(l.prepared_phase(), PreparedPhase::Dropped);
        assert!(!wants_server_prepared(&l, || 2 + REMEASURE_MS));
        assert_eq!(l.prepared_phase(), PreparedPhase::Measuring);
        phase_runs(&l, 900, 3);
        phase_runs(&l, 400, 4);
        assert_eq!(l.prepared_phase(), PreparedPhase::Kept, "the data changed: now it pays");
    }
}
