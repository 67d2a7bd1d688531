//! Why a server connection stays with its client past a transaction's end, and how it goes back
//! to its pool: the facts the session learns as statements run, and the one decision made of them
//! at every return (a transaction's end and the session's end alike).

use crate::config::PoolMode;
use crate::pool::Back;

#[derive(Default)]
pub struct Keeping {
    /// What pinned the connection to its client (transaction mode): LISTEN, a temporary table, a
    /// session-level advisory lock... named in the log.
    pub pin: Option<&'static str>,
    /// The client ran something whose effect on its session pgpilot cannot read back: it keeps
    /// its server connection (and reads no cache) until DISCARD ALL or the end.
    pub state_unknown: bool,
    /// A setting changed in the transaction in hand: read back at its end (the client's state is
    /// what the next checkout replays).
    pub state_dirty: bool,
    /// `pool.isolate_attached_code` in transaction mode.
    pub isolate_attached_code: bool,
    /// The transaction in hand touched a relation that runs user code: what that code did to the
    /// session is not known, so the connection is reset when it goes back.
    pub reset_on_release: bool,
}

/// What ends when a connection goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A transaction (transaction mode; or the login, which needed a connection for a moment).
    Transaction,
    /// The session: the client left.
    Session,
}

/// At a return: whether the client's settings are read back from the connection first, and how
/// the connection goes back.
#[derive(Debug, PartialEq, Eq)]
pub struct Return {
    pub read_back: bool,
    pub back: Back,
}

impl Keeping {
    pub fn new(mode: PoolMode, isolate_attached_code: bool) -> Self {
        Self { isolate_attached_code: isolates(mode, isolate_attached_code), ..Self::default() }
    }

    /// Nothing of the client's session lives on the connection but what pgpilot tracks.
    pub fn tracked(&self) -> bool {
        self.pin.is_none() && !self.state_unknown
    }

    /// The client's session is known and its own: another client's result may answer its reads.
    pub fn shareable(&self) -> bool {
        self.tracked() && !self.state_dirty
    }

    /// How the held connection goes back (the per-transaction facts are consumed). At a
    /// transaction's end (transaction mode, tracked: the only returns then) the client's changed
    /// settings are read back; at the session's end they are not (the client is gone), and the
    /// connection is marked as holding settings nobody tracks. A connection that held the whole
    /// session, a pinned or unknown one, or one user code ran on is reset.
    pub fn how_back(&mut self, mode: PoolMode, end: End) -> Return {
        let at_end = end == End::Session;
        // (A transaction's end returns only a tracked connection in transaction mode: `may_release`.)
        debug_assert!(at_end || (mode == PoolMode::Transaction && self.tracked()));
        let dirty = std::mem::take(&mut self.state_dirty);
        let reset = std::mem::take(&mut self.reset_on_release);
        if mode != PoolMode::Transaction || !self.tracked() || reset {
            return Return { read_back: dirty && !at_end, back: Back::Reset };
        }
        match (dirty, at_end) {
            (true, false) => Return { read_back: true, back: Back::Reuse },
            (true, true) => Return { read_back: false, back: Back::SettingsUnknown },
            (false, _) => Return { read_back: false, back: Back::Reuse },
        }
    }
}

/// `pool.isolate_attached_code` applies in transaction mode (a session-mode connection is reset
/// at the end anyway).
pub fn isolates(mode: PoolMode, isolate_attached_code: bool) -> bool {
    mode == PoolMode::Transaction && isolate_attached_code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_back_reset_unless_its_session_state_is_tracked() {
        let tx = PoolMode::Transaction;
        let plain = |end| Keeping::new(tx, true).how_back(tx, end);
        assert_eq!(plain(End::Transaction), Return { read_back: false, back: Back::Reuse });
        assert_eq!(plain(End::Session), Return { read_back: false, back: Back::Reuse });

        let dirty = |end| Keeping { state_dirty: true, ..Keeping::new(tx, true) }.how_back(tx, end);
        assert_eq!(
            dirty(End::Transaction),
            Return { read_back: true, back: Back::Reuse },
            "the client's new settings read"
        );
        assert_eq!(dirty(End::Session), Return { read_back: false, back: Back::SettingsUnknown }, "nobody's settings");

        let mut k = Keeping { reset_on_release: true, state_dirty: true, ..Keeping::new(tx, true) };
        assert_eq!(k.how_back(tx, End::Transaction), Return { read_back: true, back: Back::Reset });
        assert_eq!(k.how_back(tx, End::Transaction), Return { read_back: false, back: Back::Reuse }, "per transaction");

        let mut k = Keeping { pin: Some("LISTEN"), ..Keeping::new(tx, true) };
        assert_eq!(k.how_back(tx, End::Session), Return { read_back: false, back: Back::Reset });
        let mut k = Keeping { state_unknown: true, ..Keeping::new(tx, true) };
        assert_eq!(k.how_back(tx, End::Session), Return { read_back: false, back: Back::Reset });
        let session = PoolMode::Session;
        assert_eq!(Keeping::new(session, true).how_back(session, End::Session).back, Back::Reset);
        assert!(!Keeping::new(session, true).isolate_attached_code, "isolation is transaction mode's");
    }
}
