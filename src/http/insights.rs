//! GET /queries and GET /insights/n-plus-one.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use super::Http;
use crate::insights::stats::QueryRow;

#[derive(Deserialize)]
pub(super) struct QueriesParams {
    sort: Option<String>,
    limit: Option<usize>,
}

/// Orders rows by a field (descending); unknown fields fall back to total_ms.
pub fn sort_rows(rows: &mut [QueryRow], by: &str) {
    let key = |r: &QueryRow| -> f64 {
        match by {
            "calls" => r.calls as f64,
            "errors" => r.errors as f64,
            "rows" => r.rows as f64,
            "mean_ms" => r.mean_ms,
            "p50_ms" => r.p50_ms,
            "p95_ms" => r.p95_ms,
            "p99_ms" => r.p99_ms,
            "max_ms" => r.max_ms,
            "repeated_identical" => r.repeated_identical as f64,
            _ => r.total_ms,
        }
    };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)));
}

pub(super) async fn queries(State(h): State<Http>, Query(p): Query<QueriesParams>) -> Json<Vec<QueryRow>> {
    let mut rows = h.app.query_stats.rows();
    sort_rows(&mut rows, p.sort.as_deref().unwrap_or("total_ms"));
    rows.truncate(p.limit.unwrap_or(usize::MAX));
    Json(rows)
}

pub(super) async fn n_plus_one(State(h): State<Http>) -> Json<Vec<crate::insights::nplus1::Finding>> {
    Json(h.app.findings.list())
}
