//! HTTP endpoints beside the proxy: /health, /health/status, /metrics (open), the page at /,
//! /queries and /insights/n-plus-one, and POST /cache/flush (behind `[http] token`: `access`).

mod access;
mod insights;
mod page;
mod scrape;

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::shared::console::Console;

#[derive(Clone)]
pub(crate) struct Http {
    app: Console,
    prometheus: PrometheusHandle,
}

pub async fn serve(listener: std::net::TcpListener, app: Console, prometheus: PrometheusHandle) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("http server not started: {e}");
            return;
        }
    };
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let state = Http { app, prometheus };
    // What names the clients' statements or changes anything: behind the token.
    let guarded = Router::new()
        .route("/", get(page::page))
        .route("/queries", get(insights::queries))
        .route("/insights/n-plus-one", get(insights::n_plus_one))
        .route("/cache/flush", axum::routing::post(cache_flush))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), loopback), access::require_token));
    let router = Router::new()
        .route("/health", get(health))
        .route("/health/status", get(status))
        .route("/metrics", get(metrics_text))
        .merge(guarded)
        .with_state(state);
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!("http server stopped: {e}");
    }
}

/// 200 when pgpilot can serve: accepting clients and the upstream server reachable.
/// `/health?live` is the liveness form: the upstream is not asked, so a database outage marks a
/// sidecar unready (readiness on /health) without the kubelet restarting it, which would only
/// drop its clients and its cache while the database is away.
async fn health(State(h): State<Http>, uri: axum::http::Uri) -> Response {
    let live = uri.query().is_some_and(|q| q.split('&').any(|p| p == "live" || p.starts_with("live=")));
    // (None: not asked)
    let reachable = if live { None } else { Some(upstream_reachable(&h).await) };
    let accepting = h.app.accepting();
    let ok = reachable != Some(false) && accepting;
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "status": if ok { "ok" } else { "unavailable" }, "upstream_reachable": reachable, "accepting": accepting });
    (code, Json(body)).into_response()
}

async fn upstream_reachable(h: &Http) -> bool {
    let up = h.app.config().upstream();
    crate::timers::timeout(Duration::from_secs(2), crate::net::endpoint::connect(&up.host, up.port))
        .await
        .is_ok_and(|r| r.is_ok())
}

async fn status(State(h): State<Http>) -> Json<serde_json::Value> {
    let pools = h.app.pool_snapshots();
    let sum = |f: fn(&crate::pool::PoolSnapshot) -> usize| pools.iter().map(f).sum::<usize>();
    let (active, idle, waiting, size, max) =
        (sum(|p| p.active), sum(|p| p.idle), sum(|p| p.waiting), sum(|p| p.size), sum(|p| p.max_size));
    let cfg = h.app.config();
    let clients = h.app.client_counts();
    // (limit 0: not read from the server yet, no budget)
    let (budget_limit, budget_used) = h.app.server_budget();
    Json(json!({
        "status": "ok",
        "pool_mode": format!("{:?}", cfg.pool.mode).to_lowercase(),
        "connection_pool": {
            "pool_utilization": if max == 0 { 0.0 } else { active as f64 / max as f64 },
            "active": active, "idle": idle, "waiting": waiting, "size": size, "max_size": max,
            "server_budget": { "limit": budget_limit, "used": budget_used },
        },
        "pools": pools,
        "clients": clients,
        "cache": serde_json::to_value(h.app.cache()).unwrap_or_default(),
        "index_usage": h.app.table_usage(),
        "indexes": h.app.index_usage(),
    }))
}

/// POST /cache/flush: drops every cached result (on every replica when Redis is shared).
async fn cache_flush(State(h): State<Http>) -> Response {
    let shared = h.app.flush_cache().await;
    Json(json!({ "flushed": true, "redis_told": shared })).into_response()
}

async fn metrics_text(State(h): State<Http>) -> Response {
    scrape::refresh(&h.app);
    h.prometheus.run_upkeep();
    let mut text = h.prometheus.render();
    crate::metrics::render_pool_wait(&mut text);
    h.app.render_query_metrics(&mut text);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}
