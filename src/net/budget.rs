//! One bound on the bytes all clients' large messages hold in pgpilot at once
//! (`server.max_buffered_bytes`). The per-message limit alone multiplies: 64 MiB per Query times
//! 1,000 clients is 64 GB, and eight clients each sending an unfinished 60 MB Query took the
//! proxy from 28 to 511 MB. A message that must be buffered whole and is larger than the
//! streaming threshold takes its length from this budget before its bytes are read; one that
//! would exceed it is refused (53200) and its client closed, and no other client notices.

use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Budget {
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Self { limit: AtomicUsize::new(limit), used: AtomicUsize::new(0) }
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Takes `bytes` if they fit under the limit.
    pub fn take(&self, bytes: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .is_ok()
    }

    pub fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held now (for /metrics).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn takes_up_to_the_limit_and_gets_it_back() {
        let b = Budget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41), "over the limit");
        assert!(b.take(40));
        b.give_back(60);
        assert_eq!(b.used(), 40);
        b.set_limit(30);
        assert!(!b.take(1));
    }
}
