//! Where the protocol allows a server connection to change hands: counts the Sync/Query messages
//! sent and the ReadyForQuery replies received. The boundary is a ReadyForQuery with status 'I'
//! that answers the last Sync or Query sent, with nothing sent after it (never at Flush).

use crate::protocol::backend::tx_status;
use crate::protocol::frontend as fe;

#[derive(Debug)]
pub struct TxTracker {
    /// Sync/Query messages forwarded whose ReadyForQuery has not come back.
    outstanding: u32,
    /// Extended-protocol messages forwarded since the last Sync (e.g. Parse/Describe/Flush).
    pending_since_sync: bool,
    /// Syncs forwarded since the last Execute: the server ignores those if that Execute starts COPY IN.
    syncs_since_execute: u32,
    copy_in: bool,
    /// Last ReadyForQuery status (`tx_status`).
    pub status: u8,
}

impl Default for TxTracker {
    fn default() -> Self {
        Self {
            outstanding: 0,
            pending_since_sync: false,
            syncs_since_execute: 0,
            copy_in: false,
            status: tx_status::IDLE,
        }
    }
}

impl TxTracker {
    /// A client message (its tag) is being forwarded to the server.
    pub fn on_client(&mut self, tag: u8) {
        match tag {
            fe::SYNC | fe::FLUSH if self.copy_in => {} // ignored by the server during COPY IN
            fe::SYNC => {
                self.outstanding += 1;
                self.syncs_since_execute += 1;
                self.pending_since_sync = false;
            }
            // A FunctionCall is answered up to its own ReadyForQuery, as a simple Query is (it once
            // counted as an unsynced extended message: its client kept the connection until a Sync,
            // which a psql or libpq lo_* user never sends). One the server skips (an error before
            // Sync) is not counted (`Session::forward`) or uncounted (`skipped`).
            fe::QUERY | fe::FUNCTION_CALL => {
                self.outstanding += 1;
                self.syncs_since_execute = 0;
            }
            fe::EXECUTE => {
                self.syncs_since_execute = 0;
                self.pending_since_sync = true;
            }
            fe::COPY_DONE | fe::COPY_FAIL => self.end_copy(),
            fe::COPY_DATA | fe::FLUSH => {}
            _ => self.pending_since_sync = true,
        }
    }

    /// The server skipped `n` Queries or FunctionCalls counted when they were sent (an error
    /// before their Sync): no ReadyForQuery will answer them.
    pub fn skipped(&mut self, n: u32) {
        self.outstanding = self.outstanding.saturating_sub(n);
    }

    /// The server entered COPY IN (CopyInResponse).
    pub fn on_copy_in(&mut self) {
        self.copy_in = true;
        self.outstanding -= self.syncs_since_execute.min(self.outstanding);
        self.syncs_since_execute = 0;
    }

    /// An ErrorResponse: one during COPY IN ends it, as a CopyFail would (an extended-protocol
    /// COPY then needs its own Sync: the server discards everything up to it).
    pub fn on_error(&mut self) {
        if self.copy_in {
            self.end_copy();
        }
    }

    /// COPY IN ended: an extended-protocol COPY then needs its own Sync; a COPY from a simple
    /// Query is answered by that Query's ReadyForQuery.
    fn end_copy(&mut self) {
        self.copy_in = false;
        self.pending_since_sync = self.outstanding == 0;
    }

    /// ReadyForQuery arrived; true when this is a boundary.
    pub fn on_ready(&mut self, status: u8) -> bool {
        self.status = status;
        self.outstanding = self.outstanding.saturating_sub(1);
        self.at_boundary()
    }

    pub fn at_boundary(&self) -> bool {
        self.outstanding == 0 && !self.pending_since_sync && !self.copy_in
    }

    /// Syncs sent since the last Execute (ignored by the server if that Execute starts COPY IN).
    pub fn syncs_since_execute(&self) -> u32 {
        self.syncs_since_execute
    }

