//! Opening a server connection: TCP, StartupMessage, authentication, and the startup replies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgwire::messages::startup::Startup;
use pgwire::messages::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ServerConn, ServerError};
use crate::net::endpoint::Socket;
use crate::net::frame::body;
use crate::net::stream::ServerStream;
use crate::net::upstream_tls::UpstreamTls;
use crate::protocol::backend as be;

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
    pub link: Link,
}

/// How the socket to the server is set up: TLS and the TCP options that notice a dead server.
#[derive(Debug, Clone)]
pub struct Link {
    /// None: plain (sslmode = disable); Err: the TLS settings cannot be built (named at connect).
    pub tls: Result<Option<Arc<UpstreamTls>>, Arc<str>>,
    pub tcp_user_timeout_ms: u64,
    pub tcp_keepalive_s: u64,
}

impl Link {
    pub fn from_config(cfg: &crate::config::Config) -> Link {
        Link {
            tls: crate::net::upstream_tls::for_config(&cfg.upstream).map_err(|e| format!("{e:#}").into()),
            tcp_user_timeout_ms: cfg.server.tcp_user_timeout_ms,
            tcp_keepalive_s: cfg.server.tcp_keepalive_s,
        }
    }

    fn apply(&self, stream: &TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let sock = socket2::SockRef::from(stream);
        if self.tcp_keepalive_s > 0 {
            let idle = Duration::from_secs(self.tcp_keepalive_s);
            let ka =
                socket2::TcpKeepalive::new().with_time(idle).with_interval(Duration::from_secs(10)).with_retries(3);
            sock.set_tcp_keepalive(&ka)?;
        }
        if self.tcp_user_timeout_ms > 0 {
            sock.set_tcp_user_timeout(Some(Duration::from_millis(self.tcp_user_timeout_ms)))?;
        }
        Ok(())
    }
}

/// Connects, authenticates and reads the startup replies, all within `target.timeout`.
pub async fn connect(target: &Target) -> Result<ServerConn, ServerError> {
    crate::timers::timeout(target.timeout, connect_inner(target)).await.map_err(|_| ServerError::Timeout)?
}

async fn connect_inner(target: &Target) -> Result<ServerConn, ServerError> {
    let (socket, addr) = crate::net::endpoint::connect(&target.host, target.port).await?;
    let stream = match socket {
        // libpq's rule: the TLS settings (sslmode, certificates) do not apply to a Unix-domain socket.
        Socket::Unix(s) => ServerStream::Unix(s),
        Socket::Tcp(s) => {
            target.link.apply(&s)?;
            match target.link.tls.clone().map_err(|e| ServerError::Tls(e.to_string()))? {
                None => ServerStream::Plain(s),
                Some(tls) => negotiate_tls(s, &tls, &target.host).await?,
            }
        }
    };
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

/// SSLRequest, then the handshake after 'S'; after 'N', plain where the mode allows it.
async fn negotiate_tls(mut stream: TcpStream, tls: &UpstreamTls, host: &str) -> Result<ServerStream, ServerError> {
    let mut request = [0u8; 8];
    request[..4].copy_from_slice(&8i32.to_be_bytes());
    request[4..].copy_from_slice(&crate::net::messages::SSL_REQUEST.to_be_bytes());
    stream.write_all(&request).await?;
    match stream.read_u8().await? {
        b'S' => {
            let name = crate::net::upstream_tls::server_name(host).map_err(ServerError::Tls)?;
            let tls = tls.connector.connect(name, stream).await.map_err(|e| ServerError::Tls(e.to_string()))?;
            Ok(ServerStream::Tls(Box::new(tls)))
        }
        b'N' if !tls.required() => Ok(ServerStream::Plain(stream)),
        b'N' => Err(ServerError::Tls(format!("the server does not accept TLS, and upstream.sslmode = {:?}", tls.mode))),
        other => Err(ServerError::Protocol(format!("{:?} in answer to SSLRequest", other as char))),
    }
}

/// After AuthenticationOk: ParameterStatus*, BackendKeyData, then ReadyForQuery.
async fn read_startup_replies(conn: &mut ServerConn) -> Result<(), ServerError> {
    loop {
        let (tag, frame) = conn.read_message().await?;
        match tag {
            be::PARAMETER_STATUS => conn.note_parameter(body(&frame)),
            be::BACKEND_KEY_DATA => {
                let b = body(&frame);
                if b.len() < 8 {
                    return Err(ServerError::Protocol("short BackendKeyData".into()));
                }
                conn.pid = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                conn.secret = i32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            }
            be::NOTICE_RESPONSE => {}
            be::READY_FOR_QUERY => return Ok(()),
            be::ERROR_RESPONSE => return Err(ServerError::from_error_frame(frame)),
            other => return Err(ServerError::Protocol(format!("{:?} during startup", other as char))),
        }
    }
}
