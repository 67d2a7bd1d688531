//! The server-prepared strategy (`strategy.server_prepared`): a repeated unnamed statement can be
//! served from a statement prepared on the server (`prepared.reuse_unnamed`'s mechanism: no parse
//! and no plan upstream per run), but PostgreSQL then switches it to a generic plan after five
//! runs, which can be slower than the custom plan an unnamed statement gets each time. So it is
//! measured, not assumed: per statement shape, runs alternate between as the client sent them and
//! served server-prepared until each side has `RUNS` timed runs, and server-prepared is kept
//! unless it measured slower (its low quantile above `KEEP_UNLESS_ABOVE` of the unnamed one); the
//! choice is measured again every `REMEASURE_MS`.
//!
//! A tie goes to the server-prepared copy, as PostgreSQL's own plan cache takes a generic plan
//! estimated no costlier than its custom plans with their planning (plancache.c,
//! `choose_custom_plan`): what it saves, a parse and a plan per run, is server CPU that every
//! client shares and that one run's time under load barely shows (pgbench -M extended, 10 clients
//! on 2 cores: 4% lower at the 10th percentile for 37% less server CPU per transaction; while
//! only a 5% faster side was kept, the choice fell either side of that line between pgpilot's two
//! configurations in one benchmark run: 150 against 157 us dropped, 228 against 247 kept),
//! while a generic plan that runs worse shows plainly (one that evaluates per row what the custom
//! plans fold to a constant: ~3x; an index scan over a skewed column's common value alone measured
//! anywhere from 40% slower to 6% faster with the table in memory). Only where it runs worse for
//! most runs, though: judged at the 10th percentile, a generic plan bad for a minority of the
//! values a shape is run with does not show (as before this tie rule); its run times in
//! `/queries` show it.
//!
//! Three things make the comparison fair (before them the choice flipped between identical
//! pgbench runs, 7 kept of 10): the sides alternate, so both see the same load; each side is read
//! at its 10th percentile, not its mean: waiting (for a core, for the proxy's loop, for the
//! server) only ever adds to a run's time, so the fast end of each side is its service time, which
//! is what parsing and planning change, while one run stalled behind a busy core (hundreds of
//! milliseconds against a typical fraction of one) would move a mean of fifty by more than the
//! difference sought; and a server-prepared run counts only once its copy on that server
//! connection has run `CUSTOM_PLAN_RUNS` times: the first runs of each copy pay its Parse and
//! PostgreSQL's custom plans, and what is being decided is the plan it settles on.

use std::sync::atomic::Ordering::Relaxed;

use crate::sql::learned::{Learned, PreparedPhase, PreparedSamples};

/// Timed runs per side.
pub const RUNS: usize = 100;
/// Server-prepared is kept unless its low quantile is above this share of the unnamed one.
const KEEP_UNLESS_ABOVE: f64 = 1.05;
/// A decision is measured again after this long.
const REMEASURE_MS: u64 = 10 * 60 * 1000;
/// PostgreSQL plans a prepared statement's first five executions afresh (custom plans) before it
/// may switch to a generic one (plancache.c, `choose_custom_plan`).
pub const CUSTOM_PLAN_RUNS: u32 = 5;
/// Timed runs as sent before the alternation starts: a shape run only a few times is never
/// prepared on the server (a copy per server connection and a registry entry for nothing).
const AS_SENT_FIRST: u32 = 50;

/// How a run reached the server, as far as the strategy's timing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Served {
    /// Not a run of an unnamed Parse in transaction mode (a simple Query, a named portal, session
    /// mode): it tells neither side anything.
    #[default]
    Untimed,
    /// As the client sent it (an unnamed Parse passed through).
    AsSent,
    /// From a server-prepared copy; the number of runs that copy has had, this one included.
    Prepared(u32),
}

