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

pub(super) async fn queries(State(h): State<Http>, Query(p): Query<QueriesParams>) -> Json<Vec<QueryRow>> {
    let mut rows = h.app.queries();
    crate::insights::stats::sort_rows(&mut rows, p.sort.as_deref().unwrap_or("total_ms"));
    rows.truncate(p.limit.unwrap_or(usize::MAX));
    Json(rows)
}

pub(super) async fn n_plus_one(State(h): State<Http>) -> Json<Vec<crate::insights::nplus1::Finding>> {
    Json(h.app.n_plus_one())
}