    pub fn in_copy(&self) -> bool {
        self.copy_in
    }

    pub fn idle(&self) -> bool {
        self.at_boundary() && self.status == tx_status::IDLE
    }
}

#[cfg(test)]
mod tests {
    use super::TxTracker;

    fn send(t: &mut TxTracker, tags: &[u8]) {
        tags.iter().for_each(|&c| t.on_client(c));
    }

    #[test]
    fn flush_is_not_a_boundary() {
        let mut t = TxTracker::default();
        send(&mut t, b"PDH"); // asyncpg: Parse, Describe, Flush
        assert!(!t.at_boundary());
        send(&mut t, b"BES");
        assert!(t.on_ready(b'I'));
    }

    #[test]
    fn a_function_call_ends_at_its_ready_for_query() {
        let mut t = TxTracker::default();
        send(&mut t, b"F");
        assert!(!t.at_boundary());
        assert!(t.on_ready(b'I') && t.idle());
        send(&mut t, b"QF");
        assert!(!t.on_ready(b'T'));
        assert!(t.on_ready(b'T') && !t.idle());
        let mut t = TxTracker::default();
        send(&mut t, b"PBEFS");
        assert!(!t.on_ready(b'I'), "the F's own ReadyForQuery (no error)");
        assert!(t.on_ready(b'I') && t.idle(), "the Sync's");
        let mut t = TxTracker::default();
        send(&mut t, b"PBEFS");
        t.skipped(1); // the Execute failed: the server skips the F
        assert!(t.on_ready(b'I') && t.idle(), "one ReadyForQuery, the Sync's");
    }

    #[test]
    fn pipelines_release_after_the_last_sync() {
        let mut t = TxTracker::default();
        send(&mut t, b"PBESBESBES");
        assert!(!t.on_ready(b'I'));
        assert!(!t.on_ready(b'I'));
        assert!(t.on_ready(b'I'));
    }

    #[test]
    fn transaction_status_keeps_the_connection() {
        let mut t = TxTracker::default();
        send(&mut t, b"Q");
        assert!(t.on_ready(b'T'));
        assert!(!t.idle());
        send(&mut t, b"Q");
        t.on_ready(b'I');
        assert!(t.idle());
    }

    #[test]
    fn extended_copy_in_ignores_syncs_sent_into_it() {
        let mut t = TxTracker::default();
        send(&mut t, b"PBES"); // tokio-postgres copy_in: Bind/Execute/Sync, then data
        t.on_copy_in();
        send(&mut t, b"ddSdc"); // a Sync inside COPY is ignored by the server
        assert!(!t.at_boundary());
        send(&mut t, b"S");
        assert!(t.on_ready(b'I'));
    }

    #[test]
    fn an_error_ends_copy_in_as_copy_fail_does() {
        let mut t = TxTracker::default();
        send(&mut t, b"PBES");
        t.on_copy_in();
        send(&mut t, b"d");
        t.on_error(); // bad data: the server now discards up to the client's next Sync
        assert!(!t.at_boundary() && !t.idle(), "no boundary before the Sync the server waits for");
        send(&mut t, b"dc"); // still in flight when the error came
        assert!(!t.at_boundary());
        send(&mut t, b"S");
        assert!(t.on_ready(b'I') && t.idle());
        let mut t = TxTracker::default();
        send(&mut t, b"Q");
        t.on_copy_in();
        t.on_error(); // a simple Query's COPY: its own ReadyForQuery follows the error
        assert!(t.on_ready(b'I'));
        t.on_error(); // an error outside COPY changes nothing
        assert!(t.at_boundary());
    }

    #[test]
    fn simple_copy_in() {
        let mut t = TxTracker::default();
        send(&mut t, b"Q");
        t.on_copy_in();
        send(&mut t, b"ddc");
        assert!(t.on_ready(b'I'));
    }
}
