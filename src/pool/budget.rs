//! The server connections all pools together may hold (`pool.max_server_connections`): the two
//! MCP servers' pools share one server, and neither may take what it cannot give back. By default
//! it is derived from the server at the first connection: max_connections minus the connections
//! reserved for superusers (and, from PostgreSQL 16, `reserved_connections`), less 10%, divided by
//! `pool.replicas` when several pgpilot replicas share the server.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Default)]
pub struct Budget {
    /// 0: not known yet (no limit until it is).
    limit: AtomicUsize,
    used: AtomicUsize,
    derived: AtomicBool,
}

/// What the server's settings allow one replica: (max_connections - reserved) x 0.9 / replicas.
pub fn derive(max_connections: usize, reserved: usize, replicas: usize) -> usize {
    (((max_connections.saturating_sub(reserved)) as f64 * 0.9) as usize / replicas.max(1)).max(1)
}

impl Budget {
    /// One more server connection, if the budget has room.
    pub fn try_take(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if limit > 0 && used >= limit {
                return false;
            }
            match self.used.compare_exchange_weak(used, used + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    pub fn give_back(&self) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| Some(u.saturating_sub(1)));
    }

    /// Fully used: a pool that needs a connection must wait for another pool to close one.
    pub fn exhausted(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        limit > 0 && self.used.load(Ordering::Relaxed) >= limit
    }

    /// A configured limit (replaces the derived one; 0 keeps what the server gave).
    pub fn configure(&self, configured: usize) {
        if configured > 0 {
            self.limit.store(configured, Ordering::Relaxed);
            self.derived.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the limit still has to be read from the server (claims that read).
    pub fn claim_derivation(&self) -> bool {
        !self.derived.swap(true, Ordering::AcqRel)
    }

    pub fn set_derived(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// (limit, used); limit 0 while not known.
    pub fn snapshot(&self) -> (usize, usize) {
        (self.limit.load(Ordering::Relaxed), self.used.load(Ordering::Relaxed))
    }
}

/// The server settings the derivation reads (one round trip, on the first connection).
pub const QUERY: &str =
    "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections'), \
     coalesce(current_setting('reserved_connections', true), '0')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_and_derives_from_the_server() {
        let b = Budget::default();
        assert!((0..1000).all(|_| b.try_take()), "no limit until known");
        b.configure(1001);
        assert!(b.try_take() && !b.try_take() && b.exhausted());
        b.give_back();
        assert!(!b.exhausted() && b.try_take());
        assert_eq!(derive(100, 3, 1), 87);
        assert_eq!(derive(100, 3, 2), 43);
        assert_eq!(derive(2, 3, 1), 1);
    }
}
