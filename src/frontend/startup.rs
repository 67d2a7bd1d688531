//! The opening exchange before a session exists: SSLRequest / GSSENCRequest negotiation,
//! CancelRequest, and the StartupMessage with its parameters.

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::net::client_io::{fail, AUTH_MESSAGE_MAX};
use crate::net::messages::{self, sqlstate};
use crate::net::stream::ClientStream;

use crate::net::messages::{CANCEL_REQUEST, GSSENC_REQUEST, SSL_REQUEST};

pub enum Opening {
    Startup {
        stream: ClientStream,
        params: BTreeMap<String, String>,
    },
    /// The client's connection is kept open until the cancel has been processed.
    Cancel {
        pid: i32,
        secret: i32,
        stream: ClientStream,
    },
    /// The client went away or was refused; nothing more to do.
    Closed,
}

/// Reads packets until a StartupMessage or CancelRequest, upgrading to TLS when asked and able.
pub async fn negotiate(mut stream: ClientStream, tls: Option<&TlsAcceptor>) -> Opening {
    let mut negotiated_ssl = false;
    loop {
        let packet = match read_packet(&mut stream).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                fail(&mut stream, sqlstate::PROTOCOL_VIOLATION, "invalid length of startup packet").await;
                return Opening::Closed;
            }
            Err(_) => return Opening::Closed,
        };
        let code = i32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        let rest = &packet[4..];
        match code {
            SSL_REQUEST if !negotiated_ssl => {
                negotiated_ssl = true;
                // TLS when configured, never on the Unix-domain socket (PostgreSQL's rule too).
                let acceptor = tls.filter(|_| matches!(stream, ClientStream::Plain(_)));
                let Some(acceptor) = acceptor else {
                    if stream.write_all(b"N").await.is_err() {
                        return Opening::Closed;
                    }
                    continue;
                };
                let ClientStream::Plain(mut tcp) = stream else { return Opening::Closed };
                if tcp.write_all(b"S").await.is_err() {
                    return Opening::Closed;
                }
                match acceptor.accept(tcp).await {
                    Ok(t) => stream = ClientStream::Tls(Box::new(t)),
                    Err(e) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return Opening::Closed;
                    }
                }
            }
            GSSENC_REQUEST => {
                if stream.write_all(b"N").await.is_err() {
                    return Opening::Closed;
                }
            }
            CANCEL_REQUEST if rest.len() == 8 => {
                let pid = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let secret = i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
                return Opening::Cancel { pid, secret, stream };
            }
            v if v >> 16 == 3 => return startup(stream, v & 0xffff, rest).await,
            _ => {
                fail(&mut stream, sqlstate::PROTOCOL_VIOLATION, "unsupported frontend protocol or request code").await;
                return Opening::Closed;
            }
        }
    }
}

async fn startup(mut stream: ClientStream, minor: i32, rest: &[u8]) -> Opening {
    let Some(params) = parse_params(rest) else {
        fail(&mut stream, sqlstate::PROTOCOL_VIOLATION, "invalid startup packet layout").await;
        return Opening::Closed;
    };
    if !params.contains_key("user") {
        fail(&mut stream, sqlstate::INVALID_AUTHORIZATION, "no PostgreSQL user name specified in startup packet").await;
        return Opening::Closed;
    }
    // Newer minor versions and `_pq_.` options: say what we speak, as PostgreSQL does.
    let unsupported: Vec<String> = params.keys().filter(|k| k.starts_with("_pq_.")).cloned().collect();
    if minor > 0 || !unsupported.is_empty() {
        let mut out = bytes::BytesMut::new();
        messages::negotiate_protocol_version(&mut out, &unsupported);
        if stream.write_all(&out).await.is_err() {
            return Opening::Closed;
        }
    }
    let params = params.into_iter().filter(|(k, _)| !k.starts_with("_pq_.")).collect();
    Opening::Startup { stream, params }
}

/// name\0value\0 ... \0
pub fn parse_params(mut b: &[u8]) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    loop {
        let (name, rest) = crate::net::frame::cstr(b)?;
        if name.is_empty() {
            return Some(params);
        }
        let (value, rest) = crate::net::frame::cstr(rest)?;
        params.insert(String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned());
        b = rest;
    }
}

/// Reads one length-prefixed startup-phase packet (its code first); `None` for an invalid length.
/// The length and the code are read together when they arrive together (an SSLRequest costs one
/// read); nothing past the packet is read (a TLS handshake may follow it).
async fn read_packet(stream: &mut ClientStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 8];
    let mut got = 0;
    // A length that is already wrong is answered at once, without waiting for 8 bytes.
    while got < 4 {
        match stream.read(&mut head[got..]).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if !(8..=AUTH_MESSAGE_MAX as i32).contains(&len) {
        return Ok(None);
    }
    stream.read_exact(&mut head[got..]).await?;
    let mut packet = vec![0u8; len as usize - 4];
    packet[..4].copy_from_slice(&head[4..]);
    stream.read_exact(&mut packet[4..]).await?;
    Ok(Some(packet))
}

#[cfg(test)]
mod tests {
    use super::parse_params;

    #[test]
    fn params_parse_and_reject_unterminated() {
        let p = parse_params(b"user\0app\0database\0db\0\0").unwrap();
        assert_eq!(p["user"], "app");
        assert_eq!(p["database"], "db");
        assert!(parse_params(b"user\0app").is_none());
    }
}
