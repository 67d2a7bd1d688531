//! The scrape: gauges and counters that describe live state (pools, clients, prepared
//! statements, the result cache) are set from it just before the recorder renders, so they are
//! exact at render time and cost nothing on the data path.

use crate::shared::console::Console;

/// Sets the pool and client gauges from the current state.
pub fn refresh(app: &Console) {
    for t in app.table_usage() {
        for (kind, n) in [("seq", t.seq_scans), ("index", t.idx_scans)] {
            let (db, table) = (t.database.clone(), t.table.clone());
            metrics::counter!("pgpilot_table_scans_total", "database" => db, "table" => table, "kind" => kind)
                .absolute(n.max(0) as u64);
        }
    }
    for i in app.index_usage() {
        let labels = [("database", i.database), ("table", i.table), ("index", i.index)];
        metrics::counter!("pgpilot_index_scans_total", &labels).absolute(i.idx_scans.max(0) as u64);
        metrics::gauge!("pgpilot_index_size_bytes", &labels).set(i.size_bytes as f64);
        if let Some(b) = i.bloat_percent {
            metrics::gauge!("pgpilot_index_bloat_percent", &labels).set(b);
        }
    }
    for p in app.pool_snapshots() {
        let (db, user) = (p.database.clone(), p.user.clone());
        for (state, v) in [("active", p.active), ("idle", p.idle), ("total", p.size), ("waiting", p.waiting)] {
            metrics::gauge!("pgpilot_pool_connections", "database" => db.clone(), "user" => user.clone(), "state" => state)
                .set(v as f64);
        }
        metrics::gauge!("pgpilot_pool_size", "database" => db.clone(), "user" => user.clone()).set(p.max_size as f64);
        metrics::gauge!("pgpilot_pool_target", "database" => db.clone(), "user" => user.clone()).set(p.target as f64);
        for (direction, n) in [("grow", p.grows), ("shrink", p.shrinks)] {
            let labels = [("database", db.clone()), ("user", user.clone()), ("direction", direction.to_string())];
            metrics::counter!("pgpilot_pool_resizes_total", &labels).absolute(n);
        }
    }
    use std::sync::atomic::Ordering::Relaxed;
    let st = &crate::prepared::STATS;
    metrics::gauge!("pgpilot_prepared_statements").set(app.prepared_statements() as f64);
    metrics::counter!("pgpilot_prepared_cache_hits_total").absolute(st.hits.load(Relaxed));
    metrics::counter!("pgpilot_prepared_cache_misses_total").absolute(st.misses.load(Relaxed));
    metrics::counter!("pgpilot_prepared_cache_evictions_total").absolute(st.evictions.load(Relaxed));
    metrics::counter!("pgpilot_prepared_reparses_total").absolute(st.reparses.load(Relaxed));
    metrics::counter!("pgpilot_prepared_stale_retries_total").absolute(st.stale_retries.load(Relaxed));
    cache(app);
    let c = app.client_counts();
    for (state, v) in [("active", c.active), ("waiting", c.waiting), ("idle", c.idle), ("total", c.total)] {
        metrics::gauge!("pgpilot_clients", "state" => state).set(v as f64);
    }
}

/// Result cache counters and size.
fn cache(app: &Console) {
    let s = app.cache();
    metrics::counter!("pgpilot_cache_hits_total", "tier" => "local").absolute(s.hits_local);
    metrics::counter!("pgpilot_cache_hits_total", "tier" => "redis").absolute(s.hits_redis);
    metrics::counter!("pgpilot_cache_misses_total").absolute(s.misses);
    metrics::counter!("pgpilot_cache_skipped_total").absolute(s.skipped);
    metrics::counter!("pgpilot_cache_evictions_total").absolute(s.evictions);
    let proxy = s.invalidations.saturating_sub(s.invalidations_replication);
    metrics::counter!("pgpilot_cache_invalidations_total", "source" => "proxy").absolute(proxy);
    metrics::counter!("pgpilot_cache_invalidations_total", "source" => "replication")
        .absolute(s.invalidations_replication);
    metrics::counter!("pgpilot_cache_invalidations_total", "source" => "redis").absolute(s.invalidations_redis);
    for r in &s.replication {
        let lag = r.lag_ms.map_or(f64::NAN, |ms| ms as f64 / 1000.0);
        metrics::gauge!("pgpilot_cache_replication_lag_seconds", "database" => r.database.clone()).set(lag);
    }
    metrics::counter!("pgpilot_cache_stores_total").absolute(s.stores);
    metrics::counter!("pgpilot_cache_redis_errors_total").absolute(s.redis_errors);
    metrics::gauge!("pgpilot_cache_bytes").set(s.bytes as f64);
    metrics::gauge!("pgpilot_cache_entries").set(s.entries as f64);
    metrics::gauge!("pgpilot_cache_redis_connected").set(if s.redis_connected { 1.0 } else { 0.0 });
}
