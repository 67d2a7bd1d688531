//! What one reply-queue entry expects back: the kind of reply that completes it and the
//! prepared-statement stage's `Action` on it (what the client sees of the reply).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::prepared::Statement;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Parse,
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close,
    Sync,
    /// Simple Query or FunctionCall: answered up to its own ReadyForQuery.
    Query,
    /// A reply pgpilot gives itself, emitted in its turn.
    Local,
}

#[derive(Debug)]
pub enum Action {
    Forward,
    /// Injected by pgpilot: the reply is dropped (errors still reach the client).
    Suppress,
    Local(Bytes),
    /// A ParseComplete given here for the client's Parse of a statement the server already has;
    /// if the server skips to Sync before it, the client's name is forgotten again.
    LocalParse {
        stmt: Arc<Statement>,
        client_name: Bytes,
    },
    /// The client's own Parse, forwarded as sent, that opened `client_name` in the session's
    /// statement table (undone if the server rejects or skips it).
    ClientParse {
        client_name: Bytes,
    },
    /// Forwarded or injected Parse of a registry statement; `client_name` is set when the client's
    /// own Parse created the mapping (undone if the server rejects or skips it).
    Parse {
        stmt: Arc<Statement>,
        client_name: Option<Bytes>,
        suppress: bool,
    },
    /// Bind of a registry statement (to detect a stale cached plan).
    Bind {
        stmt: Arc<Statement>,
    },
    /// Describe of a registry statement prepared afresh: what the reply means (`Check`). Boxed:
    /// rare, and every queue entry is moved in and out once per message (the queue's entries
    /// stay under ~100 bytes).
    Describe(Box<DescribeWait>),
}

#[derive(Debug)]
pub struct DescribeWait {
    pub(super) stmt: Arc<Statement>,
    pub(super) check: Check,
    pub(super) suppress: bool,
    /// The client's name for the statement (empty: its unnamed one).
    pub(super) client: Bytes,
    pub(super) reply: BytesMut,
    /// What the client sent after it waits for its answer (`reply_hold.rs`).
    pub(super) holds: bool,
    /// The DDL epoch when it was sent (`Statement::fresh`).
    pub(super) sent_at: u64,
}

impl Action {
    /// A Describe of `stmt` whose reply is checked as `check` (shown to the client unless
    /// `suppress`).
    pub fn describe(stmt: Arc<Statement>, check: Check, suppress: bool, client: Bytes) -> Action {
        let sent_at = stmt.ddl_epoch();
        let reply = BytesMut::new();
        Action::Describe(Box::new(DescribeWait { stmt, check, suppress, client, reply, holds: false, sent_at }))
    }
}

/// What a Describe of a freshly prepared registry statement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The client gets (or gets to use) this description now: it becomes the current one.
    Adopt,
    /// The client holds the description of this version: a different reply means the statement
    /// changed under it (DDL), so it gets PostgreSQL's 0A000 as a backend with a stale plan would.
    Compare(u64),
}
