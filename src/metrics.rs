//! Prometheus metrics through the `metrics` facade: the recorder, the descriptions and the
//! counters the data path bumps. Gauges describing pools, clients and the cache are set from live
//! state just before each scrape (http/metrics.rs), so they cost nothing on the data path. The
//! duration histograms are pgpilot's own, rendered after the exporter's text: the pool wait
//! here, the per-fingerprint query durations in insights.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const POOL_WAIT: &str = "pgpilot_pool_wait_time_seconds";

/// Bucket bounds (seconds) of every duration histogram: the pool wait here and the per-fingerprint
/// query durations insights renders.
pub const BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the global recorder. (A histogram recorded through it would get these buckets, and
/// would need a periodic `run_upkeep`: its samples pile up between scrapes. pgpilot records none.)
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)?
        .install_recorder()?;
    describe_pools();
    describe_prepared();
    describe_cache();
    Ok(handle)
}

/// The help lines of the pools', clients' and catalog statistics' series.
fn describe_pools() {
    metrics::describe_gauge!("pgpilot_pool_connections", "Server connections per pool by state");
    metrics::describe_gauge!("pgpilot_pool_size", "Configured maximum server connections per pool");
    metrics::describe_gauge!(
        "pgpilot_pool_target",
        "Adaptive target of server connections per pool (src/pool/sizing.rs)"
    );
    metrics::describe_counter!(
        "pgpilot_pool_resizes_total",
        "Sizing decisions that moved a pool's target, by direction"
    );
    metrics::describe_counter!("pgpilot_index_scans_total", "Index scans per index (pg_stat_user_indexes)");
    metrics::describe_gauge!("pgpilot_index_size_bytes", "Index size (the 50 largest per database)");
    metrics::describe_gauge!("pgpilot_index_bloat_percent", "Estimated btree index bloat (src/index_usage/indexes.rs)");
    metrics::describe_gauge!("pgpilot_clients", "Client connections by state");
    metrics::describe_counter!(
        "pgpilot_table_scans_total",
        "Sequential and index scans per table (pg_stat_user_tables, read every insights.index_usage_interval_s)"
    );
}

/// The help lines of the prepared statements' series.
fn describe_prepared() {
    metrics::describe_gauge!("pgpilot_prepared_statements", "Distinct prepared statements in the global registry");
    metrics::describe_counter!(
        "pgpilot_prepared_cache_hits_total",
        "Parse/Bind/Describe that found the statement on the server"
    );
    metrics::describe_counter!(
        "pgpilot_prepared_cache_misses_total",
        "Client Parse of a statement the server did not have"
    );
    metrics::describe_counter!(
        "pgpilot_prepared_cache_evictions_total",
        "Statements closed on a server to make room (LRU)"
    );
    metrics::describe_counter!(
        "pgpilot_prepared_reparses_total",
        "Parse injected before Bind/Describe on a server lacking the statement"
    );
    metrics::describe_counter!(
        "pgpilot_prepared_stale_retries_total",
        "Runs sent again on a freshly prepared copy after the server's copy proved stale (DDL outside pgpilot)"
    );
}

/// The help lines of the result cache's (and the analysis') series.
fn describe_cache() {
    metrics::describe_counter!("pgpilot_cache_hits_total", "Reads answered from the result cache, by tier");
    metrics::describe_counter!("pgpilot_cache_misses_total", "Cacheable reads sent to the server");
    metrics::describe_counter!(
        "pgpilot_cache_skipped_total",
        "Cacheable reads not looked up: their statement's results do not repeat enough to pay for it"
    );
    metrics::describe_counter!("pgpilot_cache_evictions_total", "Entries dropped to stay within cache.max_bytes");
    metrics::describe_counter!(
        "pgpilot_cache_invalidations_total",
        "Table (or database) invalidations from committed writes, by source: seen through pgpilot (proxy), \
         read from the replication stream (replication), received from another replica (redis)"
    );
    metrics::describe_gauge!(
        "pgpilot_cache_replication_lag_seconds",
        "How far behind the server a database's invalidation stream is known to be (NaN: not caught up yet)"
    );
    metrics::describe_counter!("pgpilot_cache_redis_errors_total", "Redis calls that failed or timed out");
    metrics::describe_gauge!("pgpilot_cache_bytes", "Bytes held by the in-process cache tier");
    metrics::describe_counter!(
        "pgpilot_statements_unanalyzed_total",
        "Statements longer than insights.max_analyzed_bytes: not parsed, treated as unknown (never cached)"
    );
}

