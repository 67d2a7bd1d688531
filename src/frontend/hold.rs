//! Which server connection the session holds: one checked out (carrying the client's settings)
//! when a message needs it, given up when it is lost; what a client is told when none can be had.

use bytes::BytesMut;

use super::session::Session;
use crate::backend::cancel::ServerKey;
use crate::backend::ServerError;
use crate::net::frame::body;
use crate::net::messages::{self, sqlstate};
use crate::pool::{CheckoutError, PooledConn};
use crate::protocol::frontend::{self as fe, ClientMessage};

impl Session {
    /// A server connection for `msg` when none is held; false when the message was answered or
    /// dropped here instead (a lone Sync, Flush or stray COPY data; no connection to be had).
    pub(super) async fn hold_server(&mut self, tag: u8, msg: &ClientMessage<'_>) -> bool {
        match tag {
            // Nothing is in progress: answer a lone Sync here, drop Flush and stray COPY data
            // (the server ignores CopyData/CopyDone/CopyFail outside COPY, after a failed COPY).
            fe::SYNC => {
                let status = self.status_without_server();
                messages::ready_for_query(&mut self.cout, status);
                return false;
            }
            fe::FLUSH | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL => return false,
            _ => {}
        }
        let Err(frame) = self.checkout().await else { return true };
        self.stages.cache.forget_fills();
        self.unsent(msg);
        self.cout.extend_from_slice(&frame);
        // Inside a deferred transaction the failure fails the transaction, as on the server.
        self.deferred.failed = self.deferred.begin.is_some();
        if tag == fe::QUERY {
            let status = self.status_without_server();
            messages::ready_for_query(&mut self.cout, status);
        } else {
            self.skip.until_sync = true;
        }
        false
    }

    /// Checks out a server connection carrying this client's settings. On failure returns the
    /// ErrorResponse (severity ERROR) to give the client.
    pub(super) async fn checkout(&mut self) -> Result<(), BytesMut> {
        // A backend can die between the pool's check and its use here (terminated a moment ago,
        // or during its login): such a connection is closed and another taken, a few times,
        // before the client is told.
        let mut attempts = 3;
        if self.keeping.isolate_attached_code && self.stages.cache.first_checkout() {
            // Boxed: a wait once per session, whose state would otherwise sit in every
            // checkout's future.
            Box::pin(self.stages.cache.first_list()).await;
        }
        let conn = loop {
            attempts -= 1;
            let mut conn = match self.checkout_once().await {
                Ok(conn) => conn,
                Err(e @ CheckoutError::Timeout { .. }) => {
                    let msg = format!("pgpilot: {e}");
                    return Err(messages::error_frame("ERROR", sqlstate::TOO_MANY_CONNECTIONS, &msg));
                }
                Err(CheckoutError::Connect(e)) if self.gone(&e) && attempts > 0 => continue,
                Err(CheckoutError::Connect(e)) => return Err(server_error_frame(e)),
            };
            match self.state.apply(&mut conn).await {
                Ok(()) => break conn,
                Err(e) if self.gone(&e) && attempts > 0 => {
                    tracing::debug!("server connection lost while its settings were replayed: {e}");
                    drop(conn); // closed, slot freed
                }
                Err(e) => {
                    if matches!(e, ServerError::Server(..)) {
                        conn.release();
                    }
                    return Err(server_error_frame(e));
                }
            }
        };
        *self.handles.cancel.meta.server.lock() = Some(ServerKey {
            addr: conn.addr.clone(),
            pid: conn.pid,
            secret: conn.secret,
            gate: conn.cancel_gate.clone(),
        });
        self.handles.clients.active_add(1);
        self.server = Some(conn);
        self.send_deferred_begin();
        Ok(())
    }

    /// Whether the server connection went away; if so, the pool checks its other idle sockets for
    /// a while (backends are terminated in batches), retried or not.
    fn gone(&self, e: &ServerError) -> bool {
        let gone = went_away(e);
        if gone {
            self.pool.went_away();
        }
        gone
    }

    async fn checkout_once(&mut self) -> Result<PooledConn, CheckoutError> {
        self.handles.clients.waiting_add(1);
        let result = match self.slow_lane_share.filter(|_| self.runs_slow()) {
            Some(share) => self.pool.checkout_slow_lane(share).await,
            None => self.pool.checkout().await,
        };
        self.handles.clients.waiting_add(-1);
        result
    }

