//! The replies the client expects, in order, for the messages sent on its server connection.
//!
//! Every forwarded message that the server answers gets an entry; so do replies pgpilot gives
//! itself (`Local`) and messages pgpilot injected whose replies the client must not see
//! (`Suppress`). Server replies complete entries in order, local replies are emitted once all
//! entries before them completed, and after an ErrorResponse the server skips to the next Sync,
//! and so does the queue.
//!
//! Each stage registers what it expects back on an entry (the prepared-statement stage its
//! `Action`, which is the queue's own business: what the client sees; every other stage through
//! its slot of the session's attachment, `stages::Attached`, known here only as an `Attachment`)
//! and gets back its own events in `Replies`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

pub use super::reply_attachment::Attachment;
pub use super::reply_events::{Event, Replies, Stale};
use crate::prepared::Statement;
use crate::protocol::backend as be;

pub use super::reply_actions::{Action, Check, DescribeWait, Kind};

#[derive(Debug)]
struct Expect<A> {
    kind: Kind,
    action: Action,
    /// The server's reply is not for the client (pgpilot's own Execute continues a fill, or its
    /// Bind fails in a changed statement's place).
    drop: bool,
    /// What the stages registered on the entry.
    att: A,
}

impl<A: Attachment> Expect<A> {
    /// A reply to this entry that does not complete it stays here: replies to pgpilot's own
    /// injected Describe (its ParameterDescription), to its own Query (a deferred BEGIN; errors
    /// excepted), to its own Execute continuing a fill (`hide_replies`), or to its own Bind
    /// failing in a changed statement's place (`reply_hold.rs`).
    fn hides(&self, tag: u8) -> bool {
        self.drop
            || matches!(&self.action, Action::Describe(d) if d.suppress)
            || (matches!(self.action, Action::Suppress) && tag != be::ERROR_RESPONSE)
    }

    fn new(kind: Kind, action: Action, drop: bool) -> Self {
        Self { kind, action, drop, att: A::default() }
    }

    /// What the stages see of one reply message: the attachment its frame, the prepared stage
    /// its Describe's reply.
    #[inline]
    fn feed(&mut self, shared: &mut A::Shared, tag: u8, frame: &[u8], body: &[u8], ev: &mut A::Events) {
        self.att.on_frame(shared, tag, frame, body, ev);
        if let (be::PARAMETER_DESCRIPTION | be::ROW_DESCRIPTION | be::NO_DATA, Action::Describe(d)) =
            (tag, &mut self.action)
        {
            d.reply.extend_from_slice(frame);
        }
    }
}

/// A finished Describe of a freshly prepared registry statement.
struct Described {
    stmt: Arc<Statement>,
    check: Check,
    suppress: bool,
    client: Bytes,
    reply: Bytes,
    holds: bool,
    sent_at: u64,
}

#[derive(Debug, Default)]
pub struct Pending<A: Attachment> {
    q: VecDeque<Expect<A>>,
    /// The server reported an error and skips everything up to the client's next Sync.
    skipping: bool,
    /// Events from pushes (skipped messages), collected by `take_events`.
    events: Vec<Event>,
    /// The last push made an entry (a message the server skips gets none): what a stage
    /// attaches goes to that entry or nowhere.
    last_queued: bool,
    /// The Queries and FunctionCalls (the client's, or pgpilot's deferred BEGIN) an error made the server skip since
    /// `take_skipped_boundaries` last asked: each ended a group of statements that gets no
    /// ReadyForQuery of its own (the Sync's settles it with the rest).
    skipped_boundaries: u32,
    /// What the attachments keep across entries.
    shared: A::Shared,
    /// A local reply ended a run (a ReadyForQuery: a cache hit, a Sync answered here) since
    /// `take_ready_emitted` last asked: the client may be waiting for it now.
    ready_emitted: bool,
    /// The run that may be sent again if its copy of a statement proves stale (`reply_retry.rs`),
    /// and its bytes (a buffer kept for reuse).
    retry: Retry,
    retry_bytes: BytesMut,
    /// Bytes in the server buffer waiting for a Describe's answer (`reply_hold.rs`).
    holds: Holds,
}

impl<A: Attachment> Pending<A> {
    #[inline]
    pub fn push(&mut self, kind: Kind, action: Action) {
        if kind == Kind::Sync {
            self.skipping = false;
        } else if self.skipping {
            // The server skips this message: no reply will come, and what it set up is undone.
            undo_skipped(action, &mut self.events);
            self.last_queued = false;
            return;
        }
        self.q.push_back(Expect::new(kind, action, false));
        self.last_queued = true;
    }