/// The pool wait: per bucket (not cumulative; the last one past the largest bound) and the sum in
/// nanoseconds; the count is the buckets' total, so one render never contradicts itself. Atomic
/// counts rather than the exporter's histogram, whose sample path (a timestamp and a push into a
/// lock-free list per call, folded into buckets later) cost ~135 instructions of a ~10k
/// instruction -S transaction, for a value that is almost always zero.
static POOL_WAITS: [AtomicU64; BUCKETS.len() + 1] = [const { AtomicU64::new(0) }; BUCKETS.len() + 1];
static POOL_WAIT_SUM_NS: AtomicU64 = AtomicU64::new(0);

/// Called once per checkout.
pub fn pool_wait(d: Duration) {
    let secs = d.as_secs_f64();
    let bucket = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
    POOL_WAITS[bucket].fetch_add(1, Relaxed);
    if !d.is_zero() {
        POOL_WAIT_SUM_NS.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }
}

/// The pool wait histogram in Prometheus' text format, appended to `out`.
pub fn render_pool_wait(out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {POOL_WAIT} Time clients waited for a server connection");
    let _ = writeln!(out, "# TYPE {POOL_WAIT} histogram");
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += POOL_WAITS[i].load(Relaxed);
        let _ = writeln!(out, "{POOL_WAIT}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count = cumulative + POOL_WAITS[BUCKETS.len()].load(Relaxed);
    let _ = writeln!(out, "{POOL_WAIT}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{POOL_WAIT}_sum {}", POOL_WAIT_SUM_NS.load(Relaxed) as f64 / 1e9);
    let _ = writeln!(out, "{POOL_WAIT}_count {count}");
}

pub fn n_plus_one_detected() {
    metrics::counter!("pgpilot_n_plus_one_detected_total").increment(1);
}

pub fn slow_query() {
    static HANDLE: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| metrics::counter!("pgpilot_slow_queries_total")).increment(1);
}

pub fn unanalyzed() {
    metrics::counter!("pgpilot_statements_unanalyzed_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("{series}:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Cumulative buckets, +Inf equal to the count, the sum in seconds (other tests may record
    /// too: only increases are compared).
    #[test]
    fn the_pool_wait_renders_as_a_prometheus_histogram() {
        let read = || {
            let mut out = String::new();
            render_pool_wait(&mut out);
            out
        };
        let before = read();
        pool_wait(Duration::ZERO);
        pool_wait(Duration::from_millis(300));
        let after = read();
        assert!(after.contains("# TYPE pgpilot_pool_wait_time_seconds histogram"), "{after}");
        let grew = |series: &str| value(&after, series) - value(&before, series);
        assert!(grew("pgpilot_pool_wait_time_seconds_bucket{le=\"0.0001\"}") >= 1.0);
        assert!(grew("pgpilot_pool_wait_time_seconds_bucket{le=\"0.5\"}") >= 2.0);
        assert!(grew("pgpilot_pool_wait_time_seconds_count") >= 2.0);
        assert!(grew("pgpilot_pool_wait_time_seconds_sum") >= 0.3);
        let inf = value(&after, "pgpilot_pool_wait_time_seconds_bucket{le=\"+Inf\"}");
        assert_eq!(inf, value(&after, "pgpilot_pool_wait_time_seconds_count"));
        assert!(value(&after, "pgpilot_pool_wait_time_seconds_bucket{le=\"0.25\"}") <= inf);
    }
}
