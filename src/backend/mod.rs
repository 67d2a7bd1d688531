//! Server connections: opening and logging in (`connect`), and the handful of internal queries
//! pgpilot runs on them itself (reset, health check, session-state replay).

pub mod cancel;
pub mod cancel_gate;
pub mod connect;
pub mod internal;
pub mod login;

use std::collections::BTreeMap;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::frame::{FrameError, Framer, Piece};

/// Largest message read whole on internal paths (startup, internal queries).
const INTERNAL_MAX: usize = 64 << 20;

/// `ServerConn::state_sig` of a connection whose settings are not known: never a real state's
/// signature (those are odd; 0 is a fresh connection).
pub const UNKNOWN_STATE: u64 = 2;

/// One authenticated connection to the upstream server.
pub struct ServerConn {
    pub stream: crate::net::stream::ServerStream,
    pub rbuf: BytesMut,
    /// ParameterStatus values, kept current from every ParameterStatus the server sends (shared:
    /// a session keeps the values it told its client at login without copying them).
    pub params: std::sync::Arc<BTreeMap<String, String>>,
    /// `params` as the ParameterStatus messages a login sends, encoded once per change.
    pub params_frames: Option<bytes::Bytes>,
    pub pid: i32,
    pub secret: i32,
    pub addr: crate::net::endpoint::Endpoint,
    pub id: u64,
    /// Coarse-clock milliseconds (crate::clock) when opened and when last returned to the pool.
    pub created_ms: u64,
    pub last_used_ms: u64,
    /// Signature of the client session state last applied (0 = the state it was opened with,
    /// `UNKNOWN_STATE` = not known).
    pub state_sig: u64,
    /// Registry statements prepared on this connection, least recently used first out.
    pub prepared: lru::LruCache<u64, ServerCopy>,
    /// Server statement names to close before the next use (their plans went stale).
    pub stale: Vec<String>,
    /// Which client Parse the server's unnamed statement holds (`next_unnamed_token`), 0 when
    /// none or unknown: pgpilot's own queries and simple Queries destroy it.
    pub unnamed: u64,
    /// Counts a client's cancels forwarded to this backend while in flight: the connection is
    /// checked in only after them (see backend::cancel_gate).
    pub cancel_gate: std::sync::Arc<cancel_gate::CancelGate>,
}

/// A registry statement as prepared on one server connection.
#[derive(Debug, Clone)]
pub struct ServerCopy {
    pub stmt: std::sync::Arc<crate::prepared::Statement>,
    /// The registry's DDL epoch when it was prepared.
    pub epoch: u64,
    /// The statement version (description hash) it was described as; `FRESH` until its first
    /// Describe answers.
    pub version: u64,
    /// Binds served from this copy: PostgreSQL plans its first five afresh, so the
    /// server-prepared strategy times only later runs (`prepared::adaptive`).
    pub runs: u32,
}

impl ServerCopy {
    /// Prepared just now: current by construction, its version known when the Describe answers.
    pub const FRESH: u64 = u64::MAX;

    /// Still what the statement means now.
    pub fn current(&self, epoch: u64) -> bool {
        self.current_as(epoch, self.stmt.version())
    }

    /// As `current`, with the statement's version already read (one read per Bind).
    pub fn current_as(&self, epoch: u64, version: u64) -> bool {
        self.epoch == epoch && (self.version == Self::FRESH || (self.version != 0 && self.version == version))
    }
}

/// A token for an unnamed Parse sent to a server, unique for the life of the process.
pub fn next_unnamed_token() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("server i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("server sent an unexpected message {0:?}")]
    Protocol(String),
    #[error("server error: {1}")]
    /// The server's ErrorResponse, kept whole so it can be forwarded to the client unchanged.
    Server(BytesMut, String),
    #[error("authentication with the server: {0}")]
    Auth(String),
    #[error("TLS with the server: {0}")]
    Tls(String),
}

impl From<FrameError> for ServerError {
    fn from(e: FrameError) -> Self {
        ServerError::Protocol(e.to_string())
    }
}

impl ServerError {
    pub fn from_error_frame(frame: BytesMut) -> Self {
        let (_, code, msg) = crate::protocol::backend::error_fields(crate::net::frame::body(&frame));
        let text = format!("{code}: {msg}");
        ServerError::Server(frame, text)
    }
}

impl ServerConn {
    /// Reads one whole message (internal paths only; the relay streams instead).
    pub async fn read_message(&mut self) -> Result<(u8, BytesMut), ServerError> {
        let mut framer = Framer::new(INTERNAL_MAX);
        loop {
            if let Some(piece) = framer.next(&mut self.rbuf, |_| true)? {
                match piece {
                    Piece::Whole { tag, frame } => return Ok((tag, frame)),
                    Piece::Part { .. } => unreachable!("internal reads ask for whole messages"),
                }
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ServerError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Records a ParameterStatus body (name\0value\0).
    pub fn note_parameter(&mut self, body: &[u8]) {
        if let Some((name, value)) = crate::protocol::backend::parameter_status(body) {
            let (name, value) =
                (String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned());
            std::sync::Arc::make_mut(&mut self.params).insert(name, value);
            self.params_frames = None;
        }
    }

    /// The ParameterStatus messages for the current values (what a client is told at login).
    pub fn parameter_frames(&mut self) -> bytes::Bytes {
        if let Some(frames) = &self.params_frames {
            return frames.clone();
        }
        let frames = crate::net::messages::parameter_statuses(self.params.iter());
        self.params_frames = Some(frames.clone());
        frames
    }

    /// Whether the socket is closed or has unsolicited bytes (a dead or dirty idle connection).
    /// Peeks, never reads: under TLS a byte taken from the socket would break the record stream.
    pub fn looks_broken(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // The socket is non-blocking: WouldBlock is the one answer of a clean idle connection;
        // anything else is bytes nobody asked for, end of stream, or an error.
        !matches!(self.stream.socket().peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}
