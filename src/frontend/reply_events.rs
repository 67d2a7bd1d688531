//! What the reply queue hands back to the stages after a batch of server replies: each stage's
//! own events (the prepared-statement bookkeeping's; the attachments' for the other stages), so
//! that no stage reads another's.

use std::sync::Arc;

use bytes::Bytes;

use super::reply_attachment::Attachment;
use crate::prepared::Statement;

/// What the prepared-statement bookkeeping must do about a reply, beyond forwarding or dropping it.
#[derive(Debug)]
pub enum Event {
    /// The server rejected a Parse: forget the statement everywhere.
    ParseFailed { stmt: Arc<Statement>, client_name: Option<Bytes> },
    /// The server skipped a Parse (an earlier error): it is not prepared there after all.
    ParseSkipped { stmt: Arc<Statement>, client_name: Option<Bytes>, on_server: bool },
    /// The server rejected or skipped the client's own Parse: the name holds nothing.
    ParseUndone { client_name: Bytes },
    /// A server described the statement (`version` of it); `adopted`: the client now holds it.
    Described { stmt: Arc<Statement>, version: u64, adopted: bool, client: Bytes },
    /// An execution showed the server's copy stale (0A000, a type that no longer exists) or
    /// gone (26000).
    PlanStale { stmt: Arc<Statement>, why: Stale },
    /// A copy proved stale or gone and the run is sent again on a fresh one (`reply_retry.rs`);
    /// the client's name for the statement is `client`.
    Retried { stmt: Arc<Statement>, client: Bytes, why: Stale },
}

/// Why a server's copy of a statement cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Its plan: what it was planned with changed, so its description may have too (every
    /// connection's copy is described again).
    Plan,
    /// Only this connection's copy is gone (a client's SQL DEALLOCATE of pgpilot's name): the
    /// statement itself is as it was.
    Gone,
}

/// The events of one batch of replies, each for its stage.
#[derive(Debug, Default)]
pub struct Replies<A: Attachment> {
    /// For the prepared-statement bookkeeping.
    pub statements: Vec<Event>,
    /// The attachments' (each stage's slot fills its own part).
    pub attached: A::Events,
}

impl<A: Attachment> Replies<A> {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty() && A::no_events(&self.attached)
    }
}
