//! Every message pgpilot writes itself, in one place: errors, auth and startup replies encoded
//! with pgwire (the byte layout from a maintained codec rather than from hand-written offsets),
//! and the extended-protocol messages it sends or rewrites per statement by hand (`frame`).

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::Message;

use crate::protocol::backend::tx_status;
use crate::protocol::{backend as be, frontend as fe};

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
        tx_status::IN_BLOCK => TransactionStatus::Transaction,
        tx_status::FAILED => TransactionStatus::Error,
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
    let mut body = Vec::with_capacity(8 + unsupported.iter().map(|o| o.len() + 1).sum::<usize>());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&(unsupported.len() as i32).to_be_bytes());
    for o in unsupported {
        body.extend_from_slice(o.as_bytes());
        body.push(0);
    }
    frame(be::NEGOTIATE_PROTOCOL_VERSION, &[&body], out);
}

/// A CancelRequest (its own connection, no tag) for the backend `pid` with its `secret`.
pub fn cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut packet = [0u8; 16];
    packet[..4].copy_from_slice(&16i32.to_be_bytes());
    packet[4..8].copy_from_slice(&CANCEL_REQUEST.to_be_bytes());
    packet[8..12].copy_from_slice(&pid.to_be_bytes());
    packet[12..].copy_from_slice(&secret.to_be_bytes());
    packet
}

/// A simple Query message.
pub fn query(out: &mut BytesMut, sql: &str) {
    frame(fe::QUERY, &[sql.as_bytes(), b"\0"], out);
}

/// A password, SASLInitialResponse or SASLResponse message (to the upstream server).
pub fn password(out: &mut BytesMut, payload: &[u8]) {
    frame(fe::PASSWORD, &[payload], out);
}

/// A CopyData message (to the upstream server: replication's status updates).
pub fn copy_data(out: &mut BytesMut, payload: &[u8]) {
    frame(fe::COPY_DATA, &[payload], out);
}

/// The reply to an empty query string.
pub fn empty_query_response(out: &mut BytesMut) {
    frame(be::EMPTY_QUERY_RESPONSE, &[], out);
}

/// One message of `parts` under `tag`: what pgpilot encodes by hand (the messages it sends or
/// rewrites per statement, where pgwire's owned-`String` messages would allocate). Inlined: with
/// the parts known at each call, the terminators become single stores (a Bind rewritten per
/// transaction cost ~100 instructions in out-of-line copies).
#[inline(always)]
fn frame(tag: u8, parts: &[&[u8]], out: &mut BytesMut) {
    let len: usize = 4 + parts.iter().map(|p| p.len()).sum::<usize>();
    out.reserve(len + 1);
    out.put_u8(tag);
    out.put_i32(len as i32);
    for p in parts {
        out.put_slice(p);
    }
}

pub fn parse(out: &mut BytesMut, name: &str, query: &[u8], types: &[u8]) {
    frame(fe::PARSE, &[name.as_bytes(), b"\0", query, b"\0", types], out);
}

pub fn bind(out: &mut BytesMut, portal: &[u8], stmt: &str, rest: &[u8]) {
    frame(fe::BIND, &[portal, b"\0", stmt.as_bytes(), b"\0", rest], out);
}

pub fn describe_statement(out: &mut BytesMut, name: &str) {
    frame(fe::DESCRIBE, &[b"S", name.as_bytes(), b"\0"], out);
}

pub fn describe_portal(out: &mut BytesMut, name: &[u8]) {
    frame(fe::DESCRIBE, &[b"P", name, b"\0"], out);
}

pub fn execute(out: &mut BytesMut, portal: &[u8], max_rows: u32) {
    frame(fe::EXECUTE, &[portal, b"\0", &max_rows.to_be_bytes()], out);
}

pub fn flush(out: &mut BytesMut) {
    frame(fe::FLUSH, &[], out);
}

pub fn close_statement(out: &mut BytesMut, name: &str) {
    frame(fe::CLOSE, &[b"S", name.as_bytes(), b"\0"], out);
}

/// Replies pgpilot gives itself (static frames: no encoding at all).
pub fn parse_complete() -> Bytes {
    Bytes::from_static(&[be::PARSE_COMPLETE, 0, 0, 0, 4])
}

pub fn bind_complete() -> Bytes {
    Bytes::from_static(&[be::BIND_COMPLETE, 0, 0, 0, 4])
}

pub fn no_data() -> Bytes {
    Bytes::from_static(&[be::NO_DATA, 0, 0, 0, 4])
}

pub fn close_complete() -> Bytes {
    Bytes::from_static(&[be::CLOSE_COMPLETE, 0, 0, 0, 4])
}

pub fn portal_suspended() -> Bytes {
    Bytes::from_static(&[be::PORTAL_SUSPENDED, 0, 0, 0, 4])
}

/// ParameterDescription of a statement without parameters.
pub fn no_parameters() -> Bytes {
    Bytes::from_static(&[be::PARAMETER_DESCRIPTION, 0, 0, 0, 6, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frontend::ClientMessage;

    #[test]
    fn error_round_trips_through_the_field_parser() {
        let f = error_frame("FATAL", sqlstate::INVALID_PASSWORD, "password authentication failed");
        assert_eq!(f[0], b'E');
        let len = i32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len + 1, f.len());
        let (s, c, m) = crate::protocol::backend::error_fields(&f[5..]);
        assert_eq!((s.as_str(), c.as_str(), m.as_str()), ("FATAL", "28P01", "password authentication failed"));
    }

    #[test]
    fn bind_rewrite_keeps_the_rest() {
        let body = b"portal\0stmt1\0\0\x01\0\x01\0\0";
        let ClientMessage::Bind { portal, statement: stmt, rest } = ClientMessage::decode(b'B', body) else { panic!() };
        assert_eq!((portal, stmt), (&b"portal"[..], &b"stmt1"[..]));
        let mut out = BytesMut::new();
        bind(&mut out, portal, "pgpilot_9", rest);
        assert_eq!(&out[5..], b"portal\0pgpilot_9\0\0\x01\0\x01\0\0");
        assert_eq!(i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize, out.len() - 1);
    }

    #[test]
    fn parse_split_and_build() {
        let body = b"s\0select $1\0\0\x01\0\0\0\x17";
        let ClientMessage::Parse { name, query, types } = ClientMessage::decode(b'P', body) else { panic!() };
        assert_eq!((name, query, types), (&b"s"[..], &b"select $1"[..], &b"\0\x01\0\0\0\x17"[..]));
        let mut out = BytesMut::new();
        parse(&mut out, "pgpilot_1", query, types);
        let rebuilt = ClientMessage::decode(b'P', &out[5..]);
        assert!(matches!(rebuilt, ClientMessage::Parse { name: b"pgpilot_1", .. }));
    }

    #[test]
    fn the_portal_describe_is_what_a_driver_sends() {
        let mut out = BytesMut::new();
        describe_portal(&mut out, b"");
        assert_eq!(&out[..], b"D\0\0\0\x06P\0");
        assert_eq!(
            ClientMessage::decode(b'D', &out[5..]),
            ClientMessage::Describe(crate::protocol::frontend::Target::Portal(b""))
        );
    }
}
