//! What the admin console and the HTTP endpoints may see and do. They read copies of the shared
//! state (snapshots and rows, no live handle to a pool or a session) and change it only through
//! the operations named here (pause, resume, reload, flush, kill, shutdown); the rest of `App`
//! (the configuration's store, TLS, secrets, the analyzer, buffers, the shutdown sender) is out of
//! their reach, so a new SHOW or endpoint cannot grow a write to shared state by accident.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::Guard;

use super::{App, ClientSnapshot};
use crate::config::Config;
use crate::net::endpoint::Endpoint;
use crate::pool::{PoolSnapshot, SocketAddrAge};

/// A pool as the console shows it, copied out.
pub struct PoolRow {
    pub snapshot: PoolSnapshot,
    /// Clients bound to the pool's (database, user).
    pub clients: usize,
    /// Idle server connections: backend pid, address, age, time idle.
    pub idle_servers: Vec<(i32, SocketAddrAge)>,
}

/// A client session as the console shows it, copied out.
pub struct ClientRow {
    /// What KILL_CLIENT names.
    pub id: u64,
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub application_name: Arc<str>,
    /// None: a client on the Unix-domain socket.
    pub peer: Option<SocketAddr>,
    pub connected: SystemTime,
    /// The server connection it holds now: address and backend pid.
    pub server: Option<(Endpoint, i32)>,
}

#[derive(Clone)]
pub struct Console {
    app: Arc<App>,
}

impl Console {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    // Reads.

    /// The configuration in force (a snapshot: a reload later does not change it).
    pub fn config(&self) -> Guard<Arc<Config>> {
        self.app.config.load()
    }

    /// Every pool, for the SHOWs that list their servers and counters.
    pub fn pools(&self) -> Vec<PoolRow> {
        let row = |p: Arc<crate::pool::Pool>| {
            let (snapshot, idle_servers) = p.snapshot_and_idle(true);
            PoolRow { snapshot, clients: p.clients.load(Relaxed).max(0) as usize, idle_servers }
        };
        self.app.pools.all().into_iter().map(row).collect()
    }

    pub fn pool_snapshots(&self) -> Vec<PoolSnapshot> {
        self.app.pools.snapshots()
    }

    pub fn is_paused(&self, database: &str) -> bool {
        self.app.pools.is_paused(database)
    }

    /// The server-connection budget: (limit, used); limit 0 until read from the server.
    pub fn server_budget(&self) -> (usize, usize) {
        self.app.pools.budget.snapshot()
    }

    /// Connected clients, oldest first.
    pub fn clients(&self) -> Vec<ClientRow> {
        let row = |c: Arc<crate::backend::cancel::ClientMeta>| ClientRow {
            id: c.id,
            user: c.user.clone(),
            database: c.database.clone(),
            application_name: c.application_name.clone(),
            peer: c.peer,
            connected: c.connected,
            server: c.server.lock().as_ref().map(|s| (s.addr.clone(), s.pid)),
        };
        self.app.cancels.clients().into_iter().map(row).collect()
    }

    pub fn client_counts(&self) -> ClientSnapshot {
        self.app.clients.snapshot()
    }

    /// Per-fingerprint statistics, with each one's strategy.
    pub fn queries(&self) -> Vec<crate::insights::stats::QueryRow> {
        self.app.query_stats.rows(self.config().cache.enabled)
    }

    /// The per-fingerprint series of /metrics (the `top_k` slowest by total time).
    pub fn render_query_metrics(&self, out: &mut String) {
        let top_k = self.config().insights.metrics_top_k;
        self.app.query_stats.render_prometheus(top_k, out);
    }

    /// SHOW STATS' totals per database since start.
    pub fn stats_totals(&self) -> Vec<(String, crate::pool_stats::Totals)> {
        crate::pool_stats::totals(&self.app.pools, &self.app.query_stats, self.config().cache.enabled)
    }

    /// SHOW STATS' averages of the last stats period.
    pub fn stats_averages(&self, database: &str) -> [u64; 11] {
        self.app.stats_periods.averages(database)
    }

    pub fn n_plus_one(&self) -> Vec<crate::insights::nplus1::Finding> {
        self.app.findings.list()
    }

    pub fn table_usage(&self) -> Vec<crate::index_usage::TableUsage> {
        self.app.index_usage.tables()
    }

    pub fn index_usage(&self) -> Vec<crate::index_usage::IndexRow> {
        self.app.index_usage.indexes()
    }

    pub fn cache(&self) -> crate::cache::Snapshot {
        self.app.cache_snapshot()
    }

    /// Statements in the prepared-statement registry.
    pub fn prepared_statements(&self) -> usize {
        self.app.registry.len()
    }

    /// New clients are accepted (no shutdown begun).
    pub fn accepting(&self) -> bool {
        !*self.app.shutdown.borrow()
    }

    // Operations.

    /// PAUSE / RESUME (`database` None: every pool); an unknown database is an error.
    pub fn set_paused(&self, database: Option<&str>, paused: bool) -> Result<(), String> {
        self.app.pools.set_paused(database, paused)
    }

    /// Drops every cached result; says whether Redis was told (other replicas flush too).
    pub async fn flush_cache(&self) -> bool {
        self.app.cache.flush().await
    }

    /// KILL_CLIENT: false when no client has that id.
    pub fn kill_client(&self, id: u64) -> bool {
        self.app.cancels.kill(id)
    }

    /// RELOAD: re-reads the configuration as SIGHUP does (the old one stays if the new is invalid).
    pub fn reload(&self) -> anyhow::Result<()> {
        self.app.reload()
    }

    /// SHUTDOWN: begins the drain, as SIGTERM does.
    pub fn shutdown(&self) {
        self.app.begin_shutdown();
    }
}
