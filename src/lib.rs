//! pgpilot: a SQL-aware PostgreSQL pooling proxy.
//!
//! The module tree follows the data path: `net` (sockets, framing, TLS) -> `frontend` (client
//! startup and session loop) -> `pool` -> `backend` (server connections), with the feature state
//! (`prepared`, `insights`, `cache`, `strategy`) between, `shared` holding what every part shares, and
//! `admin` / `http` reading it. Who may import whom: docs/ARCHITECTURE.md, "Layers" (checked by
//! tests/layering.rs).

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod cache;
pub mod clock;
pub mod config;
pub mod frontend;
pub mod http;
pub mod index_usage;
pub mod insights;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod pool_stats;
pub mod prepared;
pub mod protocol;
pub mod shared;
pub mod sql;
pub mod strategy;
pub mod timers;
