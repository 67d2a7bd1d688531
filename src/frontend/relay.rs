//! Server -> client: forward by header, inspect only ReadyForQuery, ParameterStatus and the COPY
//! markers, and hand the server connection back at transaction boundaries.

use crate::config::PoolMode;
use crate::net::frame::{body, Piece, STREAM_THRESHOLD};
use crate::protocol::backend as be;

use super::keeping::End;
use super::session::{Flow, Session};
use crate::protocol::backend::tx_status;

impl Session {
    /// Relays what the server sent; the reply events it raises reach the stages before the
    /// client sees the bytes (`flush_client`), so nothing is left to deliver afterwards.
    pub(super) async fn on_server_bytes(&mut self) -> Flow {
        while self.server.is_some() {
            if self.relay_plain_messages() {
                if self.flush_client().await == Flow::Close {
                    return Flow::Close;
                }
                continue;
            }
            let Some(server) = self.server.as_mut() else { break };
            let piece = match self.sframer.next(&mut server.rbuf, read_whole) {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                Err(e) => {
                    self.server_lost(&format!("invalid message from the server: {e}")).await;
                    return Flow::Close;
                }
            };
            match piece {
                Piece::Whole { tag: be::READY_FOR_QUERY, .. } if self.pending.swallows_ready() => {}
                Piece::Whole { tag: be::READY_FOR_QUERY, frame } => match self.on_ready_for_query(&frame).await {
                    Some(Flow::Close) => return Flow::Close,
                    Some(_) => break, // the connection went back to its pool
                    None => {}
                },
                Piece::Whole { tag: be::ERROR_RESPONSE, frame } => {
                    if self.on_server_error(&frame).await == Flow::Close {
                        return Flow::Close;
                    }
                }
                Piece::Whole { tag, frame } => {
                    self.on_server_tag(tag, body(&frame));
                    if self.pending.on_server(tag, &frame, &mut self.cout, &mut self.stages.replies) {
                        if tag == be::PARAMETER_STATUS {
                            self.reported.relay(&frame, &mut self.cout);
                        } else {
                            self.cout.extend_from_slice(&frame);
                        }
                    }
                    self.pending.emit_local(&mut self.cout);
                }
                Piece::Part { tag, bytes, first } => self.on_server_part(tag, &bytes, first),
            }
            if self.cout.len() >= STREAM_THRESHOLD && self.flush_client().await == Flow::Close {
                return Flow::Close;
            }
        }
        // A Describe's answer may have released bytes held for it (`reply_hold.rs`).
        if self.pending.holding() && self.flush_server().await == Flow::Close {
            return Flow::Close;
        }
        self.flush_client().await
    }

    /// A part of a message too large to read whole, streamed through to the client.
    fn on_server_part(&mut self, tag: u8, bytes: &[u8], first: bool) {
        if first {
            self.on_server_tag(tag, &[]);
            self.pending.reply_unreadable();
            self.pending.on_server(tag, bytes, &mut self.cout, &mut self.stages.replies);
            self.note_skipped_boundaries(); // (an ErrorResponse too large to read whole)
        }
        self.cout.extend_from_slice(bytes);
    }

    /// A ReadyForQuery the client is owed: the stages settle what it ends, the client gets it,
    /// and at a transaction boundary the connection may go back to its pool. Some(flow) when
    /// the relay stops here (released, or the session closes).
    async fn on_ready_for_query(&mut self, frame: &[u8]) -> Option<Flow> {
        let status = be::ready_status(body(frame)).unwrap_or(tx_status::IDLE);
        let shown = self.pending.on_server(be::READY_FOR_QUERY, frame, &mut self.cout, &mut self.stages.replies);
        self.reading.lexing.unsure &= !self.pending.is_empty();
        if self.stages.hears_server() {
            self.stages.at_ready(status).await;
        }
        if shown {
            self.cout.extend_from_slice(frame);
        }
        self.pending.emit_local(&mut self.cout);
        self.deliver_replies();
        if !self.tx.on_ready(status) {
            return None;
        }
        // A boundary: nothing of the client's runs now (Flush pipelines are not at one).
        self.handles.cancel.meta.running.store(false, std::sync::atomic::Ordering::Release);
        self.timeouts.deadline = None;
        if status == tx_status::IDLE && self.stages.cache.ddl_pending {
            // The end of a transaction that ran DDL (pinned or not): a list loaded meanwhile may
            // have read the catalog before the commit, and so may a statement another session
            // prepared or described meanwhile (the epoch moved when the DDL was sent).
            self.stages.cache.list_outdated_at_end();
            self.handles.registry.ddl_seen();
        }
        if status == tx_status::IDLE && !self.reported.restoring.is_empty() && !self.restore_startup().await {
            return Some(Flow::Close);
        }
        if !self.may_release() {
            return None;
        }
        if self.flush_client().await == Flow::Close {
            return Some(Flow::Close);
        }
        self.release(End::Transaction).await;
        Some(Flow::Continue)
    }

