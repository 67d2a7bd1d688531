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
    Ok(handle)
}

pub fn pool_wait(d: Duration) {
    metrics::histogram!(POOL_WAIT).record(d.as_secs_f64());
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
    let c = app.clients.snapshot();
    for (state, v) in [("active", c.active), ("waiting", c.waiting), ("idle", c.idle), ("total", c.total)] {
        metrics::gauge!("pgpilot_clients", "state" => state).set(v as f64);
    }
}
