//! Reading whole messages from a client during startup and authentication, with a size bound.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::frame::{Framer, Piece};
use crate::net::stream::ClientStream;

/// Startup-phase messages are small; PostgreSQL caps the startup packet at 10000 bytes.
pub const AUTH_MESSAGE_MAX: usize = 10_000;

pub async fn read_message(stream: &mut ClientStream, buf: &mut BytesMut) -> std::io::Result<(u8, BytesMut)> {
    let mut framer = Framer::new(AUTH_MESSAGE_MAX);
    loop {
        match framer.next(buf, |_| true) {
            Ok(Some(Piece::Whole { tag, frame })) => return Ok((tag, frame)),
            Ok(_) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Sends an error and closes: the clean end for a client that cannot go on.
pub async fn fail(stream: &mut ClientStream, code: &str, message: &str) {
    let frame = crate::net::messages::error_frame("FATAL", code, message);
    let _ = stream.write_all(&frame).await;
    let _ = stream.shutdown().await;
}
