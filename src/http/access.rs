//! Who may read the insights and change the cache over HTTP. The statement list names every
//! query shape the clients run and POST /cache/flush costs every cached result, so with
//! `[http] token` set they need it (`Authorization: Bearer TOKEN`, or the cookie
//! `pgpilot_token` the page keeps, or `?token=` on the page's first visit). Without a token they are served on a loopback listener only: a
//! listener bound wider (a container's 0.0.0.0) answers 403 until a token is configured, while
//! /metrics and /health stay open there for Prometheus and probes (they hold no statement text).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Http;

pub(super) async fn require_token(State((h, loopback)): State<(Http, bool)>, req: Request, next: Next) -> Response {
    let token = h.app.config().http.token.clone();
    let allowed = match token.as_deref() {
        Some(expected) => presented(&req).is_some_and(|given| same(given.as_bytes(), expected.as_bytes())),
        None if loopback => true,
        None => {
            let msg = "set [http] token to serve this on a non-loopback address";
            return (StatusCode::FORBIDDEN, msg).into_response();
        }
    };
    if allowed {
        return next.run(req).await;
    }
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "pgpilot: token required").into_response()
}

/// The token in the Authorization header, the cookie, or (the page's first visit) `?token=`.
fn presented(req: &Request) -> Option<&str> {
    let headers = req.headers();
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    bearer
        .or_else(|| {
            let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
            cookies.split(';').find_map(|c| c.trim().strip_prefix("pgpilot_token="))
        })
        .or_else(|| req.uri().query().and_then(token_in_query))
}

/// `token=...` of a query string (taken as it is written: a token meant for a URL is URL-safe).
pub(super) fn token_in_query(query: &str) -> Option<&str> {
    query.split('&').find_map(|kv| kv.strip_prefix("token="))
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn equal_only_when_equal() {
        assert!(super::same(b"secret", b"secret"));
        assert!(!super::same(b"secret", b"secreT"));
        assert!(!super::same(b"secret", b"secret2"));
    }
}
