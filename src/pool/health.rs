//! Whether an idle connection may be handed out: the quick answer for one returned moments ago,
//! the socket peek and the health-check query otherwise, and the short suspicion after one of
//! the pool's connections died.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Pool;
use crate::backend::ServerConn;

impl Pool {
    /// Returned moments ago, young enough, and no connection of the pool died lately: nothing to
    /// check (`validate` would pass it without a system call). Most checkouts under load; decided
    /// without building `validate`'s future.
    pub(super) fn fresh(&self, conn: &ServerConn) -> bool {
        let idle_for = crate::clock::since(conn.last_used_ms);
        if idle_for >= Duration::from_millis(50)
            || crate::clock::now_ms() < self.suspect_until_ms.load(Ordering::Relaxed)
        {
            return false;
        }
        let cfg = self.config.load();
        crate::clock::since(conn.created_ms) < Duration::from_millis(cfg.pool.lifetime_ms)
            && idle_for < Duration::from_millis(cfg.pool.health_check_after_ms)
    }

    /// Checks an idle connection before handing it out; broken ones are dropped (slot freed).
    pub(super) async fn validate(&self, mut conn: Box<ServerConn>) -> Option<Box<ServerConn>> {
        let cfg = self.config.load();
        let idle_for = crate::clock::since(conn.last_used_ms);
        let too_old = crate::clock::since(conn.created_ms) >= Duration::from_millis(cfg.pool.lifetime_ms);
        let suspect = crate::clock::now_ms() < self.suspect_until_ms.load(Ordering::Relaxed);
        let healthy = !too_old
            && ((idle_for < Duration::from_millis(50) && !suspect) || !conn.looks_broken())
            && (idle_for < Duration::from_millis(cfg.pool.health_check_after_ms)
                || Box::pin(crate::timers::timeout(cfg.connect_timeout(), conn.run_internal("")))
                    .await
                    .is_ok_and(|r| r.is_ok()));
        if healthy {
            return Some(conn);
        }
        tracing::debug!(server = conn.id, "discarding an idle server connection that failed its check");
        drop(conn);
        self.free_slot();
        None
    }

    /// One of this pool's connections turned out dead: check the others' sockets for a second.
    pub fn went_away(&self) {
        self.suspect_until_ms.store(crate::clock::now_ms() + 1000, Ordering::Relaxed);
    }
}
