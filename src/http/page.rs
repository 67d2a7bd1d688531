//! GET /: a page to look at (pools, top queries with their strategy, N+1 findings, the cache),
//! self-contained (no script, font or style from anywhere else: a content security policy says
//! so) and refreshing itself from the JSON endpoints. Behind the token like /queries: opened once
//! as `/?token=TOKEN`, it keeps the token in an HttpOnly cookie for its own requests.

use axum::extract::RawQuery;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("page.html");
/// Inline script and style only; requests back to this origin only.
const CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'";

/// (The access layer has already checked the token, wherever it came from.)
pub(super) async fn page(RawQuery(query): RawQuery) -> Response {
    let token = query.as_deref().and_then(super::access::token_in_query);
    let mut response =
        ([(header::CONTENT_SECURITY_POLICY, CSP), (header::CACHE_CONTROL, "no-store")], Html(PAGE)).into_response();
    if let Some(token) = token.filter(|t| t.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',')) {
        let cookie = format!("pgpilot_token={token}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}
