//! The messages pgpilot writes itself (errors, auth, startup replies), encoded with pgwire so the
//! byte layout comes from a maintained codec rather than from hand-written offsets.

use bytes::{BufMut, BytesMut};
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::Message;

/// Request codes of the messages that come before (or instead of) a StartupMessage.
pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;
pub const CANCEL_REQUEST: i32 = 80877102;

/// SQLSTATEs pgpilot raises (DESIGN.md section 3).
pub mod sqlstate {
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const UNKNOWN_DATABASE: &str = "3D000";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const QUERY_CANCELED: &str = "57014";
    pub const CANNOT_CONNECT: &str = "08001";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const PROGRAM_LIMIT: &str = "54000";
    pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
    pub const OUT_OF_MEMORY: &str = "53200";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const UNDEFINED_OBJECT: &str = "42704";
}

fn encode<M: Message>(m: M, out: &mut BytesMut) {
    // Room first: pgwire writes field by field, and an empty buffer grew up to ten times per
    // message (a login's messages cost ~2,000 instructions of reallocation before this).
    out.reserve(1 + m.message_length());
    // Encoding into a BytesMut cannot fail for these fixed-shape messages.
    m.encode(out).expect("encoding a pgpilot message");
}

/// An ErrorResponse with severity, SQLSTATE and message (`V` repeats the severity, as servers send).
pub fn error(out: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let fields = vec![
        (b'S', severity.to_string()),
        (b'V', severity.to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ];
    encode(ErrorResponse::new(fields), out);
}

/// The error PostgreSQL raises when a prepared statement's result type changed; drivers recognise
/// it by its routine field (asyncpg then re-prepares), so it is reproduced field for field.
pub fn stale_plan_error() -> BytesMut {
    let fields = vec![
        (b'S', "ERROR".to_string()),
        (b'V', "ERROR".to_string()),
        (b'C', sqlstate::FEATURE_NOT_SUPPORTED.to_string()),
        (b'M', "cached plan must not change result type".to_string()),
        (b'F', "plancache.c".to_string()),
        (b'R', "RevalidateCachedQuery".to_string()),
    ];
    let mut out = BytesMut::new();
    encode(ErrorResponse::new(fields), &mut out);
    out
}

pub fn error_frame(severity: &str, code: &str, message: &str) -> BytesMut {
    let mut out = BytesMut::new();
    error(&mut out, severity, code, message);
    out
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    encode(pgwire::messages::response::CommandComplete::new(tag.to_string()), out);
}

pub fn command_complete_frame(tag: &str) -> bytes::Bytes {
    let mut out = BytesMut::new();
    command_complete(&mut out, tag);
    out.freeze()
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    encode(ReadyForQuery::new(status), out);
}

pub fn auth(out: &mut BytesMut, m: Authentication) {
    encode(m, out);
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    encode(ParameterStatus::new(name.to_string(), value.to_string()), out);
}

/// One ParameterStatus per (name, value), in order: what a client is told at login.
pub fn parameter_statuses<'a>(params: impl IntoIterator<Item = (&'a String, &'a String)>) -> bytes::Bytes {
    let mut out = BytesMut::new();
    for (name, value) in params {
        parameter_status(&mut out, name, value);
    }
    out.freeze()
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    encode(BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_.` options.
pub fn negotiate_protocol_version(out: &mut BytesMut, unsupported: &[String]) {
    let len = 4 + 4 + 4 + unsupported.iter().map(|o| o.len() + 1).sum::<usize>();
    out.put_u8(b'v');
    out.put_i32(len as i32);
    out.put_i32(0);
    out.put_i32(unsupported.len() as i32);
    for o in unsupported {
        out.put_slice(o.as_bytes());
        out.put_u8(0);
    }
}

/// A simple Query message.
pub fn query(out: &mut BytesMut, sql: &str) {
    out.put_u8(b'Q');
    out.put_i32((4 + sql.len() + 1) as i32);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trips_through_the_field_parser() {
        let f = error_frame("FATAL", sqlstate::INVALID_PASSWORD, "password authentication failed");
        assert_eq!(f[0], b'E');
        let len = i32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len + 1, f.len());
        let (s, c, m) = crate::protocol::backend::error_fields(&f[5..]);
        assert_eq!((s.as_str(), c.as_str(), m.as_str()), ("FATAL", "28P01", "password authentication failed"));
    }
}
