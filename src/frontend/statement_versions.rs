//! Which version of a prepared statement each client name holds (the hash of the description a
//! server gave this client in this session), and what a fresh Describe checks: the rules that keep a
//! description from before a DDL away from every client that did not get it from a server.

use bytes::Bytes;

use super::reply_queue::Check;
use super::statements::Statements;
use crate::prepared::Statement;

/// In a statement entry's version: a fresh description is on its way to this client.
pub const ADOPTING: u64 = u64::MAX;

impl Statements {
    /// The version the client holds under `name` when it is the statement's current one.
    pub fn held_version(&self, name: &[u8], stmt: &Statement) -> Option<u64> {
        let v = stmt.version();
        (v != 0 && self.version(name) == Some((stmt.id, v))).then_some(v)
    }

    /// The version a server described to this client under `name`, if any (it may differ from
    /// the current one after a DDL).
    pub fn held(&self, name: &[u8], stmt: &Statement) -> Option<u64> {
        self.version(name).filter(|(id, v)| *id == stmt.id && *v != ADOPTING).map(|(_, v)| v)
    }

    /// A fresh prepare whose description this client adopts under `name` is on its way.
    pub fn adopting(&self, name: &[u8], stmt: &Statement) -> bool {
        self.version(name) == Some((stmt.id, ADOPTING))
    }

    /// The current description, when this client got it from a server in this session and no
    /// DDL was seen since (one snapshot: another session may change the statement's description
    /// at any time).
    pub fn description_held(&self, name: &[u8], stmt: &Statement) -> Option<Bytes> {
        let (description, version) = stmt.fresh()?;
        (self.version(name) == Some((stmt.id, version))).then_some(description)
    }

    /// What a fresh Describe of `stmt` checks for the client's `name`: the version it holds, or
    /// (it holds none) the description it is about to adopt.
    pub fn describe_check(&mut self, name: &[u8], stmt: &Statement) -> Check {
        match self.held(name, stmt) {
            Some(v) => Check::Compare(v),
            None => {
                self.set_version(name, Some((stmt.id, ADOPTING)));
                Check::Adopt
            }
        }
    }
}
