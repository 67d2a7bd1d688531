//! Index usage, the seed's last dashboard panel (`insights.index_usage_interval_s`; 0: off): every
//! interval, for each database pgpilot has a pool for, one connection of that pool reads
//! pg_stat_user_tables (sequential vs index scans, live rows, size) and what vector columns and
//! indexes each table has, and the seed's advice is attached where it applies: a large table read
//! mostly by sequential scans, a vector column without an HNSW or ivfflat index, an ivfflat index
//! whose `lists` is far from sqrt(rows). Shown in /health/status `.index_usage` and as
//! `pgpilot_table_scans_total{database,table,kind}` (the 50 busiest tables per database).
//! The same reading takes pg_stat_user_indexes (`indexes`: scans, size and an estimated btree
//! bloat, the seed's `index_bloat_percent`) into `.indexes` and `pgpilot_index_*`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::Config;
use crate::pool::set::PoolSet;

mod indexes;
pub use indexes::IndexRow;

/// Tables kept per database (the busiest by scans): bounds the metric series.
const TOP_TABLES: usize = 50;
/// A table with at least this many live rows read mostly by sequential scans gets advice.
const LARGE_ROWS: i64 = 10_000;

const QUERY: &str = "SELECT t.relname, t.seq_scan, coalesce(t.idx_scan, 0), t.n_live_tup, \
    pg_catalog.pg_total_relation_size(t.relid), \
    (SELECT count(*) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid \
      WHERE a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped AND ty.typname = 'vector'), \
    (SELECT count(*) FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
      JOIN pg_catalog.pg_am am ON am.oid = c.relam WHERE i.indrelid = t.relid AND am.amname IN ('hnsw', 'ivfflat')), \
    (SELECT string_agg(coalesce(array_to_string(c.reloptions, ','), ''), ';') FROM pg_catalog.pg_index i \
      JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid JOIN pg_catalog.pg_am am ON am.oid = c.relam \
      WHERE i.indrelid = t.relid AND am.amname = 'ivfflat') \
    FROM pg_catalog.pg_stat_user_tables t \
    ORDER BY t.seq_scan + coalesce(t.idx_scan, 0) DESC LIMIT 50";

#[derive(Debug, Clone, serde::Serialize)]
pub struct TableUsage {
    pub database: String,
    pub table: String,
    pub seq_scans: i64,
    pub idx_scans: i64,
    /// idx / (idx + seq); None before the table was scanned.
    pub index_scan_ratio: Option<f64>,
    pub rows: i64,
    pub size_bytes: i64,
    pub advice: Vec<String>,
}

#[derive(Default)]
pub struct IndexUsage {
    tables: Mutex<Vec<TableUsage>>,
    indexes: Mutex<Vec<IndexRow>>,
}

impl IndexUsage {
    pub fn tables(&self) -> Vec<TableUsage> {
        self.tables.lock().clone()
    }

    pub fn indexes(&self) -> Vec<IndexRow> {
        self.indexes.lock().clone()
    }
}

/// Runs for the life of the process (reads the interval at each turn: a reload can turn it on).
pub async fn run(store: Arc<IndexUsage>, pools: Arc<PoolSet>, config: Arc<ArcSwap<Config>>) {
    // The first reading soon after start (the pools' first logins), then every interval.
    crate::timers::sleep(Duration::from_secs(1)).await;
    loop {
        let secs = config.load().insights.index_usage_interval_s;
        if secs == 0 {
            store.tables.lock().clear();
            store.indexes.lock().clear();
            crate::timers::sleep(Duration::from_secs(5)).await;
            continue;
        }
        let (mut all, mut all_indexes) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        for pool in pools.all() {
            if seen.contains(&pool.key.database) {
                continue;
            }
            seen.push(pool.key.database.clone());
            let Ok(mut conn) = pool.checkout().await else { continue };
            let db = &pool.key.database;
            match conn.run_internal(QUERY).await {
                Ok(rows) => all.extend(rows.iter().filter_map(|r| table(db, r)).take(TOP_TABLES)),
                Err(e) => {
                    tracing::debug!(database = %db, "index usage not read: {e}");
                    continue; // the connection is dropped, not returned
                }
            }
            match conn.run_internal(indexes::QUERY).await {
                Ok(rows) => {
                    all_indexes.extend(rows.iter().filter_map(|r| indexes::row(db, r)));
                    conn.release();
                }
                Err(e) => tracing::debug!(database = %db, "index sizes not read: {e}"),
            }
        }
        *store.tables.lock() = all;
        *store.indexes.lock() = all_indexes;
        crate::timers::sleep(Duration::from_secs(secs)).await;
    }
}

fn table(database: &str, r: &[Option<String>]) -> Option<TableUsage> {
    let n = |i: usize| r.get(i).cloned().flatten().and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let name = r.first()?.clone()?;
    let (seq, idx, rows) = (n(1), n(2), n(3));
    let ivfflat = r.get(7).cloned().flatten().unwrap_or_default();
    Some(TableUsage {
        database: database.to_string(),
        advice: advice(&name, seq, idx, rows, n(5), n(6), &ivfflat),
        table: name,
        seq_scans: seq,
        idx_scans: idx,
        index_scan_ratio: (seq + idx > 0).then(|| idx as f64 / (seq + idx) as f64),
        rows,
        size_bytes: n(4),
    })
}

/// The seed's advice for one table.
fn advice(table: &str, seq: i64, idx: i64, rows: i64, vector_cols: i64, vector_idx: i64, ivfflat: &str) -> Vec<String> {
    let mut out = Vec::new();
    if rows >= LARGE_ROWS && seq > idx && seq >= 100 {
        out.push(format!(
            "{table} ({rows} rows) is read mostly by sequential scans ({seq} against {idx} index scans): \
             index the columns its frequent queries filter on (see /queries)"
        ));
    }
    if vector_cols > 0 && vector_idx == 0 && rows > 0 {
        out.push(format!(
            "{table} has a vector column and no HNSW or ivfflat index: searches scan every row; \
             CREATE INDEX ON {table} USING hnsw (column vector_cosine_ops)"
        ));
    }
    let ideal = (rows.max(1) as f64).sqrt();
    for opts in ivfflat.split(';').filter(|o| !o.is_empty()) {
        let lists = opts.split(',').find_map(|kv| kv.strip_prefix("lists=")).and_then(|v| v.parse::<f64>().ok());
        if let Some(lists) = lists.filter(|l| *l < ideal / 2.0 || *l > ideal * 2.0) {
            out.push(format!(
                "{table}'s ivfflat index has lists = {lists}, far from sqrt(rows) = {ideal:.0}: rebuild it with \
                 lists near {ideal:.0} (or use HNSW)"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::advice;

    #[test]
    fn the_seeds_advice_where_it_applies() {
        assert!(advice("t", 5, 1000, 1_000_000, 0, 0, "").is_empty(), "an indexed table");
        assert!(advice("t", 500, 10, 5_000, 0, 0, "").is_empty(), "a small table may be scanned");
        assert!(advice("big", 500, 10, 50_000, 0, 0, "")[0].contains("sequential scans"));
        assert!(advice("chunks", 1, 1, 10_000, 1, 0, "")[0].contains("hnsw"));
        assert!(advice("chunks", 1, 1, 10_000, 1, 1, "").is_empty(), "indexed vectors");
        let far = advice("chunks", 1, 1, 1_000_000, 1, 1, "lists=100");
        assert!(far[0].contains("sqrt(rows) = 1000"), "{far:?}");
        assert!(advice("chunks", 1, 1, 1_000_000, 1, 1, "lists=900").is_empty());
    }
}
