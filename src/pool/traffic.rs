//! What a pool's clients sent and were sent, their Parse and Bind messages and their wait for a
//! server: PgBouncer's SHOW STATS counters (pgbouncer_exporter turns them into
//! `pgbouncer_stats_*_total`). A session counts in plain integers and adds them here once per
//! transaction, at the release, so the hot path touches no shared line per message.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A session's counts since it last handed them to its pool.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Bytes read from the client.
    pub received: u64,
    /// Bytes written to the client.
    pub sent: u64,
    /// Parse messages from the client.
    pub client_parses: u64,
    /// Parse messages the server completed (the client's and pgpilot's own).
    pub server_parses: u64,
    /// Bind messages from the client.
    pub binds: u64,
}

/// The pool's totals since start.
#[derive(Default)]
pub struct Traffic {
    received: AtomicU64,
    sent: AtomicU64,
    client_parses: AtomicU64,
    server_parses: AtomicU64,
    binds: AtomicU64,
    wait_us: AtomicU64,
}

impl Traffic {
    /// Adds a session's counts and zeroes them.
    pub fn take(&self, counts: &mut Counts) {
        let c = std::mem::take(counts);
        for (total, n) in [
            (&self.received, c.received),
            (&self.sent, c.sent),
            (&self.client_parses, c.client_parses),
            (&self.server_parses, c.server_parses),
            (&self.binds, c.binds),
        ] {
            if n != 0 {
                total.fetch_add(n, Relaxed);
            }
        }
    }

    /// A checkout waited (for a free connection, a slot or a connect) this long.
    pub fn waited(&self, us: u64) {
        self.wait_us.fetch_add(us, Relaxed);
    }

    pub fn counts(&self) -> Counts {
        Counts {
            received: self.received.load(Relaxed),
            sent: self.sent.load(Relaxed),
            client_parses: self.client_parses.load(Relaxed),
            server_parses: self.server_parses.load(Relaxed),
            binds: self.binds.load(Relaxed),
        }
    }

    pub fn wait_us(&self) -> u64 {
        self.wait_us.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_s_counts_are_added_once_and_zeroed() {
        let t = Traffic::default();
        let mut c = Counts { received: 10, sent: 20, client_parses: 1, server_parses: 2, binds: 3 };
        t.take(&mut c);
        assert_eq!(c, Counts::default());
        t.take(&mut c);
        let mut d = Counts { received: 5, ..Counts::default() };
        t.take(&mut d);
        t.waited(7);
        t.waited(8);
        assert_eq!(t.counts(), Counts { received: 15, sent: 20, client_parses: 1, server_parses: 2, binds: 3 });
        assert_eq!(t.wait_us(), 15);
    }
}
