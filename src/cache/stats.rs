//! Cache counters (atomics on the data path, rendered at scrape time) and the snapshot served by
//! /health/status, SHOW CACHE and /metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default, Debug)]
pub struct CacheStats {
    pub hits_local: AtomicU64,
    pub hits_redis: AtomicU64,
    pub misses: AtomicU64,
    /// Runs not looked up: their shape's results do not repeat (see `admission`).
    pub skipped: AtomicU64,
    pub stores: AtomicU64,
    pub evictions: AtomicU64,
    pub invalidations: AtomicU64,
    pub stale_dropped: AtomicU64,
    pub raced: AtomicU64,
    pub too_large: AtomicU64,
    pub coalesced: AtomicU64,
    pub flushes: AtomicU64,
}

impl CacheStats {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub enabled: bool,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub hits_local: u64,
    pub hits_redis: u64,
    pub misses: u64,
    pub skipped: u64,
    pub hit_ratio: f64,
    pub stores: u64,
    pub evictions: u64,
    pub invalidations: u64,
    pub stale_dropped: u64,
    pub fills_discarded_by_commit: u64,
    pub too_large: u64,
    pub coalesced: u64,
    pub flushes: u64,
    pub redis_configured: bool,
    pub redis_connected: bool,
    pub redis_errors: u64,
    /// Of `invalidations`, those the replication streams made; and those other replicas sent
    /// through Redis (not in `invalidations`).
    pub invalidations_replication: u64,
    pub invalidations_redis: u64,
    /// With `invalidation = "replication"`: each database's stream.
    pub replication: Vec<StreamStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamStatus {
    pub database: String,
    pub state: &'static str,
    /// How far behind the server it is known to be (None: not caught up since it started).
    pub lag_ms: Option<u64>,
    pub applied_lsn: String,
    pub invalidations: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

fn streams(c: &super::ResultCache) -> Vec<StreamStatus> {
    let Some(streams) = c.replication.get() else { return Vec::new() };
    let mut all: Vec<StreamStatus> = streams
        .all()
        .into_iter()
        .map(|(db, s)| StreamStatus {
            database: db.to_string(),
            state: s.state().name(),
            lag_ms: s.lag().map(|d| d.as_millis() as u64),
            applied_lsn: super::wal::format_lsn(s.applied_lsn.load(Relaxed)),
            invalidations: s.invalidations.load(Relaxed),
            reconnects: s.reconnects.load(Relaxed),
            last_error: s.last_error.lock().clone(),
        })
        .collect();
    all.sort_by(|a, b| a.database.cmp(&b.database));
    all
}

impl Snapshot {
    pub(super) fn new(c: &super::ResultCache, enabled: bool) -> Self {
        let s = &c.stats;
        let hits_local = s.hits_local.load(Relaxed);
        let hits_redis = s.hits_redis.load(Relaxed);
        let misses = s.misses.load(Relaxed);
        let hits = hits_local + hits_redis;
        let redis = c.redis.as_ref();
        Snapshot {
            enabled,
            entries: c.local.entry_count(),
            bytes: c.local.weighted_size(),
            max_bytes: c.max_bytes,
            hits,
            hits_local,
            hits_redis,
            misses,
            skipped: s.skipped.load(Relaxed),
            hit_ratio: if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            stores: s.stores.load(Relaxed),
            evictions: s.evictions.load(Relaxed),
            invalidations: s.invalidations.load(Relaxed),
            stale_dropped: s.stale_dropped.load(Relaxed),
            fills_discarded_by_commit: s.raced.load(Relaxed),
            too_large: s.too_large.load(Relaxed),
            coalesced: s.coalesced.load(Relaxed),
            flushes: s.flushes.load(Relaxed),
            redis_configured: redis.is_some(),
            redis_connected: redis.is_some_and(|r| r.subscribed.load(Relaxed)),
            redis_errors: redis.map_or(0, |r| r.errors.load(Relaxed)),
            invalidations_replication: c
                .replication
                .get()
                .map_or(0, |r| r.all().iter().map(|(_, s)| s.invalidations.load(Relaxed)).sum()),
            invalidations_redis: redis.map_or(0, |r| r.received.load(Relaxed)),
            replication: streams(c),
        }
    }
}
