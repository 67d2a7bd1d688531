//! A run that failed only because pgpilot's copy of a statement on the server went stale is run
//! again, unseen by the client.
//!
//! A client that sends Parse, Bind, Execute and Sync together never meets a stale plan on a
//! direct connection: its Parse is fresh. Here the Parse may be answered from a copy prepared on
//! the server earlier (the server-prepared strategy, `prepared.reuse_unnamed`, or a named statement
//! the registry already had), and DDL that bypassed pgpilot makes that copy's Bind fail with 0A000
//! "cached plan must not change result type". When nothing of the run reached the client yet and
//! no transaction block is open (the failed run rolled back its implicit transaction, so running
//! it again is what the client asked for), the copy is prepared again and the run's own bytes,
//! kept from the Bind to the Sync, are sent once more: the error and its ReadyForQuery are
//! swallowed, and the replies of the second run complete the entries that were waiting.
//!
//! Where it cannot apply (a transaction block, a client that was given the statement's old
//! description, a run split over several writes or followed by more pipelined work), the client
//! gets PostgreSQL's own 0A000, as on a direct connection after DDL between its Describe and Bind.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{Action, Attachment, Check, Event, Expect, Kind, Pending, Replies, Stale};
use crate::net::messages;
use crate::prepared::Statement;

/// Where the retry of the current run stands. Plain data, no owned values: arming it is a few
/// stores on the path of every Bind it applies to (the statement comes from the failed Bind's own
/// entry, the only Bind of a run that stays armed).
#[derive(Debug, Default)]
pub(super) struct Retry {
    state: State,
    /// Where the armed Bind starts in the server buffer.
    at: usize,
    /// The client's name for the statement (its unnamed one: empty, no allocation).
    client: Bytes,
    /// What to send again (Close, Parse, Describe of the statement, then the kept run).
    resend: BytesMut,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Off,
    /// A retryable Bind is in the server buffer; its Sync is not yet there.
    Armed,
    /// The run from the Bind to the Sync is kept in `Pending::retry_bytes`.
    Kept,
    /// The run failed on a stale copy: to be sent again at once (behind the client's Sync, so
    /// that the server runs it after the failed run and before anything the client sends next).
    Resend,
    /// Sent again: the failed run's ReadyForQuery is not the client's.
    Swallow,
}

impl Retry {
    pub(super) fn off(&mut self) {
        self.state = State::Off;
    }

    /// No run is armed or kept any more; one sent again still has its ReadyForQuery swallowed.
    pub(super) fn drop_kept(&mut self) {
        if matches!(self.state, State::Armed | State::Kept) {
            self.state = State::Off;
        }
    }

    /// A run was sent again and its failed run's ReadyForQuery is still to come.
    fn resending(&self) -> bool {
        matches!(self.state, State::Resend | State::Swallow)
    }
}

impl<A: Attachment> Pending<A> {
    /// The Bind just queued (written at `at` in the server buffer) executes a statement the
    /// client Parsed in this run without being given its description: it may be retried if
    /// nothing before it in this run shows the client anything a second run would repeat.
    pub fn arm_retry(&mut self, at: usize, client: Bytes) {
        if self.retry.resending() {
            return; // (the run sent again is the one retry: its failed ReadyForQuery stays swallowed)
        }
        let before = self.q.len().saturating_sub(1);
        let clean = !self.skipping
            && self.q.iter().take(before).all(|e| matches!(e.kind, Kind::Local | Kind::Parse | Kind::Close));
        self.retry.state = if clean { State::Armed } else { State::Off };
        self.retry.at = at;
        self.retry.client = client;
    }

    /// A Sync went into the server buffer `sout`: the armed run is complete and kept.
    #[inline]
    pub fn sync_sent(&mut self, sout: &[u8]) {
        if self.retry.state == State::Armed {
            self.retry_bytes.clear();
            self.retry_bytes.extend_from_slice(&sout[self.retry.at.min(sout.len())..]);
            self.retry.state = State::Kept;
        }
    }

    /// The server buffer was written out before the run's Sync: its bytes cannot be kept.
    #[inline]
    pub fn server_flushed(&mut self) {
        if self.retry.state == State::Armed {
            self.retry.state = State::Off;
        }
    }

    /// The run's ReadyForQuery came: nothing to retry any more.
    #[inline]
    pub(super) fn run_ended(&mut self) {
        if matches!(self.retry.state, State::Armed | State::Kept) {
            self.retry.state = State::Off;
        }
    }

    /// After an ErrorResponse: what to send again, if the run is retried.
    pub fn take_resend(&mut self) -> Option<BytesMut> {
        if self.retry.state != State::Resend {
            return None;
        }
        self.retry.state = State::Swallow;
        Some(std::mem::take(&mut self.retry.resend))
    }

    /// A ReadyForQuery arrived: whether it ends the failed run (not shown, no boundary).
    #[inline]
    pub fn swallows_ready(&mut self) -> bool {
        let swallow = self.retry.state == State::Swallow;
        if swallow {
            self.retry.state = State::Off;
        }
        swallow
    }

    /// The entry at the front (the run's Bind of `stmt`) failed on a stale copy: when the run is
    /// kept and nothing was sent after its Sync, prepare the statement again ahead of it and send
    /// it once more. Whether the error is swallowed.
    pub(super) fn retry_stale(&mut self, stmt: &Arc<Statement>, why: Stale, r: &mut Replies<A>) -> bool {
        let last_is_the_sync = self.q.back().is_some_and(|e| e.kind == Kind::Sync)
            && self.q.iter().filter(|e| e.kind == Kind::Sync).count() == 1;
        if self.retry.state != State::Kept || !last_is_the_sync {
            return false;
        }
        let client = std::mem::take(&mut self.retry.client);
        let mut out = BytesMut::with_capacity(self.retry_bytes.len() + stmt.query.len() + 64);
        messages::close_statement(&mut out, &stmt.server_name);
        messages::parse(&mut out, &stmt.server_name, &stmt.query, &stmt.types);
        messages::describe_statement(&mut out, &stmt.server_name);
        out.extend_from_slice(&self.retry_bytes);
        let describe = Action::describe(stmt.clone(), Check::Adopt, true, client.clone());
        self.q.push_front(Expect::new(Kind::DescribeStatement, describe, false));
        let parse = Action::Parse { stmt: stmt.clone(), client_name: None, suppress: true };
        self.q.push_front(Expect::new(Kind::Parse, parse, false));
        self.q.push_front(Expect::new(Kind::Close, Action::Suppress, false));
        r.statements.push(Event::Retried { stmt: stmt.clone(), client, why });
        self.retry.resend = out;
        self.retry.state = State::Resend;
        true
    }
}

/// An error to a Bind of pgpilot's own copy that shows the copy is stale or gone: 0A000 with
/// PostgreSQL's message for a plan whose result type changed, XX000 "cache lookup failed" (a
/// type or function it was planned with was dropped), or 26000 (the copy no longer exists: a
/// client's SQL `DEALLOCATE pgpilot_7` reaches the server, which knows no owner). The copy is
/// prepared again, so one client cannot break the statement for every later one.
pub(super) fn stale_copy(body: &[u8]) -> Option<Stale> {
    let (_, code, msg) = crate::protocol::backend::error_fields(body);
    match code.as_str() {
        "0A000" if msg.contains("cached plan must not change result type") => Some(Stale::Plan),
        "XX000" if msg.starts_with("cache lookup failed") => Some(Stale::Plan),
        "26000" => Some(Stale::Gone),
        _ => None,
    }
}
