//! The session's send path: one client message on to the held server connection (as it came, or
//! as a stage rewrote it), with the reply-queue entry that waits for its reply; and the replies
//! the session gives itself for the statement table (`DEALLOCATE name`).

use bytes::{Bytes, BytesMut};

use super::reply_queue::{Action, Kind};
use super::session::Session;
use super::stages::prepared::replaces_unnamed;
use super::statements::Opened;
use crate::net::messages;
use crate::protocol::frontend::{self as fe, ClientMessage, Target};

impl Session {
    /// Sends one client message (`msg`, decoded from `frame`) on to the held server connection.
    pub(super) fn forward(&mut self, msg: &ClientMessage<'_>, frame: &[u8]) {
        let tag = frame[0];
        self.pending.begin_message();
        if replaces_unnamed(tag) {
            self.statements.forget(b"");
        }
        if self.stages.wants_rewrite(self.mode, msg) {
            // Statement names are rewritten only where server connections change hands.
            let (stages, mut cx) = self.split();
            if stages.rewrite(&mut cx, msg, frame) {
                return;
            }
        }
        if let Some(kind) = self.reply_kind(tag, Some(msg)) {
            let action = match *msg {
                ClientMessage::Parse { name, .. } if self.turn.opened == Opened::Fresh => {
                    Action::ClientParse { client_name: Bytes::copy_from_slice(name) }
                }
                _ => Action::Forward,
            };
            self.pending.push(kind, action);
        }
        if self.pending.queued() || !matches!(tag, fe::QUERY | fe::FUNCTION_CALL) {
            self.tx.on_client(tag); // (a Query the server skips gets no ReadyForQuery to wait for)
        }
        self.sout.extend_from_slice(frame);
        if tag == fe::SYNC {
            self.pending.sync_sent(&self.sout);
        }
    }

    /// Which reply completes a forwarded message (None: it gets no reply of its own). `msg`:
    /// the decoded message, when it was read whole (a streamed part has only its tag).
    pub(super) fn reply_kind(&self, tag: u8, msg: Option<&ClientMessage<'_>>) -> Option<Kind> {
        Some(match tag {
            fe::PARSE => Kind::Parse,
            fe::BIND => Kind::Bind,
            fe::DESCRIBE if matches!(msg, Some(ClientMessage::Describe(Target::Statement(_)))) => {
                Kind::DescribeStatement
            }
            fe::DESCRIBE => Kind::DescribePortal,
            fe::EXECUTE => Kind::Execute,
            fe::CLOSE => Kind::Close,
            fe::SYNC if !self.tx.in_copy() => Kind::Sync,
            fe::QUERY | fe::FUNCTION_CALL => Kind::Query,
            _ => return None,
        })
    }

    /// `DEALLOCATE name` (simple Query) for one of the client's protocol-level statements:
    /// answered here, in turn behind the server's replies when a server is held. So is one for a
    /// name of pgpilot's own copies outside a transaction block, with the error a direct
    /// connection gives for a name the client never prepared: on the server it would drop a copy
    /// other clients run (inside a block the server answers, so that an error aborts the block
    /// there too; a dropped copy is prepared again at its next use).
    pub(super) fn deallocate_locally(&mut self, name: &str) -> bool {
        let mut reply = BytesMut::new();
        if self.statements.close(name.as_bytes()).is_some() {
            messages::command_complete(&mut reply, "DEALLOCATE");
        } else if name.starts_with(crate::prepared::SERVER_NAME_PREFIX) && self.owns_no_server_names() {
            let msg = format!("prepared statement \"{name}\" does not exist");
            messages::error(&mut reply, "ERROR", "26000", &msg);
        } else {
            return false;
        }
        let status = if self.server.is_some() { self.tx.status } else { self.status_without_server() };
        messages::ready_for_query(&mut reply, status);
        if self.server.is_some() {
            self.pending.push_local(reply.freeze());
        } else {
            self.cout.extend_from_slice(&reply);
        }
        true
    }

    /// The client cannot have made a server-side name itself (no SQL PREPARE pinned it, nothing
    /// it ran is unknown) and no transaction block is open or on its way (a deferred BEGIN, a
    /// BEGIN still in flight): there the server must answer, so that an error aborts the block.
    fn owns_no_server_names(&self) -> bool {
        let in_block = self.deferred.begin.is_some() || (self.server.is_some() && !self.tx.idle());
        self.keeping.tracked() && !in_block
    }
}