/// Whether this run of the shape's unnamed Parse should be served from a server-prepared
/// statement: while measuring, after `AS_SENT_FIRST` runs as sent, the side of the session's
/// alternation (`session_side`, flipped by the session at each timed Execute: a shared counter
/// would tie the sides to clients that run in lockstep, and flipping per Parse would land every
/// asyncpg Bind, which follows two Parses of its text, on one side); then as decided.
pub fn wants_server_prepared(l: &Learned, session_side: bool, now_ms: impl Fn() -> u64) -> bool {
    match l.prepared_phase() {
        PreparedPhase::Measuring => {
            if l.prepared_turn.load(Relaxed) < AS_SENT_FIRST {
                return false;
            }
            !gave_up(l, now_ms()) && session_side
        }
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
pub fn note_run(l: &Learned, us: u64, served: Served, now_ms: impl Fn() -> u64) {
    if served == Served::Untimed || l.prepared_phase() != PreparedPhase::Measuring {
        return;
    }
    if l.prepared_turn.fetch_add(1, Relaxed) + 1 == AS_SENT_FIRST {
        l.prepared_changed_ms.store(now_ms().max(1), Relaxed); // the alternation starts: so does its time limit
    }
    if matches!(served, Served::Prepared(runs) if runs <= CUSTOM_PLAN_RUNS) {
        return;
    }
    let mut samples = l.prepared_samples.lock().unwrap_or_else(|e| e.into_inner());
    let side = if served == Served::AsSent { &mut samples.as_sent } else { &mut samples.prepared };
    // Each side keeps its latest runs, so the two compared are close in time whichever fills first.
    if side.len() == RUNS {
        side.pop_front();
    }
    side.push_back(u32::try_from(us).unwrap_or(u32::MAX));
    if samples.as_sent.len() < RUNS || samples.prepared.len() < RUNS || l.prepared_phase() != PreparedPhase::Measuring {
        return;
    }
    let (unnamed, trial) = (low_quantile(&samples.as_sent), low_quantile(&samples.prepared));
    *samples = PreparedSamples::default();
    l.prepared_unnamed_us.store(unnamed, Relaxed);
    l.prepared_trial_us.store(trial, Relaxed);
    let keep = trial as f64 <= unnamed as f64 * KEEP_UNLESS_ABOVE;
    l.set_prepared_phase(if keep { PreparedPhase::Kept } else { PreparedPhase::Dropped }, now_ms());
    tracing::debug!(unnamed_us = unnamed, prepared_us = trial, keep, "strategy: server-prepared measured");
}

/// Each side's server time (µs) at the last decision, its 10th percentile: (as sent unnamed,
/// served server-prepared).
pub fn typical(l: &Learned) -> (f64, f64) {
    (l.prepared_unnamed_us.load(Relaxed) as f64, l.prepared_trial_us.load(Relaxed) as f64)
}

fn low_quantile(side: &std::collections::VecDeque<u32>) -> u64 {
    let mut v: Vec<u32> = side.iter().copied().collect();
    let at = v.len() / 10;
    let (_, m, _) = v.select_nth_unstable(at);
    u64::from(*m)
}

fn stale(l: &Learned, now_ms: u64) -> bool {
    now_ms.saturating_sub(l.prepared_changed_ms.load(Relaxed)) >= REMEASURE_MS
}

fn restart(l: &Learned, now_ms: u64) {
    *l.prepared_samples.lock().unwrap_or_else(|e| e.into_inner()) = PreparedSamples::default();
    l.prepared_turn.store(0, Relaxed);
    l.set_prepared_phase(PreparedPhase::Measuring, now_ms);
}

/// An alternation that has not decided within `REMEASURE_MS` of its start (copies that never get
/// past their custom plans, `prepared.reuse_unnamed` leaving no run as sent) ends as not kept,
/// with no times (/queries says it did not decide), to be tried again after as long.
fn gave_up(l: &Learned, now_ms: u64) -> bool {
    if now_ms.saturating_sub(l.prepared_changed_ms.load(Relaxed)) < REMEASURE_MS {
        return false;
    }
    l.prepared_unnamed_us.store(0, Relaxed);
    l.prepared_trial_us.store(0, Relaxed);
    l.set_prepared_phase(PreparedPhase::Dropped, now_ms);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` runs of each side, the server-prepared ones on copies past their custom plans.
    fn runs(l: &Learned, as_sent: u64, prepared: u64, n: usize, now: u64) {
        for _ in 0..n {
            note_run(l, as_sent, Served::AsSent, || now);
            note_run(l, prepared, Served::Prepared(CUSTOM_PLAN_RUNS + 1), || now);
        }
    }

    #[test]
    fn as_sent_first_then_the_sessions_side() {
        let l = Learned::default();
        for _ in 0..AS_SENT_FIRST {
            assert!(!wants_server_prepared(&l, true, || 1), "a shape run a few times is never prepared");
            note_run(&l, 500, Served::Untimed, || 1);
            note_run(&l, 500, Served::AsSent, || 1);
        }
        assert!(wants_server_prepared(&l, true, || 1) && !wants_server_prepared(&l, false, || 1));
        assert!(wants_server_prepared(&l, true, || 1 + REMEASURE_MS - 1), "within its time limit");
        assert!(!wants_server_prepared(&l, true, || 1 + REMEASURE_MS), "the time limit counts from here");
    }

    #[test]
    fn kept_unless_slower() {
        let faster = Learned::default();
        runs(&faster, 500, 300, RUNS - 1, 1);
        assert_eq!(faster.prepared_phase(), PreparedPhase::Measuring, "{} runs a side decide", RUNS);
        runs(&faster, 500, 300, 1, 2);
        assert_eq!(faster.prepared_phase(), PreparedPhase::Kept);
        assert!(wants_server_prepared(&faster, true, || 3) && wants_server_prepared(&faster, true, || 3));
        assert_eq!(typical(&faster), (500.0, 300.0));

        let tie = Learned::default();
        runs(&tie, 500, 520, RUNS, 1); // no slower past the noise: its parse and plan saved
        assert_eq!(tie.prepared_phase(), PreparedPhase::Kept);

        let slower = Learned::default();
        runs(&slower, 500, 700, RUNS, 1); // a generic plan worse than the custom ones
        assert_eq!(slower.prepared_phase(), PreparedPhase::Dropped);
        assert!(!wants_server_prepared(&slower, true, || 3) && !wants_server_prepared(&slower, true, || 3));
        runs(&slower, 500, 1, RUNS, 4);
        assert_eq!(slower.prepared_phase(), PreparedPhase::Dropped, "a decision is not moved by later runs");
    }

    #[test]
    fn a_few_stalled_runs_do_not_decide() {
        // A run stalled behind a busy core takes hundreds of milliseconds: twenty of them on the
        // faster side would have made its mean the slower.
        let l = Learned::default();
        for i in 0..RUNS {
            note_run(&l, 500, Served::AsSent, || 1);
            let us = if i % 5 == 0 { 300_000 } else { 300 };
            note_run(&l, us, Served::Prepared(10), || 1);
        }
        assert_eq!(l.prepared_phase(), PreparedPhase::Kept);
        assert_eq!(typical(&l), (500.0, 300.0));
    }

    #[test]
    fn a_copys_first_runs_are_not_timed() {
        // Each server connection's copy pays its Parse and five custom plans first: those runs say
        // nothing of the plan it settles on, and do not fill the server-prepared side.
        let l = Learned::default();
        for _ in 0..RUNS {
            note_run(&l, 500, Served::AsSent, || 1);
        }
        for copy_runs in 1..=CUSTOM_PLAN_RUNS {
            for _ in 0..RUNS {
                note_run(&l, 5_000, Served::Prepared(copy_runs), || 1);
            }
        }
        assert_eq!(l.prepared_phase(), PreparedPhase::Measuring);
        runs(&l, 500, 300, RUNS, 1);
        assert_eq!(l.prepared_phase(), PreparedPhase::Kept);
        assert_eq!(typical(&l), (500.0, 300.0));
    }

    #[test]
    fn each_side_keeps_its_latest_runs() {
        // Unnamed runs timed long before the server-prepared side filled are replaced by later
        // ones: the two sides compare the same stretch of load.
        let l = Learned::default();
        for _ in 0..3 * RUNS {
            note_run(&l, 100, Served::AsSent, || 1);
        }
        runs(&l, 400, 300, RUNS, 1);
        assert_eq!(typical(&l), (400.0, 300.0));
        assert_eq!(l.prepared_phase(), PreparedPhase::Kept, "the early fast runs would have dropped it");
    }

    #[test]
    fn a_decision_is_measured_again_after_a_while() {
        let l = Learned::default();
        runs(&l, 500, 900, RUNS, 1);
        assert_eq!(l.prepared_phase(), PreparedPhase::Dropped);
        assert!(!wants_server_prepared(&l, true, || 2 + REMEASURE_MS));
        assert_eq!(l.prepared_phase(), PreparedPhase::Measuring);
        assert!(!wants_server_prepared(&l, true, || 3 + REMEASURE_MS), "as sent first again");
        runs(&l, 900, 400, RUNS, 3);
        assert_eq!(l.prepared_phase(), PreparedPhase::Kept, "the data changed: now it pays");
    }

    #[test]
    fn a_measurement_that_cannot_decide_gives_up() {
        // Copies that never get past their custom plans (or `prepared.reuse_unnamed` leaving no
        // run as sent): after as long as a decision lasts, it stops trying.
        let l = Learned::default();
        for _ in 0..3 * RUNS {
            note_run(&l, 500, Served::AsSent, || 1_000);
            note_run(&l, 500, Served::Prepared(1), || 1_000);
        }
        assert!(wants_server_prepared(&l, true, || 1_000 + REMEASURE_MS - 1));
        assert_eq!(l.prepared_phase(), PreparedPhase::Measuring);
        assert!(!wants_server_prepared(&l, true, || 1_000 + REMEASURE_MS));
        assert_eq!(l.prepared_phase(), PreparedPhase::Dropped);
        assert_eq!(typical(&l), (0.0, 0.0), "no times: it did not decide");
    }
}