    /// A client message is being forwarded: what stages attach from now on is for its entries.
    pub fn begin_message(&mut self) {
        self.last_queued = false;
    }

    /// The last push made an entry: the server will answer that message (false: it is skipping
    /// to the next Sync after an error, as PostgreSQL does even with a Query).
    pub fn queued(&self) -> bool {
        self.last_queued
    }

    /// See `skipped_boundaries`.
    pub fn take_skipped_boundaries(&mut self) -> u32 {
        std::mem::take(&mut self.skipped_boundaries)
    }

    /// The entry just pushed, if the push made one.
    fn last(&mut self) -> Option<&mut Expect<A>> {
        if self.last_queued {
            self.q.back_mut()
        } else {
            None
        }
    }

    /// A stage registers what it expects back from the message just pushed (nothing when the
    /// push made no entry: the server will not answer it).
    #[inline]
    pub fn attach(&mut self, f: impl FnOnce(&mut A)) {
        if let Some(e) = self.last() {
            f(&mut e.att);
        }
    }

    pub fn push_local(&mut self, reply: Bytes) {
        self.push(Kind::Local, Action::Local(reply));
    }

    /// The replies to the message just pushed are not the client's (pgpilot's own Execute
    /// continuing a fill: only its attachment reads them).
    pub fn hide_replies(&mut self) {
        if let Some(e) = self.last() {
            e.drop = true;
        }
    }

    /// A reply too large to inspect is streaming through: no attachment may rely on what it
    /// saw (a fill would miss a row, or take the RowDescription meant for another).
    pub fn reply_unreadable(&mut self) {
        for e in self.q.iter_mut() {
            e.att.unreadable();
        }
        A::unreadable_shared(&mut self.shared);
    }

    /// The server is skipping to the next Sync (an error): what is sent now does not run.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// The server connection goes back to its pool: the next one skips nothing. True when this
    /// one still skips to a Sync (a COPY that failed with no Sync after it, the client gone):
    /// it must be closed, not reused (the next client's Query would get no answer).
    pub fn released(&mut self) -> bool {
        self.drop_holds();
        std::mem::take(&mut self.skipping)
    }

    /// Events of messages the server will skip (they were never queued).
    pub fn take_events(&mut self, into: &mut Replies<A>) {
        into.statements.append(&mut self.events);
    }

