//! Which version of a prepared statement each client name holds (the hash of the description a
//! server gave this client in this session), and what a fresh Describe checks: the rules that keep a
//! description from before a DDL away from every client that did not get it from a server.

use bytes::Bytes;

use super::extended::ADOPTING;
use super::reply_queue::Check;
use super::session::Session;
use crate::prepared::Statement;

impl Session {
    /// Which registry entries this client may share: same settings, and the same pool (a
    /// description names table OIDs, which differ between databases).
    pub(super) fn registry_scope(&self) -> u64 {
        self.state.sig() ^ self.pool_scope
    }

    /// Under `name` this client was given the statement's current version by a server in this
    /// session.
    pub(super) fn holds_current(&self, name: &[u8], stmt: &Statement) -> bool {
        self.held_version(name, stmt).is_some()
    }

    /// The version this client holds under `name` when it is the current one.
    pub(super) fn held_version(&self, name: &[u8], stmt: &Statement) -> Option<u64> {
        let v = stmt.version();
        (v != 0 && self.statements.version(name) == Some((stmt.id, v))).then_some(v)
    }

    /// The version a server described to this client under `name`, if any (it may differ from
    /// the current one after a DDL).
    pub(super) fn held(&self, name: &[u8], stmt: &Statement) -> Option<u64> {
        self.statements.version(name).filter(|(id, v)| *id == stmt.id && *v != ADOPTING).map(|(_, v)| v)
    }

    /// A fresh prepare whose description this client adopts under `name` is on its way.
    pub(super) fn adopting(&self, name: &[u8], stmt: &Statement) -> bool {
        self.statements.version(name) == Some((stmt.id, ADOPTING))
    }

    /// The current description, when this client got it from a server in this session (one
    /// snapshot: another session may change the statement's description at any time).
    pub(super) fn description_held(&self, name: &[u8], stmt: &Statement) -> Option<Bytes> {
        let (description, version) = stmt.current()?;
        (self.statements.version(name) == Some((stmt.id, version))).then_some(description)
    }

    /// What a fresh Describe of `stmt` checks for the client's `name`: the version it holds, or
    /// (it holds none) the description it is about to adopt.
    pub(super) fn describe_check(&mut self, name: &[u8], stmt: &Statement) -> Check {
        match self.held(name, stmt) {
            Some(v) => Check::Compare(v),
            None => {
                self.statements.set_version(name, Some((stmt.id, ADOPTING)));
                Check::Adopt
            }
        }
    }
}
