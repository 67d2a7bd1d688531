//! The replies the client expects, in order, for the messages sent on its server connection.
//!
//! Every forwarded message that the server answers gets an entry; so do replies pgpilot gives
//! itself (`Local`) and messages pgpilot injected whose replies the client must not see
//! (`Suppress`). Server replies complete entries in order, local replies are emitted once all
//! entries before them completed, and after an ErrorResponse the server skips to the next Sync,
//! and so does the queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::cache::fill::Fill;
use crate::insights::Completed;
use crate::prepared::Statement;
use crate::sql::Analysis;

/// The statements an Execute (one) or a simple Query (one per statement) runs, for insights.
#[derive(Debug)]
pub struct Track {
    pub statements: Vec<(Arc<Analysis>, u64)>,
    pub next: usize,
    /// DataRows relayed for the running statement (a PortalSuspended reply carries no count).
    pub rows_seen: u64,
    pub sent: Instant,
    pub received: Instant,
    pub pipelined: bool,
}

impl Track {
    fn complete(&mut self, rows: Option<u64>, error: bool) -> Option<Completed> {
        let (analysis, params) = self.statements.get(self.next)?.clone();
        self.next += 1;
        let rows = rows.unwrap_or(self.rows_seen);
        self.rows_seen = 0;
        let done = Instant::now();
        let c = Completed {
            analysis,
            params,
            sent: self.sent,
            done,
            client_time: done.saturating_duration_since(self.received),
            rows,
            error,
            pipelined: self.pipelined,
            cached: false,
        };
        // Statements of one simple Query run back to back: the next one starts now.
        self.sent = done;
        Some(c)
    }
}

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
    /// Describe of a registry statement prepared afresh: what the reply means (`Check`).
    Describe {
        stmt: Arc<Statement>,
        check: Check,
        suppress: bool,
        /// The client's name for the statement (empty: its unnamed one).
        client: Bytes,
        reply: BytesMut,
    },
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

#[derive(Debug)]
struct Expect {
    kind: Kind,
    action: Action,
    track: Option<Box<Track>>,
    /// The server's reply is not for the client (the statement's shape changed under it).
    drop: bool,
    /// Sent instead of the server's reply.
    error_instead: Option<Bytes>,
    /// A result cache miss being captured (Execute or simple Query).
    fill: Option<Box<Fill>>,
    /// A Describe of the portal a fill executes: its RowDescription/NoData is kept for the fill.
    capture_desc: bool,
}

/// What the session must do about a reply, beyond forwarding or dropping it.
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
    /// An execution showed the server's copy stale (0A000, a type that no longer exists).
    PlanStale { stmt: Arc<Statement> },
    /// A tracked statement finished (for insights).
    Completed(Completed),
    /// A result cache fill completed.
    Filled(Box<Fill>),
}

/// A finished Describe of a freshly prepared registry statement.
struct Described {
    stmt: Arc<Statement>,
    check: Check,
    suppress: bool,
    client: Bytes,
    reply: Bytes,
}

#[derive(Debug, Default)]
pub struct Pending {
    q: VecDeque<Expect>,
    /// The server reported an error and skips everything up to the client's next Sync.
    skipping: bool,
    /// Replies up to the next Sync are dropped (a statement's shape changed; the client got 0A000).
    poisoned: bool,
    /// Events from pushes (skipped messages), collected by `take_events`.
    events: Vec<Event>,
    /// The RowDescription/NoData captured for the next fill.
    described: Option<Bytes>,
}

impl Pending {
    pub fn push(&mut self, kind: Kind, action: Action) {
        self.push_tracked(kind, action, None);
    }

    pub fn push_tracked(&mut self, kind: Kind, action: Action, track: Option<Box<Track>>) {
        if kind == Kind::Sync {
            self.skipping = false;
            self.poisoned = false;
        } else if self.skipping {
            // The server skips this message: no reply will come, and what it set up is undone.
            undo_skipped(action, &mut self.events);
            return;
        }
        let drop = self.poisoned;
        self.q.push_back(Expect { kind, action, track, drop, error_instead: None, fill: None, capture_desc: false });
    }

    pub fn push_local(&mut self, reply: Bytes) {
        self.push(Kind::Local, Action::Local(reply));
    }

    /// The message just pushed executes a cache miss: capture its result.
    pub fn attach_fill(&mut self, fill: Box<Fill>) {
        if let Some(e) = self.q.back_mut() {
            e.fill = Some(fill);
        }
    }

    /// The message just pushed describes the portal of a cache miss.
    pub fn capture_describe(&mut self) {
        if let Some(e) = self.q.back_mut() {
            e.capture_desc = true;
        }
    }

