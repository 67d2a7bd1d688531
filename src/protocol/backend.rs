//! Messages a server sends that pgpilot inspects; everything else is forwarded by header.

use super::cstr;

pub const AUTHENTICATION: u8 = b'R';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const PARAMETER_STATUS: u8 = b'S';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const ROW_DESCRIPTION: u8 = b'T';
pub const PARAMETER_DESCRIPTION: u8 = b't';
pub const DATA_ROW: u8 = b'D';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const NOTIFICATION_RESPONSE: u8 = b'A';
pub const PARSE_COMPLETE: u8 = b'1';
pub const BIND_COMPLETE: u8 = b'2';
pub const CLOSE_COMPLETE: u8 = b'3';
pub const NO_DATA: u8 = b'n';
pub const PORTAL_SUSPENDED: u8 = b's';
pub const COPY_IN_RESPONSE: u8 = b'G';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_BOTH_RESPONSE: u8 = b'W';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';

/// ReadyForQuery's transaction status byte. (Its own namespace: b'I', b'T' and b'E' are also
/// message tags: EmptyQueryResponse, RowDescription, ErrorResponse.)
pub mod tx_status {
    /// Not in a transaction block.
    pub const IDLE: u8 = b'I';
    /// In a transaction block.
    pub const IN_BLOCK: u8 = b'T';
    /// In a failed transaction block: statements are rejected until it ends.
    pub const FAILED: u8 = b'E';
}

/// ReadyForQuery's transaction status (`tx_status`), None for any other byte.
pub fn ready_status(body: &[u8]) -> Option<u8> {
    body.first().copied().filter(|s| matches!(*s, tx_status::IDLE | tx_status::IN_BLOCK | tx_status::FAILED))
}

/// CommandComplete's tag ("SELECT 5", "INSERT 0 1").
/// (A plain scan: a tag is a few bytes, under what a vectorised search needs to pay off, and this
/// runs at every statement's completion.)
pub fn command_tag(body: &[u8]) -> Option<&[u8]> {
    body.iter().position(|&b| b == 0).map(|end| &body[..end])
}

/// The rows a CommandComplete reports (the number its tag ends with, after a space), when it
/// reports any: "BEGIN", "SET" report none.
pub fn command_rows(body: &[u8]) -> Option<u64> {
    let tag = command_tag(body)?;
    let digits = tag.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    let (head, number) = tag.split_at(tag.len() - digits);
    if digits == 0 || !head.ends_with(b" ") {
        return None;
    }
    number.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// ParameterStatus: name and value.
pub fn parameter_status(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = cstr(body)?;
    Some((name, cstr(rest)?.0))
}

/// One field of an ErrorResponse or NoticeResponse (b'S' severity, b'C' SQLSTATE, b'M' message...).
pub fn field(body: &[u8], code: u8) -> Option<&[u8]> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            return None;
        }
        let (value, after) = cstr(tail)?;
        if kind == code {
            return Some(value);
        }
        rest = after;
    }
    None
}

/// Severity (the untranslated `V` field when present), SQLSTATE and message of an ErrorResponse or
/// NoticeResponse, for logs and decisions.
pub fn error_fields(body: &[u8]) -> (String, String, String) {
    let text = |code| field(body, code).map(|v| String::from_utf8_lossy(v).into_owned());
    let severity = text(b'V').or_else(|| text(b'S')).unwrap_or_default();
    (severity, text(b'C').unwrap_or_default(), text(b'M').unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_pgpilot_needs() {
        assert_eq!(ready_status(b"T"), Some(b'T'));
        assert_eq!(ready_status(b"x"), None);
        assert_eq!(command_rows(b"SELECT 12\0"), Some(12));
        assert_eq!(command_rows(b"INSERT 0 3\0"), Some(3));
        assert_eq!(command_rows(b"BEGIN\0"), None);
        assert_eq!(command_rows(b"SELECT 12"), None, "unterminated");
        assert_eq!(command_rows(b"SELECT \0"), None);
        assert_eq!(command_rows(b"SELECT12\0"), None, "a count follows a space");
        assert_eq!(command_rows(b"SELECT 99999999999999999999\0"), None, "past u64: no count, no panic");
        assert_eq!(command_rows(b"COPY 7\0junk"), Some(7), "up to the first NUL");
        assert_eq!(command_tag(b"MERGE 2\0"), Some(&b"MERGE 2"[..]));
        assert_eq!(parameter_status(b"TimeZone\0UTC\0"), Some((&b"TimeZone"[..], &b"UTC"[..])));
        let err = b"SERROR\0C42P01\0Mno such table\0\0";
        assert_eq!(field(err, b'C'), Some(&b"42P01"[..]));
        assert_eq!(field(err, b'M'), Some(&b"no such table"[..]));
        assert_eq!(field(err, b'D'), None);
        assert_eq!(field(b"SERROR", b'C'), None, "unterminated: nothing, no panic");
    }
}
