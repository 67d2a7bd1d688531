//! A socket, plain, Unix-domain or TLS, behind one type so the session loop and the server reads are written
//! once: toward clients (`ClientStream`, TLS accepted by pgpilot) and toward the server
//! (`ServerStream`, TLS negotiated by pgpilot).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// TCP, TLS over TCP (boxed: a TLS session is ~1 KB the plain case should not carry), or a
/// Unix-domain socket (never TLS: libpq does not negotiate it there either).
pub enum MaybeTls<T> {
    Plain(TcpStream),
    Tls(Box<T>),
    Unix(UnixStream),
}

pub type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;
pub type ServerStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

impl ServerStream {
    /// The socket underneath, for a peek below any TLS.
    pub fn socket(&self) -> socket2::SockRef<'_> {
        match self {
            MaybeTls::Plain(s) => socket2::SockRef::from(s),
            MaybeTls::Tls(s) => socket2::SockRef::from(s.get_ref().0),
            MaybeTls::Unix(s) => socket2::SockRef::from(s),
        }
    }
}

/// A TLS stream's socket, and whether its session holds no decrypted bytes (then only the
/// socket can bring any).
pub trait TlsParts {
    fn socket_when_drained(&self) -> Option<&TcpStream>;
}

impl TlsParts for tokio_rustls::client::TlsStream<TcpStream> {
    fn socket_when_drained(&self) -> Option<&TcpStream> {
        let (tcp, session) = self.get_ref();
        session.wants_read().then_some(tcp)
    }
}

impl TlsParts for tokio_rustls::server::TlsStream<TcpStream> {
    fn socket_when_drained(&self) -> Option<&TcpStream> {
        let (tcp, session) = self.get_ref();
        session.wants_read().then_some(tcp)
    }
}

impl<T: AsyncRead + TlsParts + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => {
                // The socket's readiness first while the session holds no plaintext: the session
                // loop polls its reads at every wake-up, and a read through rustls that finds
                // nothing costs ~300 instructions where the readiness check costs a few dozen.
                if let Some(tcp) = s.socket_when_drained() {
                    std::task::ready!(tcp.poll_read_ready(cx))?;
                }
                Pin::new(s.as_mut()).poll_read(cx, buf)
            }
            MaybeTls::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
