//! Opening a server connection: TCP, StartupMessage, authentication, and the startup replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use pgwire::messages::startup::Startup;
use pgwire::messages::Message;
use tokio::net::TcpStream;

use super::{ServerConn, ServerError};
use crate::net::frame::body;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub timeout: Duration,
    pub prepared_cache: usize,
    /// A logical replication connection (`replication=database`): replication commands and
    /// simple queries only.
    pub replication: bool,
}

/// Connects, authenticates and reads the startup replies, all within `target.timeout`.
pub async fn connect(target: &Target) -> Result<ServerConn, ServerError> {
    tokio::time::timeout(target.timeout, connect_inner(target)).await.map_err(|_| ServerError::Timeout)?
}

async fn connect_inner(target: &Target) -> Result<ServerConn, ServerError> {
    let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
    stream.set_nodelay(true)?;
    let addr = stream.peer_addr()?;
    let mut conn = ServerConn {
        stream,
        rbuf: BytesMut::with_capacity(16 * 1024),
        params: Default::default(),
        params_frames: None,
        pid: 0,
        secret: 0,
        addr,
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        created_ms: crate::clock::now_ms(),
        last_used_ms: crate::clock::now_ms(),
        state_sig: 0,
        prepared: lru::LruCache::new(std::num::NonZeroUsize::new(target.prepared_cache.max(1)).expect("at least 1")),
        stale: Vec::new(),
        unnamed: 0,
        cancel_gate: Default::default(),
    };
    let mut startup = Startup::new();
    startup.protocol_number_major = 3;
    startup.protocol_number_minor = 0;
    startup.parameters.insert("user".into(), target.user.clone());
    startup.parameters.insert("database".into(), target.database.clone());
    if target.replication {
        startup.parameters.insert("replication".into(), "database".into());
    }
    let mut out = BytesMut::new();
    startup.encode(&mut out).map_err(|e| ServerError::Protocol(e.to_string()))?;
    conn.send(&out).await?;
    super::login::login(&mut conn, &target.user, target.password.as_deref()).await?;
    read_startup_replies(&mut conn).await?;
    Ok(conn)
}

/// After AuthenticationOk: ParameterStatus*, BackendKeyData, then ReadyForQuery.
async fn read_startup_replies(conn: &mut ServerConn) -> Result<(), ServerError> {
    loop {
        let (tag, frame) = conn.read_message().await?;
        match tag {
            b'S' => conn.note_parameter(body(&frame)),
            b'K' => {
                let b = body(&frame);
                if b.len() < 8 {
                    return Err(ServerError::Protocol("short BackendKeyData".into()));
                }
                conn.pid = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                conn.secret = i32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            }
            b'N' => {}
            b'Z' => return Ok(()),
            b'E' => return Err(ServerError::from_error_frame(frame)),
            other => return Err(ServerError::Protocol(format!("{:?} during startup", other as char))),
        }
    }
}