    /// The messages nothing but the reply queue looks at (rows, descriptions, completions),
    /// relayed from the read buffer in place: no buffer handle per message (a split and its
    /// drop were ~90 instructions a message). Stops at anything else, or at an incomplete
    /// message, for the general path; true when the client's buffer is due for a flush.
    fn relay_plain_messages(&mut self) -> bool {
        let Some(server) = self.server.as_deref_mut() else { return false };
        let mut at = 0;
        let mut full = false;
        while let Some((tag, total)) = self.sframer.whole_at(&server.rbuf[at..]) {
            if tag == be::DATA_ROW {
                // A result's rows: one account and one copy for the run of them in the buffer
                // (local replies due ahead of them first, so the limit counts them).
                self.pending.emit_local(&mut self.cout);
                let limit = STREAM_THRESHOLD.saturating_sub(self.cout.len());
                let (n, len) = self.sframer.run_of(be::DATA_ROW, &server.rbuf[at..], limit);
                let run = &server.rbuf[at..at + len];
                if self.pending.on_rows(run, n, &mut self.cout, &mut self.stages.replies) {
                    self.cout.extend_from_slice(run);
                }
                at += len;
                if self.cout.len() >= STREAM_THRESHOLD {
                    full = true;
                    break;
                }
                continue;
            }
            let frame = &server.rbuf[at..at + total];
            // Of the plain messages only a CommandComplete (COMMIT...) may be a stage's business.
            if !plain(tag, body(frame)) || (tag == be::COMMAND_COMPLETE && self.stages.hears(tag, body(frame))) {
                break;
            }
            self.counts.server_parses += u64::from(tag == be::PARSE_COMPLETE);
            if self.pending.on_server(tag, frame, &mut self.cout, &mut self.stages.replies) {
                self.cout.extend_from_slice(frame);
            }
            self.pending.emit_local(&mut self.cout);
            at += total;
            if self.cout.len() >= STREAM_THRESHOLD {
                full = true;
                break;
            }
        }
        bytes::Buf::advance(&mut server.rbuf, at);
        full
    }

    /// An ErrorResponse: the client's and the stages' to see, unless its run failed only on a
    /// stale copy of a statement and goes to the server again at once (`reply_retry.rs`).
    async fn on_server_error(&mut self, frame: &[u8]) -> Flow {
        if self.pending.on_server(be::ERROR_RESPONSE, frame, &mut self.cout, &mut self.stages.replies) {
            self.cout.extend_from_slice(frame);
        }
        self.note_skipped_boundaries();
        self.pending.emit_local(&mut self.cout);
        let Some(run) = self.pending.take_resend() else {
            self.on_server_tag(be::ERROR_RESPONSE, body(frame));
            return Flow::Continue;
        };
        tracing::debug!("a statement's server copy was stale (DDL outside pgpilot): run sent again");
        self.sout.extend_from_slice(&run);
        self.flush_server().await
    }

    /// Queries and FunctionCalls the server skipped (an error before their Sync) are waited for
    /// no longer, and end no write group: told before the ReadyForQuery that settles the run,
    /// which may be in the same read.
    fn note_skipped_boundaries(&mut self) {
        let n = self.pending.take_skipped_boundaries();
        if n > 0 {
            self.tx.skipped(n);
            if self.stages.cache.on {
                self.stages.cache.boundaries_skipped(n);
            }
        }
    }

    fn on_server_tag(&mut self, tag: u8, body: &[u8]) {
        if self.stages.hears(tag, body) {
            // Before the transaction tracker learns of a COPY IN (the cache reads its Syncs).
            let (stages, mut cx) = self.split();
            stages.on_server_message(&mut cx, tag, body);
        }
        match tag {
            be::PARAMETER_STATUS => {
                if let Some(server) = self.server.as_mut() {
                    server.note_parameter(body);
                    self.reading.lexing.on_parameter(body, &self.reported.at_login);
                }
            }
            be::COPY_IN_RESPONSE => {
                self.tx.on_copy_in();
                self.pending.on_copy_in();
            }
            be::ERROR_RESPONSE => {
                self.tx.on_error();
                self.reported.restoring.clear(); // the RESET's transaction will not commit
            }
            be::COMMAND_COMPLETE if body.starts_with(b"ROLLBACK") => self.reported.restoring.clear(),
            be::PARSE_COMPLETE => self.counts.server_parses += 1,
            _ => {}
        }
    }

