//! What the session loop waits on: the client's next bytes and the server's, each with the timer
//! that may cut the wait short (idle in transaction, query timeout).

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use crate::net::stream::ClientStream;
use crate::pool::PooledConn;

/// The session's time limits: `pool.idle_transaction_timeout_ms` and `pool.query_timeout_ms`
/// (None: off), and when the round trip in flight passes the latter (set at its first write,
/// cleared at its end).
pub struct Timeouts {
    pub idle_transaction: Option<std::time::Duration>,
    pub query: Option<std::time::Duration>,
    pub deadline: Option<tokio::time::Instant>,
}

impl Timeouts {
    pub fn new(pool: &crate::config::PoolConfig) -> Self {
        let limit = |ms: u64| Some(ms).filter(|&ms| ms > 0).map(std::time::Duration::from_millis);
        Self {
            idle_transaction: limit(pool.idle_transaction_timeout_ms),
            query: limit(pool.query_timeout_ms),
            deadline: None,
        }
    }
}

/// The client's next bytes; Err(Elapsed) when `idle_limit` passes first.
pub(super) async fn read_client(
    client: &mut ClientStream,
    buf: &mut BytesMut,
    idle_limit: Option<std::time::Duration>,
) -> Result<std::io::Result<usize>, tokio::time::error::Elapsed> {
    if buf.capacity() == 0 {
        // Released while idle (or used up): a buffer is taken only once there is something to read.
        let readable = match client {
            crate::net::stream::MaybeTls::Plain(tcp) => tcp.readable().await,
            crate::net::stream::MaybeTls::Unix(socket) => socket.readable().await,
            crate::net::stream::MaybeTls::Tls(_) => Ok(()),
        };
        if let Err(e) = readable {
            return Ok(Err(e));
        }
        buf.reserve(8 * 1024);
    }
    match idle_limit {
        None => Ok(client.read_buf(buf).await),
        Some(limit) => crate::timers::timeout(limit, client.read_buf(buf)).await,
    }
}

/// The server's next bytes; Err(Elapsed) when `deadline` (pool.query_timeout_ms) passes first.
pub(super) async fn read_server(
    server: &mut Option<PooledConn>,
    deadline: Option<tokio::time::Instant>,
) -> Result<std::io::Result<usize>, tokio::time::error::Elapsed> {
    let Some(conn) = server else { return std::future::pending().await };
    let conn = &mut **conn;
    let read = conn.stream.read_buf(&mut conn.rbuf);
    match deadline {
        None => Ok(read.await),
        Some(at) => crate::timers::timeout_at(at, read).await,
    }
}
