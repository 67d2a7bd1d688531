//! The replies the client expects, in order, for the messages sent on its server connection.
//!
//! Every forwarded message that the server answers gets an entry; so do replies pgpilot gives
//! itself (`Local`) and messages pgpilot injected whose replies the client must not see
//! (`Suppress`). Server replies complete entries in order, local replies are emitted once all
//! entries before them completed, and after an ErrorResponse the server skips to the next Sync,
//! and so does the queue.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Statement;

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
    /// Forwarded or injected Parse of a registry statement; `client_name` is set when the client's
    /// own Parse created the mapping (undone if the server rejects it).
    Parse {
        stmt: Arc<Statement>,
        client_name: Option<Bytes>,
        suppress: bool,
    },
    /// Bind of a registry statement (to detect a stale cached plan).
    Bind {
        stmt: Arc<Statement>,
    },
}

#[derive(Debug)]
struct Expect {
    kind: Kind,
    action: Action,
}

/// What the session must do about a reply, beyond forwarding or dropping it.
#[derive(Debug)]
pub enum Event {
    /// The server rejected a Parse: forget the statement everywhere.
    ParseFailed { stmt: Arc<Statement>, client_name: Option<Bytes> },
    /// The statement's result type changed under it ("cached plan must not change result type").
    PlanInvalidated { stmt: Arc<Statement> },
}

#[derive(Debug, Default)]
pub struct Pending {
    q: VecDeque<Expect>,
}

impl Pending {
    pub fn push(&mut self, kind: Kind, action: Action) {
        self.q.push_back(Expect { kind, action });
    }

    pub fn push_local(&mut self, reply: Bytes) {
        self.push(Kind::Local, Action::Local(reply));
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn clear(&mut self) {
        self.q.clear();
    }

    /// Emits local replies that have reached the front.
    pub fn emit_local(&mut self, out: &mut BytesMut) {
        while let Some(Expect { kind: Kind::Local, .. }) = self.q.front() {
            if let Some(Expect { action: Action::Local(reply), .. }) = self.q.pop_front() {
                out.extend_from_slice(&reply);
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

    /// Accounts for one server message; returns whether the client should see it.
    pub fn on_server(&mut self, tag: u8, body: &[u8], out: &mut BytesMut, events: &mut Vec<Event>) -> bool {
        self.emit_local(out);
        let Some(front) = self.q.front() else { return true };
        let completes = match (tag, front.kind) {
            (b'N' | b'S' | b'A', _) => false,
            // Inside a simple Query, or an implicit commit failing at Sync: ReadyForQuery follows.
            (b'E', Kind::Query | Kind::Sync) => false,
            (b'E', _) => return self.on_error(body, events),
            (b'Z', Kind::Sync | Kind::Query) => true,
            (b'1', Kind::Parse) | (b'2', Kind::Bind) | (b'3', Kind::Close) => true,
            (b'T' | b'n', Kind::DescribeStatement | Kind::DescribePortal) => true,
            (b'C' | b'I' | b's', Kind::Execute) => true,
            _ => false,
        };
        if !completes {
            return true;
        }
        // Local replies behind this one are emitted by the caller after it has passed this
        // message on (or at the next message), so they land after it.
        let done = self.q.pop_front().expect("front exists");
        !matches!(done.action, Action::Suppress | Action::Parse { suppress: true, .. })
    }

    fn on_error(&mut self, body: &[u8], events: &mut Vec<Event>) -> bool {
        let failed = self.q.pop_front().expect("front exists");
        match failed.action {
            Action::Parse { stmt, client_name, .. } => events.push(Event::ParseFailed { stmt, client_name }),
            Action::Bind { stmt } if is_stale_plan(body) => events.push(Event::PlanInvalidated { stmt }),
            _ => {}
        }
        // The server now skips everything up to the next Sync; local replies in that stretch are
        // skipped too, exactly as the server would have skipped the messages they answer.
        while let Some(e) = self.q.front() {
            if e.kind == Kind::Sync {
                break;
            }
            self.q.pop_front();
        }
        true
    }
}

/// SQLSTATE 0A000 with PostgreSQL's message for a prepared statement whose result type changed.
fn is_stale_plan(body: &[u8]) -> bool {
    let (_, code, msg) = crate::net::messages::parse_error_fields(body);
    code == "0A000" && msg.contains("cached plan must not change result type")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(p: &mut Pending, tags: &[u8]) -> (String, BytesMut) {
        let mut out = BytesMut::new();
        let mut ev = Vec::new();
        let mut seen = String::new();
        for &t in tags {
            if p.on_server(t, b"", &mut out, &mut ev) {
                seen.push(t as char);
            }
        }
        (seen, out)
    }

    #[test]
    fn local_replies_keep_their_place() {
        let mut p = Pending::default();
        p.push(Kind::Bind, Action::Forward);
        p.push_local(super::super::messages::parse_complete());
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
        p.push_local(super::super::messages::close_complete());
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
