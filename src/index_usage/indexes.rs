//! Per index: scans, size and, for btree indexes, an estimate of bloat (the seed's
//! `index_bloat_percent`; its own query subtracts an index's size from itself and is always 0).
//! The estimate is the usual one from the catalog alone (no pgstattuple): the leaf pages the
//! index's tuples would fill at btree's default fillfactor, from `reltuples` and the indexed
//! columns' average widths in pg_stats, against the pages it has. It needs statistics (ANALYZE);
//! without them, for other access methods and for indexes under `MIN_PAGES`, there is none.

/// The 50 largest indexes per database (bounds the metric series).
pub const QUERY: &str = "SELECT s.relname, s.indexrelname, coalesce(s.idx_scan, 0), \
    pg_catalog.pg_relation_size(s.indexrelid), am.amname, c.reltuples::int8, \
    (SELECT CASE WHEN count(st.avg_width) = count(*) THEN sum(st.avg_width) END \
      FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_stats st ON st.schemaname = s.schemaname \
      AND st.tablename = s.relname AND st.attname = a.attname AND NOT st.inherited \
      WHERE a.attrelid = s.indexrelid AND a.attnum > 0) \
    FROM pg_catalog.pg_stat_user_indexes s JOIN pg_catalog.pg_class c ON c.oid = s.indexrelid \
    JOIN pg_catalog.pg_am am ON am.oid = c.relam \
    ORDER BY pg_catalog.pg_relation_size(s.indexrelid) DESC LIMIT 50";

const PAGE: f64 = 8192.0;
/// Page header (24) and btree's special space (16) per page; 90: btree's default fillfactor.
const LEAF_SPACE: f64 = (PAGE - 24.0 - 16.0) * 0.90;
/// Smaller indexes get no estimate: a few pages of slack are not bloat.
const MIN_PAGES: i64 = 10;
/// An index at least this large and this bloated gets the seed's advice (REINDEX CONCURRENTLY).
const ADVICE_BYTES: i64 = 1_000_000;
const ADVICE_PERCENT: f64 = 30.0;

#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexRow {
    pub database: String,
    pub table: String,
    pub index: String,
    pub method: String,
    pub idx_scans: i64,
    pub size_bytes: i64,
    /// Estimated share of the index's pages beyond what its tuples need (btree only).
    pub bloat_percent: Option<f64>,
    pub advice: Vec<String>,
}

pub fn row(database: &str, r: &[Option<String>]) -> Option<IndexRow> {
    let text = |i: usize| r.get(i).cloned().flatten();
    let n = |i: usize| text(i).and_then(|v| v.parse::<i64>().ok());
    let (table, index, method) = (text(0)?, text(1)?, text(4)?);
    let size = n(3).unwrap_or(0);
    // NULL unless every one of the index's columns has a width (an expression's column has none).
    let width = n(6);
    let bloat = if method == "btree" { btree_bloat(size, n(5).unwrap_or(-1), width) } else { None };
    let advice = bloat
        .filter(|b| *b >= ADVICE_PERCENT && size >= ADVICE_BYTES)
        .map(|b| {
            format!(
                "{index} on {table} is about {b:.0}% bloat ({} MB): REINDEX INDEX CONCURRENTLY {index}",
                size / 1_000_000
            )
        })
        .into_iter()
        .collect();
    Some(IndexRow {
        database: database.to_string(),
        table,
        index,
        method,
        idx_scans: n(2).unwrap_or(0),
        size_bytes: size,
        bloat_percent: bloat,
        advice,
    })
}

/// `size`: bytes now; `tuples`: pg_class.reltuples (-1: never analyzed); `width`: the indexed
/// columns' summed average width.
fn btree_bloat(size: i64, tuples: i64, width: Option<i64>) -> Option<f64> {
    let pages = size / PAGE as i64;
    if pages < MIN_PAGES || tuples < 0 {
        return None;
    }
    // A tuple: 8-byte header (TID + info), the key aligned to 8, and its 4-byte line pointer.
    let tuple = 8.0 + (width? as f64 / 8.0).ceil() * 8.0 + 4.0;
    let leaves = (tuples as f64 * tuple / LEAF_SPACE).ceil();
    // The meta page and the inner pages (about one per ~300 leaves for narrow keys).
    let expected = 1.0 + leaves * (1.0 + tuple / LEAF_SPACE);
    Some((100.0 * (1.0 - expected / pages as f64)).clamp(0.0, 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_btree_has_no_bloat_and_a_half_empty_one_half() {
        // 100,000 int4 keys: 20 bytes each with the line pointer, ~367 per leaf: 273 leaves (a fresh
        // pgbench_accounts_pkey, 1,000,000 rows, has 2,745 pages against 2,734 estimated).
        let packed = btree_bloat(275 * 8192, 100_000, Some(4)).unwrap();
        assert!(packed < 2.0, "{packed}");
        let half = btree_bloat(550 * 8192, 100_000, Some(4)).unwrap();
        assert!((45.0..55.0).contains(&half), "{half}");
        assert_eq!(btree_bloat(5 * 8192, 1_000, Some(4)), None, "too small to say");
        assert_eq!(btree_bloat(612 * 8192, -1, Some(4)), None, "never analyzed");
        assert_eq!(btree_bloat(612 * 8192, 100_000, None), None, "no statistics for its columns");
    }

    #[test]
    fn advice_for_a_large_bloated_btree_only() {
        let r = |size: i64, method: &str| {
            let v = ["t", "t_pkey", "7", &size.to_string(), method, "100000", "4"];
            row("db", &v.map(|s| Some(s.to_string()))).unwrap()
        };
        let bloated = r(1224 * 8192, "btree");
        assert!(bloated.advice[0].contains("REINDEX INDEX CONCURRENTLY t_pkey"), "{bloated:?}");
        assert!(r(306 * 8192, "btree").advice.is_empty());
        assert_eq!(r(1224 * 8192, "hnsw").bloat_percent, None);
    }
}
