//! All pools, created on first use of a (database, user) pair.

use foldhash::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use super::{Pool, PoolKey, PoolSnapshot};
use crate::config::Config;

/// What PAUSE covers: every pool, or the pools of these databases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paused {
    pub all: bool,
    pub databases: std::collections::BTreeSet<String>,
}

impl Paused {
    pub fn covers(&self, database: &str) -> bool {
        self.all || (!self.databases.is_empty() && self.databases.contains(database))
    }
}

pub struct PoolSet {
    config: Arc<ArcSwap<Config>>,
    paused: tokio::sync::watch::Sender<Paused>,
    pools: RwLock<HashMap<PoolKey, Arc<Pool>>>,
    /// Server connections all pools together may hold.
    pub budget: Arc<super::budget::Budget>,
}

impl PoolSet {
    pub fn new(config: Arc<ArcSwap<Config>>) -> Self {
        let budget = Arc::new(super::budget::Budget::default());
        budget.configure(config.load().pool.max_server_connections);
        Self {
            config,
            paused: tokio::sync::watch::channel(Paused::default()).0,
            pools: RwLock::new(HashMap::default()),
            budget,
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// PAUSE / RESUME [database] from the admin console: new checkouts of the pools it covers
    /// wait while paused. RESUME without a database resumes everything; RESUME of one database
    /// while everything is paused is refused (Err), as PgBouncer does.
    pub fn set_paused(&self, database: Option<&str>, paused: bool) -> Result<(), String> {
        let mut result = Ok(());
        self.paused.send_modify(|p| match (database, paused) {
            (None, true) => p.all = true,
            (None, false) => *p = Paused::default(),
            (Some(db), true) => {
                p.databases.insert(db.to_string());
            }
            (Some(_), false) if p.all => result = Err("everything is paused: RESUME without a database".into()),
            (Some(db), false) => {
                p.databases.remove(db);
            }
        });
        result
    }

    /// PAUSE covers this database (SHOW DATABASES' `paused`).
    pub fn is_paused(&self, database: &str) -> bool {
        self.paused.borrow().covers(database)
    }

    pub fn get(&self, database: &str, user: &str) -> Arc<Pool> {
        let key = PoolKey { database: database.to_string(), user: user.to_string() };
        if let Some(pool) = self.pools.read().get(&key) {
            return pool.clone();
        }
        self.pools
            .write()
            .entry(key.clone())
            .or_insert_with(|| Pool::new(key, self.config.clone(), self.paused.subscribe(), self.budget.clone()))
            .clone()
    }

    /// Drops the pools nobody has used for `after` (no session, no connection, no waiter: only
    /// this map holds them), so logins to databases that do not exist, or a pool's last client
    /// long gone, do not leave an entry each forever. Returns how many went.
    pub fn drop_unused(&self, after: std::time::Duration) -> usize {
        let now = crate::clock::now_ms().max(1);
        let after = after.as_millis() as u64;
        let mut pools = self.pools.write();
        let before = pools.len();
        pools.retain(|_, pool| {
            let unused = Arc::strong_count(pool) == 1 && pool.is_empty();
            let since = pool.unused_since_ms.load(Ordering::Relaxed);
            match (unused, since) {
                (false, _) => {
                    pool.unused_since_ms.store(0, Ordering::Relaxed);
                    true
                }
                (true, 0) => {
                    pool.unused_since_ms.store(now, Ordering::Relaxed);
                    true
                }
                (true, since) => now.saturating_sub(since) < after,
            }
        });
        before - pools.len()
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<_> = self.pools.read().values().cloned().collect();
        pools.sort_by(|a, b| a.key.cmp(&b.key));
        pools
    }

    pub fn snapshots(&self) -> Vec<PoolSnapshot> {
        self.all().iter().map(|p| p.snapshot()).collect()
    }
}
