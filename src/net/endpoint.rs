//! Where the server listens: a TCP address, or a Unix-domain socket when the host is a directory
//! (libpq's rule: a host that starts with `/` names the directory holding `.s.PGSQL.<port>`).
//! PgBouncer users write `host=/var/run/postgresql` for a server on the same machine; the socket
//! skips the TCP/IP stack, which is most of the kernel time of a relayed round trip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpStream, UnixStream};

/// A server's address as connected: kept with the connection for cancel requests (which must
/// reach the same server) and for SHOW SERVERS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix { path: Arc<Path>, port: u16 },
}

/// The socket file for a directory host, None for a TCP host (a name or an address).
pub fn unix_path(host: &str, port: u16) -> Option<PathBuf> {
    host.starts_with('/').then(|| Path::new(host).join(format!(".s.PGSQL.{port}")))
}

impl Endpoint {
    /// (addr, port) as PgBouncer's SHOW SERVERS spells them: `unix` for a Unix-domain socket.
    pub fn addr_and_port(&self) -> (String, u16) {
        match self {
            Endpoint::Tcp(a) => (a.ip().to_string(), a.port()),
            Endpoint::Unix { port, .. } => ("unix".into(), *port),
        }
    }

    /// A new socket to the same server (a cancel request's own connection).
    pub async fn connect(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Endpoint::Tcp(a) => Socket::Tcp(TcpStream::connect(a).await?),
            Endpoint::Unix { path, .. } => Socket::Unix(UnixStream::connect(path).await?),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => a.fmt(f),
            Endpoint::Unix { path, .. } => path.display().fmt(f),
        }
    }
}

/// A client's address in logs: `unix` for one on the Unix-domain socket (None).
pub struct PeerName(pub Option<SocketAddr>);

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("unix"),
        }
    }
}

/// A plain socket to a server, before any TLS.
pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Connects to `host:port` (a directory host: its socket file) and says where it connected.
pub async fn connect(host: &str, port: u16) -> std::io::Result<(Socket, Endpoint)> {
    match unix_path(host, port) {
        Some(path) => {
            let s = UnixStream::connect(&path).await?;
            Ok((Socket::Unix(s), Endpoint::Unix { path: path.into(), port }))
        }
        None => {
            let s = TcpStream::connect((host, port)).await?;
            let addr = s.peer_addr()?;
            Ok((Socket::Tcp(s), Endpoint::Tcp(addr)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_host_is_a_unix_socket() {
        assert_eq!(unix_path("/var/run/postgresql", 5433).unwrap(), Path::new("/var/run/postgresql/.s.PGSQL.5433"));
        assert_eq!(unix_path("/tmp/", 5432).unwrap(), Path::new("/tmp/.s.PGSQL.5432"));
        assert!(unix_path("db.local", 5432).is_none());
        assert!(unix_path("127.0.0.1", 5432).is_none());
        let e = Endpoint::Unix { path: Path::new("/tmp/.s.PGSQL.5432").into(), port: 5432 };
        assert_eq!((e.addr_and_port(), e.to_string()), (("unix".into(), 5432), "/tmp/.s.PGSQL.5432".into()));
        let t = Endpoint::Tcp("127.0.0.1:6000".parse().unwrap());
        assert_eq!(t.addr_and_port(), ("127.0.0.1".into(), 6000));
    }
}
