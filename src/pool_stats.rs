//! PgBouncer's SHOW STATS counters per database (pgbouncer_exporter reads them by name) and their
//! averages over the last completed stats period (`server.stats_period_s`, PgBouncer's
//! `stats_period`): rates per second for counts and bytes, mean microseconds for times, computed
//! as PgBouncer's stats.c does from the totals at the period's two ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::Config;
use crate::insights::stats::QueryStats;
use crate::pool::set::PoolSet;

/// The counter names, in PgBouncer 1.24's order (SHOW STATS prefixes them with total_/avg_).
pub const COUNTERS: [&str; 11] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
];

/// One database's totals since start (all its pools), in `COUNTERS` order; times in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub counters: [u64; 11],
    pub wait_timeouts: u64,
}

const ASSIGNMENTS: usize = 0;
const XACTS: usize = 1;
const QUERIES: usize = 2;
const XACT_TIME: usize = 5;
const QUERY_TIME: usize = 6;
const WAIT_TIME: usize = 7;

/// Every database's totals, by name. Queries and their time come from the per-fingerprint
/// statistics (insights), the rest from the pools' own counters.
pub fn totals(pools: &PoolSet, queries: &QueryStats, cache_on: bool) -> Vec<(String, Totals)> {
    use std::sync::atomic::Ordering::Relaxed;
    let rows = queries.rows(cache_on);
    let mut out: Vec<(String, Totals)> = Vec::new();
    for pool in pools.all() {
        let mine = rows.iter().filter(|q| q.database == pool.key.database && q.user == pool.key.user);
        let (count, time_us) = mine.fold((0u64, 0f64), |(c, t), q| (c + q.calls, t + q.total_ms * 1000.0));
        let checkouts = pool.checkouts.load(Relaxed);
        let traffic = pool.traffic.counts();
        let counters = [
            checkouts,
            checkouts,
            count,
            traffic.received,
            traffic.sent,
            pool.held_ms.load(Relaxed) * 1000,
            time_us as u64,
            pool.traffic.wait_us(),
            traffic.client_parses,
            traffic.server_parses,
            traffic.binds,
        ];
        let t = Totals { counters, wait_timeouts: pool.wait_timeouts.load(Relaxed) };
        match out.iter_mut().find(|(d, _)| *d == pool.key.database) {
            Some((_, sum)) => {
                for (s, v) in sum.counters.iter_mut().zip(t.counters) {
                    *s += v;
                }
                sum.wait_timeouts += t.wait_timeouts;
            }
            None => out.push((pool.key.database.clone(), t)),
        }
    }
    out
}

/// PgBouncer's calc_average: per second for counts and bytes, per transaction / query /
/// assignment for the times.
pub fn average(old: &Totals, new: &Totals, period: Duration) -> [u64; 11] {
    let us = period.as_micros() as u64;
    let mut avg = [0u64; 11];
    if us == 0 {
        return avg;
    }
    let delta: [u64; 11] = std::array::from_fn(|i| new.counters[i].saturating_sub(old.counters[i]));
    for (i, d) in delta.iter().enumerate() {
        avg[i] = match i {
            XACT_TIME => per(*d, delta[XACTS]),
            QUERY_TIME => per(*d, delta[QUERIES]),
            WAIT_TIME => per(*d, delta[ASSIGNMENTS]),
            _ => (*d as u128 * 1_000_000 / us as u128) as u64,
        };
    }
    avg
}

fn per(total: u64, n: u64) -> u64 {
    total.checked_div(n).unwrap_or(0)
}

/// The last completed period's averages, and the totals its successor started from.
#[derive(Default)]
pub struct Periods {
    state: Mutex<PeriodState>,
}

#[derive(Default)]
struct PeriodState {
    started: Option<Instant>,
    at_start: Vec<(String, Totals)>,
    averages: Vec<(String, [u64; 11])>,
}

impl Periods {
    /// Ends the current period with `now` totals and starts the next.
    pub fn roll(&self, now: Vec<(String, Totals)>, at: Instant) {
        let mut st = self.state.lock();
        if let Some(started) = st.started {
            let period = at.saturating_duration_since(started);
            let zero = Totals::default();
            st.averages = now
                .iter()
                .map(|(db, t)| {
                    let old = st.at_start.iter().find(|(d, _)| d == db).map_or(&zero, |(_, o)| o);
                    (db.clone(), average(old, t, period))
                })
                .collect();
        }
        st.started = Some(at);
        st.at_start = now;
    }

    /// A database's averages of the last completed period (zeros before the first one ends).
    pub fn averages(&self, database: &str) -> [u64; 11] {
        let st = self.state.lock();
        st.averages.iter().find(|(d, _)| d == database).map_or([0; 11], |(_, a)| *a)
    }
}

/// Rolls the periods every `server.stats_period_s` (read at each turn: RELOAD applies at the next).
pub async fn run(periods: Arc<Periods>, pools: Arc<PoolSet>, queries: Arc<QueryStats>, config: Arc<ArcSwap<Config>>) {
    loop {
        let cfg = config.load_full();
        periods.roll(totals(&pools, &queries, cfg.cache.enabled), Instant::now());
        crate::timers::sleep(Duration::from_secs(cfg.server.stats_period_s.max(1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(counters: [u64; 11]) -> Totals {
        Totals { counters, wait_timeouts: 0 }
    }

    #[test]
    fn averages_are_rates_for_counts_and_means_for_times() {
        let old = totals([10, 10, 20, 1000, 5000, 100, 50, 0, 1, 1, 4]);
        // 2 s later: 100 more assignments/xacts, 200 queries, 4000 bytes in, 10000 out.
        let new = totals([110, 110, 220, 5000, 15000, 100 + 100 * 300, 50 + 200 * 120, 100 * 7, 41, 21, 404]);
        let avg = average(&old, &new, Duration::from_secs(2));
        assert_eq!(avg, [50, 50, 100, 2000, 5000, 300, 120, 7, 20, 10, 200]);
    }

    #[test]
    fn a_period_without_transactions_averages_to_zero_times() {
        let t = totals([5; 11]);
        assert_eq!(average(&t, &t, Duration::from_secs(60)), [0; 11]);
        assert_eq!(average(&t, &t, Duration::ZERO), [0; 11]);
    }

    #[test]
    fn the_first_period_has_no_averages_the_second_has() {
        let p = Periods::default();
        let at = Instant::now();
        p.roll(vec![("db".into(), totals([0; 11]))], at);
        assert_eq!(p.averages("db"), [0; 11]);
        let mut c = [0u64; 11];
        c[XACTS] = 60;
        p.roll(vec![("db".into(), totals(c))], at + Duration::from_secs(60));
        assert_eq!(p.averages("db")[XACTS], 1);
        assert_eq!(p.averages("other"), [0; 11]);
    }
}
