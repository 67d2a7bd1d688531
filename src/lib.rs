//! pgpilot: a SQL-aware PostgreSQL pooling proxy.
//!
//! The module tree follows the data path: `net` (sockets, framing, TLS) -> `frontend` (client
//! startup and session loop) -> `pool` -> `backend` (server connections), with `auth` used on both
//! sides and `http` serving health and metrics beside it.

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod cache;
pub mod clock;
pub mod config;
pub mod frontend;
pub mod http;
pub mod insights;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod prepared;
pub mod sql;
