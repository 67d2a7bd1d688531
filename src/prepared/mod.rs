//! Prepared statements across pooled server connections (transaction mode).
//!
//! A client's statement names map to entries of one global registry keyed by (query text,
//! parameter types); each server connection carries an LRU of the entries it has prepared under
//! proxy-chosen names (`pgpilot_<id>`). Parse of a statement the server already has is answered
//! here; Bind/Describe of one it lacks get a Parse injected in front, inside the same pipeline;
//! Close is answered here. The session's reply queue (`frontend::reply_queue`) keeps the server's
//! reply stream and the client's expected replies aligned while messages are added, dropped or
//! answered locally.

pub mod adaptive;
pub mod registry;

pub use registry::{Registry, Statement, SERVER_NAME_PREFIX};

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for /metrics (plain atomics: bumped on the Parse/Bind path, read at scrape time).
#[derive(Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub reparses: AtomicU64,
    /// Runs sent again after a server copy proved stale (DDL that bypassed pgpilot).
    pub stale_retries: AtomicU64,
}

pub static STATS: Stats = Stats {
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
    evictions: AtomicU64::new(0),
    reparses: AtomicU64::new(0),
    stale_retries: AtomicU64::new(0),
};

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
