//! Per-query insights: statistics per (database, user, fingerprint), the slow-query log, and the
//! N+1 detector. Sessions report each completed statement as a `Completed`; everything else
//! happens here, off the relay's inner loop.

pub mod nplus1;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Stamp;

use crate::sql::Analysis;

/// One statement that finished on the server, as a session saw it.
#[derive(Debug, Clone)]
pub struct Completed {
    pub analysis: Arc<Analysis>,
    /// Hash of the parameter values (Bind) or of the literal text (simple Query).
    pub params: u64,
    pub sent: Stamp,
    pub done: Stamp,
    /// `done - sent`, computed once (the statistics, the slow log and the metrics each read it).
    pub server_time: Duration,
    /// From the client's message arriving (so including any pool wait) to completion.
    pub client_time: Duration,
    pub rows: u64,
    pub error: bool,
    /// Sent while an earlier statement of the client was still running (a pipeline or batch).
    pub pipelined: bool,
    /// Answered from the result cache (no server time).
    pub cached: bool,
    /// How it reached the server, for the server-prepared strategy's timing.
    pub run_via: crate::prepared::adaptive::Served,
}

impl Completed {
    /// An answer from the result cache: a call with no server time (`received`: when the
    /// client's message arrived).
    pub fn from_cache(analysis: Arc<Analysis>, params: u64, rows: u64, received: Stamp) -> Self {
        let now = Stamp::now();
        Self {
            analysis,
            params,
            sent: now,
            done: now,
            server_time: Duration::ZERO,
            client_time: now.saturating_duration_since(received),
            rows,
            error: false,
            pipelined: false,
            cached: true,
            run_via: Default::default(),
        }
    }
}

/// Who ran it (labels for stats and findings).
#[derive(Debug, Clone)]
pub struct Origin {
    pub database: Arc<str>,
    pub user: Arc<str>,
    pub application_name: Arc<str>,
    /// (database, user) as one number, hashed once per session: the statistics' key takes it
    /// instead of the two names (which cost two reference counts, two string hashes and two
    /// compares per statement, under the statistics' lock). Seeded per process: names cannot
    /// be picked in advance to share another origin's rows (xxh3 is no keyed hash, but the
    /// seed is never shown). Set by `new` only: change `database` or `user` through `new`.
    stats_key: u64,
}

impl Origin {
    pub fn new(database: Arc<str>, user: Arc<str>, application_name: Arc<str>) -> Origin {
        use std::sync::OnceLock;
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(rand::random);
        // (Names hold no NUL byte: the wire protocol ends them with one, so "db\0user" is unique.)
        let mut both = Vec::with_capacity(database.len() + user.len() + 1);
        both.extend_from_slice(database.as_bytes());
        both.push(0);
        both.extend_from_slice(user.as_bytes());
        let stats_key = xxhash_rust::xxh3::xxh3_64_with_seed(&both, seed);
        Origin { database, user, application_name, stats_key }
    }
}