    /// At the ReadyForQuery after a RESET: a server connection that stays with this client
    /// (session mode, pinned) gets the startup values back now; one that goes back to the pool
    /// gets them replayed at the next checkout (the captured state falls back to them). False
    /// when the server failed.
    async fn restore_startup(&mut self) -> bool {
        let pairs = std::mem::take(&mut self.reported.restoring);
        let stays = self.mode == PoolMode::Session || !self.keeping.tracked();
        let Some(server) = self.server.as_mut() else { return true };
        if !stays || pairs.is_empty() {
            return true;
        }
        let sql = crate::frontend::session_state::SessionState::set_config_sql(&pairs);
        if let Err(e) = server.run_internal(&sql).await {
            self.server_lost(&format!("restoring startup settings failed: {e}")).await;
            return false;
        }
        true
    }

    fn may_release(&self) -> bool {
        self.mode == PoolMode::Transaction
            && self.keeping.tracked()
            && self.pending.is_empty()
            && self.tx.idle()
            && !self.sframer.mid_message()
            && self.server.as_ref().is_some_and(|s| s.rbuf.is_empty())
    }

    /// At the end of the session: the stages settle, and the connection goes back or is closed.
    pub async fn finish(&mut self) {
        self.stages.at_end();
        if self.stages.cache.ddl_pending {
            // DDL sent and the client gone before its end: it may commit after this, on a
            // connection that is closed below while busy (the server finishes the statement).
            self.stages.cache.ddl_ended().await;
            self.stages.cache.ddl_ended_later();
        }
        self.release(End::Session).await;
    }

    /// The one way the held connection goes back to its pool (`Keeping::how_back` decides how;
    /// a lost one is dropped in `server_lost`). At a transaction's end the client's changed settings are read from it first;
    /// at the session's end one in the middle of anything is closed (the server rolls back
    /// whatever was open).
    pub(super) async fn release(&mut self, end: End) {
        self.pool.traffic.take(&mut self.counts);
        let Some(mut conn) = self.server.take() else { return };
        self.detach();
        if self.pending.released() {
            return; // dropping the guard closes the connection
        }
        let how = self.keeping.how_back(self.mode, end);
        // A cancel forwarded for this client's last query must reach the backend first.
        if !cancels_settled(&conn).await {
            return; // dropping the guard closes the connection
        }
        if end == End::Session && !(self.tx.idle() && !self.sframer.mid_message() && conn.rbuf.is_empty()) {
            return;
        }
        if how.read_back {
            if let Err(e) = Box::pin(self.state.capture(&mut conn)).await {
                tracing::warn!(server = conn.id, "could not read session settings back: {e}");
                return; // dropping the guard closes the connection
            }
        }
        conn.give_back(how.back).await;
    }
}

/// Waits for the cancels forwarded to `conn`; false (the connection must be closed) when one was
/// given up on unconfirmed: it may still be signalled to whatever the backend runs next.
async fn cancels_settled(conn: &crate::pool::PooledConn) -> bool {
    let reusable = conn.cancel_gate.settled().await;
    if !reusable {
        tracing::warn!(server = conn.id, "closed: a cancel forwarded to it was not confirmed in time");
    }
    reusable
}

/// Server messages read whole however large: the ones the relay reads, and descriptions (a
/// statement's version is the hash of all of one, and an injected Describe's must not stream to
/// the client; PostgreSQL bounds them: 1,664 columns, 65,535 parameters).
fn read_whole(tag: u8) -> bool {
    matches!(tag, be::READY_FOR_QUERY | be::PARAMETER_STATUS | be::ROW_DESCRIPTION | be::PARAMETER_DESCRIPTION)
}

/// Messages whose whole handling is the reply queue's (`on_server_tag` does nothing with them):
/// the general path keeps ReadyForQuery, errors, parameter reports, COPY, notices and a ROLLBACK.
fn plain(tag: u8, body: &[u8]) -> bool {
    match tag {
        be::DATA_ROW | be::ROW_DESCRIPTION | be::PARAMETER_DESCRIPTION | be::PARSE_COMPLETE | be::BIND_COMPLETE => true,
        be::CLOSE_COMPLETE | be::NO_DATA | be::PORTAL_SUSPENDED | be::EMPTY_QUERY_RESPONSE => true,
        be::COMMAND_COMPLETE => !body.starts_with(b"ROLLBACK"),
        _ => false,
    }
}
