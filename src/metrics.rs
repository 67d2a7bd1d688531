//! Prometheus metrics through the `metrics` facade. Gauges describing pools and clients are
//! refreshed from live state just before each scrape, so they are exact at render time and cost
//! nothing on the data path.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::App;

pub const POOL_WAIT: &str = "pgpilot_pool_wait_time_seconds";

/// Installs the global recorder; histograms get explicit buckets so they render as histograms.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let buckets =
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)?
        .install_recorder()?;
    metrics::describe_histogram!(POOL_WAIT, metrics::Unit::Seconds, "Time clients waited for a server connection");
    metrics::describe_gauge!("pgpilot_pool_connections", "Server connections per pool by state");
    metrics::describe_gauge!("pgpilot_pool_size", "Configured maximum server connections per pool");
    metrics::describe_gauge!("pgpilot_clients", "Client connections by state");
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
    metrics::describe_counter!("pgpilot_cache_hits_total", "Reads answered from the result cache, by tier");
    metrics::describe_counter!("pgpilot_cache_misses_total", "Cacheable reads sent to the server");
    metrics::describe_counter!("pgpilot_cache_evictions_total", "Entries dropped to stay within cache.max_bytes");
    metrics::describe_counter!(
        "pgpilot_cache_invalidations_total",
        "Table (or database) invalidations from committed writes"
    );
    metrics::describe_counter!("pgpilot_cache_redis_errors_total", "Redis calls that failed or timed out");
    metrics::describe_gauge!("pgpilot_cache_bytes", "Bytes held by the in-process cache tier");
    Ok(handle)
}

/// Called once per checkout: the handle is looked up once, not per call.
pub fn pool_wait(d: Duration) {
    static HANDLE: std::sync::OnceLock<metrics::Histogram> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| metrics::histogram!(POOL_WAIT)).record(d.as_secs_f64());
}

pub fn n_plus_one_detected() {
    metrics::counter!("pgpilot_n_plus_one_detected_total").increment(1);
}

pub fn slow_query() {
    static HANDLE: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| metrics::counter!("pgpilot_slow_queries_total")).increment(1);
}

/// Sets the pool and client gauges from the current state.
pub fn refresh(app: &App) {
    for p in app.pools.snapshots() {
        let (db, user) = (p.database.clone(), p.user.clone());
        for (state, v) in [("active", p.active), ("idle", p.idle), ("total", p.size), ("waiting", p.waiting)] {
            metrics::gauge!("pgpilot_pool_connections", "database" => db.clone(), "user" => user.clone(), "state" => state)
                .set(v as f64);
        }
        metrics::gauge!("pgpilot_pool_size", "database" => db, "user" => user).set(p.max_size as f64);
    }
    use std::sync::atomic::Ordering::Relaxed;
    let st = &crate::prepared::STATS;
    metrics::gauge!("pgpilot_prepared_statements").set(app.registry.len() as f64);
    metrics::counter!("pgpilot_prepared_cache_hits_total").absolute(st.hits.load(Relaxed));
    metrics::counter!("pgpilot_prepared_cache_misses_total").absolute(st.misses.load(Relaxed));
    metrics::counter!("pgpilot_prepared_cache_evictions_total").absolute(st.evictions.load(Relaxed));
    metrics::counter!("pgpilot_prepared_reparses_total").absolute(st.reparses.load(Relaxed));
    cache(app);
    let c = app.clients.snapshot();
    for (state, v) in [("active", c.active), ("waiting", c.waiting), ("idle", c.idle), ("total", c.total)] {
        metrics::gauge!("pgpilot_clients", "state" => state).set(v as f64);
    }
}

/// Result cache counters and size.
fn cache(app: &App) {
    let s = app.cache_snapshot();
    metrics::counter!("pgpilot_cache_hits_total", "tier" => "local").absolute(s.hits_local);
    metrics::counter!("pgpilot_cache_hits_total", "tier" => "redis").absolute(s.hits_redis);
    metrics::counter!("pgpilot_cache_misses_total").absolute(s.misses);
    metrics::counter!("pgpilot_cache_evictions_total").absolute(s.evictions);
    metrics::counter!("pgpilot_cache_invalidations_total").absolute(s.invalidations);
    metrics::counter!("pgpilot_cache_stores_total").absolute(s.stores);
    metrics::counter!("pgpilot_cache_redis_errors_total").absolute(s.redis_errors);
    metrics::gauge!("pgpilot_cache_bytes").set(s.bytes as f64);
    metrics::gauge!("pgpilot_cache_entries").set(s.entries as f64);
    metrics::gauge!("pgpilot_cache_redis_connected").set(if s.redis_connected { 1.0 } else { 0.0 });
}