    /// A reply too large to inspect is streaming through: no result in flight is cached (it may
    /// be a row of one or the RowDescription another will take).
    pub fn abandon_fills(&mut self) {
        for e in self.q.iter_mut() {
            e.fill = None;
        }
        self.described = None;
    }

    /// The server is skipping to the next Sync (an error): what is sent now does not run.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Whether a statement sent earlier is still running (the next one is then pipelined).
    pub fn running(&self) -> bool {
        self.q.iter().any(|e| e.track.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn clear(&mut self) {
        self.q.clear();
        self.skipping = false;
        self.poisoned = false;
    }

    /// Emits local replies that have reached the front.
    pub fn emit_local(&mut self, out: &mut BytesMut) {
        while self.q.front().is_some_and(|e| e.kind == Kind::Local) {
            let e = self.q.pop_front().expect("front exists");
            if e.drop {
                continue;
            }
            match e.action {
                Action::Local(reply) => out.extend_from_slice(&reply),
                Action::LocalParse { .. } => out.extend_from_slice(&crate::prepared::messages::parse_complete()),
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
    pub fn on_server(&mut self, tag: u8, frame: &[u8], out: &mut BytesMut, events: &mut Vec<Event>) -> bool {
        self.emit_local(out);
        events.append(&mut self.events);
        let Some(front) = self.q.front_mut() else { return true };
        let body = frame.get(5..).unwrap_or(&[]);
        match (tag, front.track.as_mut()) {
            (b'D', Some(track)) => track.rows_seen += 1,
            (b'C' | b's', Some(track)) => {
                let rows = if tag == b'C' { crate::protocol::backend::command_rows(body) } else { None };
                events.extend(track.complete(rows, false).map(Event::Completed));
            }
            _ => {}
        }
        if let (b't' | b'T' | b'n', Action::Describe { reply, .. }) = (tag, &mut front.action) {
            reply.extend_from_slice(frame);
        }
        if let Some(fill) = front.fill.as_mut() {
            if !fill.on_frame(tag, frame) {
                front.fill = None;
            }
        }
        if front.capture_desc && matches!(tag, b'T' | b'n') {
            self.described = Some(Bytes::copy_from_slice(frame));
        }
        let completes = match (tag, front.kind) {
            (b'N' | b'S' | b'A', _) => false,
            // Inside a simple Query (the rest of its statements are skipped), or an implicit
            // commit failing at Sync: ReadyForQuery follows.
            (b'E', Kind::Query) => {
                if let Some(track) = front.track.as_mut() {
                    events.extend(track.complete(Some(0), true).map(Event::Completed));
                    track.next = track.statements.len();
                }
                false
            }
            (b'E', Kind::Sync) => false,
            (b'E', _) => return self.on_error(body, events),
            (b'Z', Kind::Sync | Kind::Query) => true,
            (b'1', Kind::Parse) | (b'2', Kind::Bind) | (b'3', Kind::Close) => true,
            (b'T' | b'n', Kind::DescribeStatement | Kind::DescribePortal) => true,
            (b'C' | b'I' | b's', Kind::Execute) => true,
            _ => false,
        };
        if !completes {
            // Replies to pgpilot's own injected Describe (its ParameterDescription) stay here.
            let hidden = front.drop || matches!(front.action, Action::Describe { suppress: true, .. });
            return !hidden || matches!(tag, b'N' | b'S' | b'A');
        }
        // Local replies behind this one are emitted by the caller after it has passed this
        // message on (or at the next message), so they land after it.
        let mut done = self.q.pop_front().expect("front exists");
        if let Some(mut fill) = done.fill.take().filter(|f| f.done) {
            if fill.row_desc.is_none() {
                fill.row_desc = self.described.take();
            }
            if fill.row_desc.is_some() {
                events.push(Event::Filled(fill));
            }
        }
        if let Some(err) = done.error_instead {
            out.extend_from_slice(&err);
            return false;
        }
        let show = !done.drop;
        match done.action {
            Action::Suppress | Action::Parse { suppress: true, .. } => false,
            Action::Parse { stmt, .. } => {
                stmt.validated.store(true, std::sync::atomic::Ordering::Relaxed);
                show
            }
            Action::Describe { stmt, check, suppress, client, reply } => {
                let d = Described { stmt, check, suppress: suppress || !show, client, reply: reply.freeze() };
                self.describe_done(d, out, events)
            }
            _ => show,
        }
    }

    /// Records a fresh description. Under `Compare` a different one than the client holds means
    /// its statement changed shape: the client's Describe, or its next Bind, gets 0A000 and the
    /// rest up to Sync is dropped (what the server does when a cached plan changes result type).
    /// Returns false when the reply is not the client's to see.
    fn describe_done(&mut self, d: Described, out: &mut BytesMut, events: &mut Vec<Event>) -> bool {
        let version = d.stmt.described(d.reply);
        let same = match d.check {
            Check::Adopt => true,
            Check::Compare(held) => held == version,
        };
        events.push(Event::Described { stmt: d.stmt, version, adopted: same, client: d.client });
        if same {
            return !d.suppress;
        }
        let err = crate::net::messages::stale_plan_error().freeze();
        let mut replaced = !d.suppress;
        if replaced {
            out.extend_from_slice(&err);
        }
        let mut saw_sync = false;
        for e in self.q.iter_mut() {
            if e.kind == Kind::Sync {
                saw_sync = true;
                break;
            }
            if !replaced && e.kind == Kind::Bind {
                e.error_instead = Some(err.clone());
                replaced = true;
            } else {
                e.drop = true;
            }
        }
        self.poisoned = !saw_sync;
        false
    }

    fn on_error(&mut self, body: &[u8], events: &mut Vec<Event>) -> bool {
        let mut failed = self.q.pop_front().expect("front exists");
        if let Some(track) = failed.track.as_mut() {
            events.extend(track.complete(Some(0), true).map(Event::Completed));
        }
        let shown = !failed.drop;
        match failed.action {
            Action::Parse { stmt, client_name, .. } => events.push(Event::ParseFailed { stmt, client_name }),
            Action::ClientParse { client_name } => events.push(Event::ParseUndone { client_name }),
            Action::Bind { stmt } if is_stale_plan(body) => events.push(Event::PlanStale { stmt }),
            _ => {}
        }
        // The server now skips everything up to the next Sync; local replies in that stretch are
        // skipped too, exactly as the server would have skipped the messages they answer.
        while self.q.front().is_some_and(|e| e.kind != Kind::Sync) {
            let e = self.q.pop_front().expect("front exists");
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

/// An error that shows the server's prepared statement is stale: 0A000 with PostgreSQL's message
/// for a plan whose result type changed, or XX000 "cache lookup failed" (a type or function it
/// was planned with was dropped).
fn is_stale_plan(body: &[u8]) -> bool {
    let (_, code, msg) = crate::protocol::backend::error_fields(body);
    (code == "0A000" && msg.contains("cached plan must not change result type"))
        || (code == "XX000" && msg.starts_with("cache lookup failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(p: &mut Pending, tags: &[u8]) -> (String, BytesMut) {
        let mut out = BytesMut::new();
        let mut ev = Vec::new();
        let mut seen = String::new();
        for &t in tags {
            if p.on_server(t, &[t, 0, 0, 0, 4], &mut out, &mut ev) {
                seen.push(t as char);
            }
        }
        (seen, out)
    }

    #[test]
    fn local_replies_keep_their_place() {
        let mut p = Pending::default();
        p.push(Kind::Bind, Action::Forward);
        p.push_local(crate::prepared::messages::parse_complete());
        p.push(Kind::Execute, Action::Forward);
        p.push(Kind::Sync, Action::Forward);
        let mut out = BytesMut::new();
        p.emit_local(&mut out);
        assert!(out.is_empty(), "the Bind reply comes first");
        let (seen, mut out) = replies(&mut p, b"2");
        assert_eq!(seen, "2");
        assert!(out.is_empty(), "emitted only after the Bind reply is passed on");
        p.emit_local(&mut out);
        assert_eq!(&out[..], b"1\0\0\0\x04");
        assert_eq!(replies(&mut p, b"DCZ").0, "DCZ");
        assert!(p.is_empty());
    }

    #[test]
    fn suppressed_replies_are_dropped_and_errors_skip_to_sync() {
        let mut p = Pending::default();
        p.push(Kind::Parse, Action::Suppress);
        p.push(Kind::Bind, Action::Forward);
        p.push(Kind::Execute, Action::Forward);
        p.push_local(crate::prepared::messages::close_complete());
        p.push(Kind::Sync, Action::Forward);
        assert_eq!(replies(&mut p, b"12").0, "2");
        let (seen, out) = replies(&mut p, b"EZ");
        assert_eq!(seen, "EZ");
        assert!(out.is_empty(), "the local CloseComplete is skipped after the error");
        assert!(p.is_empty());
    }

    #[test]
    fn describe_statement_spans_two_replies_and_queries_end_at_ready() {
        let mut p = Pending::default();
        p.push(Kind::DescribeStatement, Action::Forward);
        p.push(Kind::Sync, Action::Forward);
        p.push(Kind::Query, Action::Forward);
        assert_eq!(replies(&mut p, b"tTZ").0, "tTZ");
        assert_eq!(replies(&mut p, b"TDCETZ").0, "TDCETZ");
        assert!(p.is_empty());
    }
}
