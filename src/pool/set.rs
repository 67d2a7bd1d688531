//! All pools, created on first use of a (database, user) pair.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use super::{Pool, PoolKey, PoolSnapshot};
use crate::config::Config;

pub struct PoolSet {
    config: Arc<ArcSwap<Config>>,
    paused: tokio::sync::watch::Sender<bool>,
    pools: RwLock<HashMap<PoolKey, Arc<Pool>>>,
}

impl PoolSet {
    pub fn new(config: Arc<ArcSwap<Config>>) -> Self {
        Self { config, paused: tokio::sync::watch::channel(false).0, pools: RwLock::new(HashMap::new()) }
    }

    /// PAUSE / RESUME from the admin console: new checkouts wait while paused.
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    pub fn get(&self, database: &str, user: &str) -> Arc<Pool> {
        let key = PoolKey { database: database.to_string(), user: user.to_string() };
        if let Some(pool) = self.pools.read().get(&key) {
            return pool.clone();
        }
        self.pools
            .write()
            .entry(key.clone())
            .or_insert_with(|| Pool::new(key, self.config.clone(), self.paused.subscribe()))
            .clone()
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
