//! The table list the cache stage reads: a read is cached only where every table it reads is an
//! ordinary table, and the list is (re)loaded in the background when it is due.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cache::ResultCache;
use crate::config::Config;
use crate::pool::Pool;

/// Every table read is an ordinary table; starts a (re)load of the list when one is due.
pub(super) fn relations_known(
    cache: &Arc<ResultCache>,
    config: &ArcSwap<Config>,
    pool: &Arc<Pool>,
    db: &Arc<str>,
    tables: &[Arc<str>],
) -> bool {
    let refresh = config.load().cache.relations_refresh_s * 1000;
    let relations = &cache.relations;
    let (ok, due) = relations.check(db, tables, crate::clock::now_ms(), refresh);
    if due && relations.begin_load(db) {
        crate::cache::relations::spawn_load(cache.clone(), pool.clone(), db.clone());
    }
    ok
}
