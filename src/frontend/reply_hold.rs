//! A run held back until the server describes a statement pgpilot prepared again for it.
//!
//! When a client holds a statement's description and pgpilot prepares the statement afresh on
//! another server connection (or after DDL it saw), it asks for the new description to compare
//! (`Check::Compare`). If the shape changed, PostgreSQL itself would fail the client's Bind with
//! 0A000 and skip everything up to the Sync: a write pipelined behind it never runs, an open block
//! is failed. Answering 0A000 from the comparison alone is not enough: the client's messages
//! after the Describe have already run on the server by then. So the bytes after such a Describe
//! (and a Flush, so the server answers it at once) wait in the server buffer until its answer: the
//! same description releases them as they are; a different one puts a Bind the server must fail
//! in front of them, so the server skips them up to the Sync exactly as it would have, and the
//! client gets its 0A000 in the Bind's place. One round trip, only when a statement is prepared
//! again for a client that was given its description (its first use on a server connection, after
//! an eviction from that connection's LRU, after DDL seen here).

use bytes::BytesMut;

use super::{Action, Attachment, Expect, Kind, Pending};

/// The Bind that fails in a changed statement's place, and the server skips to the Sync: of a
/// statement never prepared (server names are `pgpilot_` and a number: 26000), and should one of
/// that name exist (a client's SQL PREPARE), with two parameter formats for no parameters (08P01).
/// (A constant: encoding it here would take `messages::bind` out of line on every Bind's path.)
const FAILING_BIND: &[u8] = b"B\0\0\0\x25\0pgpilot_shape_changed\0\0\x02\0\0\0\0\0\0\0\0";

/// Where held bytes start in the server buffer, oldest first (one per Describe waited for).
#[derive(Debug, Default)]
pub(super) struct Holds {
    at: Vec<usize>,
    /// The oldest hold's statement changed shape: its bytes go behind a Bind that fails.
    fail: bool,
}

impl<A: Attachment> Pending<A> {
    /// The Describe just queued (`Check::Compare`, with a Flush behind it, ending at `at` in the
    /// server buffer) decides whether what follows may run: hold it back until the answer.
    pub fn hold(&mut self, at: usize) {
        let Some(Action::Describe(d)) = self.last().map(|e| &mut e.action) else { return };
        d.holds = true;
        self.holds.at.push(at);
        // A run kept to be sent again would go out behind held bytes the server never saw (one
        // already sent again stays: its ReadyForQuery is still to be swallowed).
        self.retry.drop_kept();
    }

    /// Some bytes wait for a Describe's answer (the client's next bytes wait too: the held ones
    /// stay bounded by one read).
    #[inline]
    pub fn holding(&self) -> bool {
        !self.holds.at.is_empty()
    }

    /// How much of the server buffer may be written now, the holds whose Describe was answered
    /// released first (`written` once it went out). Asked before anything else, also of an
    /// empty buffer: a hold at its end still waits to be released.
    #[inline]
    pub fn writable(&mut self, sout: &mut BytesMut) -> usize {
        if self.holds.at.is_empty() {
            return sout.len();
        }
        self.release_holds(sout);
        self.holds.at.first().copied().unwrap_or(sout.len())
    }

    /// `n` bytes were written from the front of the server buffer.
    pub fn written(&mut self, n: usize) {
        for at in &mut self.holds.at {
            *at -= n;
        }
    }

    /// Releases the holds whose Describe left the queue (answered, or skipped after an error):
    /// when the statement changed shape, the failing Bind goes in front of the held bytes.
    fn release_holds(&mut self, sout: &mut BytesMut) {
        let waiting = self.q.iter().filter(|e| e.holds()).count();
        while self.holds.at.len() > waiting {
            let at = self.holds.at.remove(0);
            if std::mem::take(&mut self.holds.fail) {
                let held = sout.split_off(at);
                sout.extend_from_slice(FAILING_BIND);
                sout.extend_from_slice(&held);
                for later in &mut self.holds.at {
                    *later += FAILING_BIND.len();
                }
            }
        }
    }

    /// The held run's Describe found the statement changed: the failing Bind's reply (the
    /// server's 26000 or 08P01, then its skip to Sync) is expected first, and shown to no one.
    pub(super) fn fail_held_run(&mut self) {
        self.q.push_front(Expect::new(Kind::Bind, Action::Suppress, true));
        self.holds.fail = true;
    }

    /// Nothing is held any more (the connection is gone or goes back).
    pub(super) fn drop_holds(&mut self) {
        self.holds.at.clear();
        self.holds.fail = false;
    }
}

impl<A> Expect<A> {
    /// A Describe that holds back what follows it.
    fn holds(&self) -> bool {
        matches!(&self.action, Action::Describe(d) if d.holds)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_failing_bind_has_two_formats_for_no_parameters() {
        let mut b = bytes::BytesMut::new();
        crate::net::messages::bind(&mut b, b"", "pgpilot_shape_changed", &[0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[..], super::FAILING_BIND);
    }
}
