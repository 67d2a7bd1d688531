//! The state every part of the proxy shares, built once by `app::run`: the configuration
//! snapshot, pools, cancel routing, client counts, the statement registry, the analyzer, insights
//! and the result cache, with the few operations that span them (reload, snapshots).

pub mod console;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::backend::cancel::CancelRegistry;
use crate::config::secrets::{parse_scram_secret, scram_from_plain, Verifier};
use crate::config::users::Secret;
use crate::config::{Cli, Config, UserConfig};
use crate::pool::set::PoolSet;

/// Client counts by state, for /metrics and /health/status.
#[derive(Default)]
pub struct ClientCounters {
    total: AtomicI64,
    active: AtomicI64,
    waiting: AtomicI64,
}

#[derive(Debug, serde::Serialize)]
pub struct ClientSnapshot {
    pub total: i64,
    pub active: i64,
    pub waiting: i64,
    pub idle: i64,
}

impl ClientCounters {
    pub fn active_add(&self, d: i64) {
        self.active.fetch_add(d, Ordering::Relaxed);
    }
    pub fn waiting_add(&self, d: i64) {
        self.waiting.fetch_add(d, Ordering::Relaxed);
    }
    /// A client connected; the returned value is the count with it.
    pub fn joined(&self) -> i64 {
        self.total.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub fn left(&self) {
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn total(&self) -> i64 {
        self.total.load(Ordering::Relaxed)
    }
    pub fn snapshot(&self) -> ClientSnapshot {
        let (total, active, waiting) =
            (self.total(), self.active.load(Ordering::Relaxed), self.waiting.load(Ordering::Relaxed));
        ClientSnapshot { total, active, waiting, idle: (total - active - waiting).max(0) }
    }
}

pub struct App {
    pub config: Arc<ArcSwap<Config>>,
    pub pools: Arc<PoolSet>,
    pub cancels: Arc<CancelRegistry>,
    pub clients: Arc<ClientCounters>,
    pub registry: Arc<crate::prepared::Registry>,
    pub analyzer: Arc<crate::sql::Analyzer>,
    /// Key of unknown users' SCRAM verifiers (`server.auth_secret`, or random; fixed at start).
    auth_key: Vec<u8>,
    /// Bytes clients' large messages hold (`server.max_buffered_bytes`).
    pub buffers: Arc<crate::net::budget::Budget>,
    pub query_stats: Arc<crate::insights::stats::QueryStats>,
    pub findings: Arc<crate::insights::nplus1::Findings>,
    /// Table and index usage per database (`index_usage`), read by its own task.
    pub index_usage: Arc<crate::index_usage::IndexUsage>,
    /// SHOW STATS' averages of the last stats period, rolled by their own task.
    pub stats_periods: Arc<crate::pool_stats::Periods>,
    pub cache: Arc<crate::cache::ResultCache>,
    tls: Option<TlsAcceptor>,
    cli: Cli,
    shutdown: watch::Sender<bool>,
    /// SCRAM verifiers for plain passwords, by user, with the password they were made from
    /// (PBKDF2 once per password; looked up without allocating at every login).
    scram_cache: Mutex<foldhash::HashMap<String, (String, Arc<Verifier>)>>,
}

impl App {
    /// Builds the shared state from a validated configuration (`cli` is kept for reloads).
    pub fn new(cli: Cli, config: Config, tls: Option<TlsAcceptor>) -> Result<App> {
        let shared = Arc::new(ArcSwap::from_pointee(config));
        let cfg = shared.load_full();
        Ok(App {
            pools: Arc::new(PoolSet::new(shared.clone())),
            config: shared,
            cancels: Arc::new(CancelRegistry::default()),
            clients: Arc::default(),
            registry: Arc::new(crate::prepared::Registry::new(cfg.prepared.registry_max)),
            analyzer: Arc::new({
                let a = crate::sql::Analyzer::new(cfg.insights.analysis_cache_entries);
                a.set_max_analyzed(cfg.insights.max_analyzed_bytes);
                a
            }),
            auth_key: match &cfg.server.auth_secret {
                Some(s) => s.as_bytes().to_vec(),
                None => rand::random::<[u8; 32]>().to_vec(),
            },
            buffers: Arc::new(crate::net::budget::Budget::new(cfg.server.max_buffered_bytes)),
            query_stats: Arc::new(crate::insights::stats::QueryStats::new(cfg.insights.max_fingerprints)),
            findings: Default::default(),
            index_usage: Default::default(),
            stats_periods: Default::default(),
            cache: Arc::new(crate::cache::ResultCache::new(&cfg.cache, &cfg.strategy)?),
            tls,
            cli,
            shutdown: watch::channel(false).0,
            scram_cache: Mutex::default(),
        })
    }

    /// The TLS acceptor clients may ask for (None: TLS off).
    pub fn tls(&self) -> Option<&TlsAcceptor> {
        self.tls.as_ref()
    }

    /// Tells every session the proxy is shutting down.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
        // Sessions watch their own wake-up, not the channel (one wake source per session loop).
        self.cancels.wake_all();
    }

    /// Re-reads the configuration (SIGHUP, admin RELOAD); the old one stays if the new is invalid.
    pub fn reload(&self) -> Result<()> {
        let new = crate::config::load::load(&self.cli)?;
        crate::net::upstream_tls::for_config(&new.upstream)?;
        self.cache.reconfigure(&new.cache);
        self.analyzer.set_max_analyzed(new.insights.max_analyzed_bytes);
        self.buffers.set_limit(new.server.max_buffered_bytes);
        self.config.store(Arc::new(new));
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// The result cache's counters, as /health/status, SHOW CACHE and /metrics report them.
    pub fn cache_snapshot(&self) -> crate::cache::Snapshot {
        self.cache.snapshot(self.config.load().cache.enabled)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// What an unknown user's SCRAM exchange runs against (see `secrets::fake_verifier`).
    pub fn fake_verifier(&self, user: &str) -> Verifier {
        crate::config::secrets::fake_verifier(&self.auth_key, user)
    }

    pub fn scram_verifier(&self, user: &UserConfig) -> Option<Arc<Verifier>> {
        match user.secret()? {
            Secret::Scram(s) => parse_scram_secret(s).ok().map(Arc::new),
            Secret::Plain(p) => {
                let mut cache = self.scram_cache.lock();
                match cache.get(&*user.name) {
                    Some((from, v)) if from == p => Some(v.clone()),
                    _ => {
                        let v = Arc::new(scram_from_plain(p));
                        cache.insert(user.name.clone(), (p.to_string(), v.clone()));
                        Some(v)
                    }
                }
            }
            Secret::Md5Hash(_) => None,
        }
    }
}