    /// Whether some entry's attachment is as `f` asks (insights: a statement still running).
    pub fn any(&self, f: impl Fn(&A) -> bool) -> bool {
        self.q.iter().any(|e| f(&e.att))
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Nothing queued runs a statement or ends a transaction (Parse, a statement's Describe and
    /// local replies only).
    pub fn runs_nothing(&self) -> bool {
        self.q.iter().all(|e| matches!(e.kind, Kind::Parse | Kind::DescribeStatement | Kind::Local))
    }

    pub fn clear(&mut self) {
        self.q.clear();
        self.skipped_boundaries = 0;
        self.skipping = false;
        self.retry.off();
        self.drop_holds();
    }

    /// Emits local replies that have reached the front. Inlined to the test of the front entry:
    /// it runs at every server message and every boundary, and a local reply is rare.
    #[inline]
    pub fn emit_local(&mut self, out: &mut BytesMut) {
        if self.q.front().is_some_and(|e| e.kind == Kind::Local) {
            self.emit_locals(out);
        }
    }

    /// Whether the server still owes a ReadyForQuery the client will see (its Sync or simple
    /// Query, forwarded): replies pgpilot gives itself ahead of it can wait to go out with the
    /// server's, as PostgreSQL sends a run's replies together at Sync (one write, one wake-up of
    /// the client, not two).
    pub fn client_ready_owed(&mut self) -> bool {
        if std::mem::take(&mut self.ready_emitted) {
            // A run answered here is complete: PostgreSQL would have flushed at its ReadyForQuery.
            return false;
        }
        // (From the back: in a pipeline the latest Sync is the one most often there.)
        self.q
            .iter()
            .rev()
            .any(|e| matches!(e.kind, Kind::Sync | Kind::Query) && matches!(e.action, Action::Forward) && !e.drop)
    }

    fn emit_locals(&mut self, out: &mut BytesMut) {
        while self.q.front().is_some_and(|e| e.kind == Kind::Local) {
            let e = self.q.pop_front().expect("front exists");
            if e.drop {
                continue;
            }
            match e.action {
                Action::Local(reply) => {
                    self.ready_emitted |= ends_run(&reply);
                    out.extend_from_slice(&reply);
                }
                Action::LocalParse { .. } => out.extend_from_slice(&crate::net::messages::parse_complete()),
                _ => {}
            }
        }
    }

    /// The server started COPY IN for the Execute at the front: Syncs queued after it are ignored
    /// by the server until the copy ends.
    pub fn on_copy_in(&mut self) {
        let mut i = 1;
        while i < self.q.len() {
            if self.q[i].kind == Kind::Sync {
                self.q.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Accounts for one whole server message (or the first part of a large one); returns whether
    /// the client should see it.
    pub fn on_server(&mut self, tag: u8, frame: &[u8], out: &mut BytesMut, r: &mut Replies<A>) -> bool {
        self.before_reply(out, r);
        // (A ReadyForQuery ends any skip: one for a Sync the queue dropped, sent into a COPY
        // that then failed, would otherwise leave the flag set and later Queries uncounted.)
        self.skipping &= tag != be::READY_FOR_QUERY;
        let Some(front) = self.q.front_mut() else { return true };
        let body = frame.get(5..).unwrap_or(&[]);
        if tag == be::ERROR_RESPONSE && !matches!(front.kind, Kind::Query | Kind::Sync) {
            // The entry fails (unless its run is sent again), and the rest up to Sync is skipped.
            return self.on_error(frame, body, r);
        }
        front.feed(&mut self.shared, tag, frame, body, &mut r.attached);
        let completes = match (tag, front.kind) {
            // Asynchronous messages; an error inside a simple Query (the rest of its statements
            // are skipped) or an implicit commit failing at Sync: ReadyForQuery follows.
            (be::NOTICE_RESPONSE | be::PARAMETER_STATUS | be::NOTIFICATION_RESPONSE | be::ERROR_RESPONSE, _) => false,
            (be::READY_FOR_QUERY, Kind::Sync | Kind::Query) => true,
            (be::PARSE_COMPLETE, Kind::Parse) | (be::BIND_COMPLETE, Kind::Bind) | (be::CLOSE_COMPLETE, Kind::Close) => {
                true
            }
            (be::ROW_DESCRIPTION | be::NO_DATA, Kind::DescribeStatement | Kind::DescribePortal) => true,
            (be::COMMAND_COMPLETE | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED, Kind::Execute) => true,
            _ => false,
        };
        if !completes {
            return !front.hides(tag)
                || matches!(tag, be::NOTICE_RESPONSE | be::PARAMETER_STATUS | be::NOTIFICATION_RESPONSE);
        }
        self.complete_front(tag, out, r)
    }

    /// The oldest entry got its last reply (`tag`): its attachment completes (handing on to the
    /// entry behind it what continues there), its action is done. Returns whether the client
    /// sees the reply.
    fn complete_front(&mut self, tag: u8, out: &mut BytesMut, r: &mut Replies<A>) -> bool {
        // Local replies behind this one are emitted by the caller after it has passed this
        // message on (or at the next message), so they land after it.
        let Some(done) = self.q.pop_front() else { return true };
        if done.kind == Kind::Sync {
            self.run_ended();
        }
        let next = self.q.front_mut().map(|e| &mut e.att);
        done.att.complete(&mut self.shared, next, &mut r.attached);
        // A ReadyForQuery is the client's unless it answers pgpilot's own Query.
        let show = !done.drop || tag == be::READY_FOR_QUERY;
        match done.action {
            Action::Suppress | Action::Parse { suppress: true, .. } => false,
            Action::Parse { stmt, .. } => {
                stmt.validated.store(true, std::sync::atomic::Ordering::Relaxed);
                show
            }
            Action::Describe(wait) => {
                let DescribeWait { stmt, check, suppress, client, reply, holds, sent_at } = *wait;
                let suppress = suppress || !show;
                let d = Described { stmt, check, suppress, client, reply: reply.freeze(), holds, sent_at };
                self.describe_done(d, out, &mut r.statements)
            }
            _ => show,
        }
    }

    /// A run of `n` whole DataRows back to back (`run`): what `on_server` does for each of them,
    /// once (a row never completes an entry, so one entry takes them all). Returns whether the
    /// client sees them.
    pub fn on_rows(&mut self, run: &[u8], n: u64, out: &mut BytesMut, r: &mut Replies<A>) -> bool {
        self.before_reply(out, r);
        let Some(front) = self.q.front_mut() else { return true };
        front.att.on_rows(run, n);
        !front.hides(be::DATA_ROW)
    }

    /// What precedes any server reply: local replies due ahead of it go out first, and the
    /// events of skipped messages reach their stages before the reply's own.
    #[inline]
    fn before_reply(&mut self, out: &mut BytesMut, r: &mut Replies<A>) {
        self.emit_local(out);
        if !self.events.is_empty() {
            r.statements.append(&mut self.events);
        }
    }

    /// Records a fresh description. Under `Compare` a different one than the client holds means
    /// its statement changed shape: the client's Describe, or its Bind behind pgpilot's own
    /// Describe, gets 0A000, and the server skips the rest up to Sync as it does when a cached
    /// plan changes result type (nothing after the Describe reached it: `reply_hold.rs`).
    /// Returns false when the reply is not the client's to see.
    fn describe_done(&mut self, d: Described, out: &mut BytesMut, events: &mut Vec<Event>) -> bool {
        let version = d.stmt.described(d.reply, d.sent_at);
        let same = match d.check {
            Check::Adopt => true,
            Check::Compare(held) => held == version,
        };
        events.push(Event::Described { stmt: d.stmt, version, adopted: same, client: d.client });
        // (Every compared Describe holds what follows it: `hold_for_answer`.)
        debug_assert!(same || d.holds, "a compared Describe that held nothing back");
        if same || !d.holds {
            return !d.suppress;
        }
        out.extend_from_slice(&crate::net::messages::stale_plan_error());
        self.fail_held_run();
        false
    }

    fn on_error(&mut self, frame: &[u8], body: &[u8], r: &mut Replies<A>) -> bool {
        // (Read once: only an error to a Bind of pgpilot's copy can show the copy stale.)
        let stale = match self.q.front().map(|e| &e.action) {
            Some(Action::Bind { stmt }) => stale_copy(body).map(|why| (stmt.clone(), why)),
            _ => None,
        };
        if let Some((stmt, why)) = &stale {
            if self.retry_stale(stmt, *why, r) {
                return false;
            }
        }
        let mut failed = self.q.pop_front().expect("front exists");
        failed.att.on_frame(&mut self.shared, be::ERROR_RESPONSE, frame, body, &mut r.attached);
        let events = &mut r.statements;
        if let Some((stmt, why)) = stale {
            events.push(Event::PlanStale { stmt, why });
        }
        let shown = !failed.drop;
        match failed.action {
            Action::Parse { stmt, client_name, .. } => events.push(Event::ParseFailed { stmt, client_name }),
            Action::ClientParse { client_name } => events.push(Event::ParseUndone { client_name }),
            _ => {}
        }
        // The server now skips everything up to the next Sync; local replies in that stretch are
        // skipped too, exactly as the server would have skipped the messages they answer.
        while self.q.front().is_some_and(|e| e.kind != Kind::Sync) {
            let e = self.q.pop_front().expect("front exists");
            // (pgpilot's own Query, a deferred BEGIN, counts too: it is waited for and ends a
            // group as the client's do; always first on its connection, it is never skipped.)
            self.skipped_boundaries += u32::from(e.kind == Kind::Query);
            undo_skipped(e.action, events);
        }
        self.skipping = self.q.is_empty();
        shown
    }
}

/// A Parse the server will never run: undo its bookkeeping.
fn undo_skipped(action: Action, events: &mut Vec<Event>) {
    match action {
        Action::Parse { stmt, client_name, .. } => {
            events.push(Event::ParseSkipped { stmt, client_name, on_server: true })
        }
        Action::LocalParse { stmt, client_name } => {
            events.push(Event::ParseSkipped { stmt, client_name: Some(client_name), on_server: false })
        }
        Action::ClientParse { client_name } => events.push(Event::ParseUndone { client_name }),
        _ => {}
    }
}

#[path = "reply_retry.rs"]
mod retry;
use retry::{stale_copy, Retry};

#[path = "reply_hold.rs"]
mod held;
use held::Holds;

/// The size of one queue entry (its tests keep it small).
#[cfg(test)]
pub(crate) fn entry_size<A: Attachment>() -> usize {
    std::mem::size_of::<Expect<A>>()
}

#[cfg(test)]
#[path = "reply_queue_tests.rs"]
mod tests;

/// Whether a reply ends with a ReadyForQuery (`Z`, length 5, status).
fn ends_run(reply: &[u8]) -> bool {
    reply.len() >= 6 && reply[reply.len() - 6..reply.len() - 1] == [be::READY_FOR_QUERY, 0, 0, 0, 5]
}
