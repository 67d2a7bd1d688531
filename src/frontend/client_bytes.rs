//! The client's bytes into messages: each whole one handled where it lies in the read buffer,
//! the framer's pieces (streamed parts, errors) for the rest; then what they produced goes out.

use bytes::BytesMut;

use super::session::{Flow, Session};
use crate::config::PoolMode;
use crate::net::frame::{FrameError, Piece};
use crate::net::messages::{self, sqlstate};
use crate::protocol::frontend as fe;

impl Session {
    pub(super) async fn on_client_bytes(&mut self) -> Flow {
        self.received = crate::clock::Stamp::now();
        // Out of `self` while its messages are handled: they are read in place from it.
        let mut buf = std::mem::take(&mut self.cbuf);
        let flow = self.on_client_messages(&mut buf).await;
        self.cbuf = buf;
        if flow == Flow::Close {
            return Flow::Close;
        }
        self.shrink_client_buffer();
        if self.flush_server().await == Flow::Close {
            return Flow::Close;
        }
        self.pending.emit_local(&mut self.cout);
        self.pending.take_events(&mut self.stages.replies);
        self.deliver_replies();
        if self.pending.client_ready_owed() {
            return Flow::Continue;
        }
        self.flush_client().await
    }

    /// Every whole message in `buf` is handled where it lies (no buffer handle per message: a
    /// split and its drop were ~90 instructions a message); the framer hands out the rest
    /// (streamed parts, errors).
    async fn on_client_messages(&mut self, buf: &mut BytesMut) -> Flow {
        // Bind is read whole in transaction mode so its statement name can be rewritten.
        let rewrite = self.mode == PoolMode::Transaction;
        let inspect = |t| t == fe::QUERY || t == fe::PARSE || (rewrite && t == fe::BIND);
        loop {
            let mut at = 0;
            while let Some((tag, total)) = self.cframer.whole_in_place(&buf[at..], inspect) {
                let flow = self.on_client_message(tag, &buf[at..at + total]).await;
                at += total;
                if flow == Flow::Close {
                    bytes::Buf::advance(buf, at); // (nothing handled stays behind)
                    return Flow::Close;
                }
            }
            if at == buf.len() {
                buf.clear(); // (the common end: every message was whole)
                return Flow::Continue;
            }
            bytes::Buf::advance(buf, at);
            let piece = match self.cframer.next(buf, inspect) {
                Ok(Some(piece)) => piece,
                Ok(None) => return Flow::Continue,
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge { .. } => sqlstate::PROGRAM_LIMIT,
                        FrameError::OverBudget { .. } => sqlstate::OUT_OF_MEMORY,
                        FrameError::BadLength(_) => sqlstate::PROTOCOL_VIOLATION,
                    };
                    if matches!(e, FrameError::OverBudget { .. }) {
                        tracing::warn!(user = %self.info.user, database = %self.info.database, "client closed: {e}");
                    }
                    messages::error(&mut self.cout, "FATAL", code, &format!("invalid message from client: {e}"));
                    let _ = self.flush_client().await;
                    return Flow::Close;
                }
            };
            let flow = match piece {
                Piece::Whole { tag, frame } => self.on_client_message(tag, &frame).await,
                Piece::Part { tag, bytes, first } => self.on_client_part(tag, &bytes, first).await,
            };
            if flow == Flow::Close {
                return Flow::Close;
            }
        }
    }

    /// After a large message the read buffer keeps its size (the budget it was counted against
    /// is given back as the message is delivered): give the memory back too.
    fn shrink_client_buffer(&mut self) {
        const KEEP: usize = 64 * 1024;
        if self.cbuf.capacity() > KEEP && self.cbuf.len() <= KEEP / 8 && !self.cframer.assembling() {
            let mut fresh = BytesMut::with_capacity(8 * 1024);
            fresh.extend_from_slice(&self.cbuf);
            self.cbuf = fresh;
        }
    }
}
