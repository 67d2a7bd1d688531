//! A minimal raw protocol client for the tests that must send exact (or broken) byte sequences.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Either end of a connection the tests play: a TCP socket to a pgpilot process, or one end of an
/// in-process socket pair (`fake::InProcess`).
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    p.extend_from_slice(&body);
    p
}

pub fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

/// Bind with no parameters and text results.
pub fn bind(portal: &str, stmt: &str) -> Vec<u8> {
    let mut b = format!("{portal}\0{stmt}\0").into_bytes();
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    msg(b'B', &b)
}

pub fn execute(portal: &str) -> Vec<u8> {
    let mut b = format!("{portal}\0").into_bytes();
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}

pub fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

pub struct Raw {
    pub s: Box<dyn Duplex>,
    buf: Vec<u8>,
}

impl Raw {
    /// Reads and writes frames on a socket opened elsewhere (a scripted fake server's side).
    pub fn over(s: impl Duplex + 'static) -> Raw {
        Raw { s: Box::new(s), buf: Vec::new() }
    }

    pub async fn connect(port: u16) -> Raw {
        Raw::over(TcpStream::connect(("127.0.0.1", port)).await.unwrap())
    }

    /// Logs in as a trust user and reads up to the first ReadyForQuery.
    pub async fn login_trust(port: u16, user: &str, db: &str) -> Raw {
        Raw::login_trust_over(Raw::connect(port).await, user, db).await
    }

    /// The same on a connection opened elsewhere.
    pub async fn login_trust_over(mut r: Raw, user: &str, db: &str) -> Raw {
        r.send(&startup_packet(&[("user", user), ("database", db)])).await;
        let tags = r.until_ready().await.expect("login");
        assert!(tags.contains(&b'K'), "BackendKeyData expected, got {:?}", String::from_utf8_lossy(&tags));
        r
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Next message (tag, body), or None on EOF; fails the test after 10 s.
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() > len {
                    let m: Vec<u8> = self.buf.drain(..len + 1).collect();
                    return Some((m[0], m[5..].to_vec()));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut chunk))
                .await
                .expect("no reply within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Tags of every message up to and including ReadyForQuery; Err(tags) on EOF first.
    pub async fn until_ready(&mut self) -> Result<Vec<u8>, Vec<u8>> {
        let mut tags = Vec::new();
        loop {
            match self.next().await {
                Some((t, _)) => {
                    tags.push(t);
                    if t == b'Z' {
                        return Ok(tags);
                    }
                }
                None => return Err(tags),
            }
        }
    }

    /// Every message (tag, body) up to and including ReadyForQuery.
    pub async fn messages_until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Reads until EOF; returns the SQLSTATEs of the ErrorResponses seen.
    pub async fn error_codes_until_close(&mut self) -> Vec<String> {
        let mut codes = Vec::new();
        while let Some((t, body)) = self.next().await {
            if t == b'E' {
                codes.push(sqlstate(&body));
            }
        }
        codes
    }
}

pub fn sqlstate(body: &[u8]) -> String {
    let mut rest = body;
    while let Some((&k, tail)) = rest.split_first() {
        if k == 0 {
            break;
        }
        let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
        if k == b'C' {
            return String::from_utf8_lossy(&tail[..end]).into_owned();
        }
        rest = &tail[(end + 1).min(tail.len())..];
    }
    String::new()
}