    /// The message in hand runs a statement the strategy put in the slow lane.
    fn runs_slow(&self) -> bool {
        let slow = |a: &crate::sql::Analysis| {
            a.learned.slow_lane.load(std::sync::atomic::Ordering::Relaxed)
                || a.learned.pinned() == Some(crate::sql::learned::Pinned::SlowLane)
        };
        self.turn.analyzed.iter().any(|(a, _)| slow(a))
            || self.turn.statement.as_ref().and_then(|s| s.analysis.as_deref()).is_some_and(slow)
    }

    pub(super) async fn server_lost(&mut self, why: &str) {
        let msg = format!("pgpilot: {why}; the session cannot continue");
        self.server_lost_with(sqlstate::CONNECTION_FAILURE, &msg).await;
    }

    /// As `server_lost`, with the SQLSTATE and message the client gets.
    async fn server_lost_with(&mut self, code: &str, msg: &str) {
        self.pending.clear();
        self.stages.on_server_lost().await;
        if let Some(conn) = self.server.take() {
            tracing::warn!(server = conn.id, database = %self.info.database, "server connection closed: {msg}");
            self.detach();
            drop(conn);
        }
        messages::error(&mut self.cout, "FATAL", code, msg);
        let _ = self.flush_client().await;
    }

    /// KILL_CLIENT: FATAL 57P01 and the end of the session (a held server connection
    /// mid-transaction is closed with it, never reused).
    pub(super) async fn killed(&mut self) {
        tracing::info!(user = %self.info.user, database = %self.info.database, "client killed (KILL_CLIENT)");
        let msg = "terminating connection due to administrator command (KILL_CLIENT)";
        messages::error(&mut self.cout, "FATAL", sqlstate::ADMIN_SHUTDOWN, msg);
        let _ = self.flush_client().await;
    }

    /// pool.query_timeout_ms passed with the round trip unanswered: as PgBouncer's query_timeout,
    /// the statement is canceled on the server (so the backend stops working), that connection is
    /// closed (whatever state it is in), and the client is told why and disconnected.
    pub(super) async fn query_timed_out(&mut self) {
        let ms = self.timeouts.query.map_or(0, |t| t.as_millis());
        tracing::warn!(user = %self.info.user, database = %self.info.database, "query ran past pool.query_timeout_ms ({ms} ms): canceled, client disconnected");
        if let Some(key) = self.handles.cancel.meta.server.lock().clone() {
            tokio::spawn(async move { crate::backend::cancel::cancel_backend(&key).await });
        }
        self.server_lost_with(
            sqlstate::QUERY_CANCELED,
            &format!("canceling statement due to query timeout (pool.query_timeout_ms = {ms})"),
        )
        .await;
    }

    /// Idle (no server connection, nothing buffered or half-read): the read and write buffers go
    /// back to the allocator, ~40 KB of capacity per idle client; they come back at the next read.
    pub(super) fn release_idle_buffers(&mut self) {
        let idle = self.server.is_none() && self.pending.is_empty() && !self.cframer.mid_message();
        if idle && self.cbuf.is_empty() && self.cout.is_empty() && self.sout.is_empty() {
            self.cbuf = bytes::BytesMut::new();
            self.cout = bytes::BytesMut::new();
            self.sout = bytes::BytesMut::new();
        }
    }

    /// The held server connection is no longer this client's to cancel on.
    pub(super) fn detach(&mut self) {
        let mut server = self.handles.cancel.meta.server.lock();
        *server = None;
        self.handles.cancel.meta.running.store(false, std::sync::atomic::Ordering::Release);
        self.timeouts.deadline = None;
        drop(server);
        self.handles.clients.active_add(-1);
    }
}

/// The server closed the connection under pgpilot (not refused, not timed out): worth another.
fn went_away(e: &ServerError) -> bool {
    use std::io::ErrorKind::*;
    matches!(e, ServerError::Io(io) if matches!(io.kind(), UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted))
}

/// A server-side failure as an ERROR for the client; server errors keep their SQLSTATE and text.
fn server_error_frame(e: ServerError) -> BytesMut {
    match e {
        ServerError::Server(frame, _) => {
            let (_, code, msg) = crate::protocol::backend::error_fields(body(&frame));
            messages::error_frame("ERROR", &code, &msg)
        }
        other => messages::error_frame(
            "ERROR",
            sqlstate::CANNOT_CONNECT,
            &format!("pgpilot could not get a server connection: {other}"),
        ),
    }
}
