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

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    pub name: &'a [u8],
    /// The table and column it comes from (0 when computed).
    pub table: u32,
    pub attnum: i16,
    pub type_oid: u32,
    pub typmod: i32,
}

/// The columns of a RowDescription body; None when it is not well formed (a count it does not
/// hold, a field cut short).
pub fn row_columns(body: &[u8]) -> Option<Vec<Column<'_>>> {
    let count = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    let mut rest = &body[2..];
    // (Each column takes at least 19 bytes: no count can make this allocate past the body.)
    let mut columns = Vec::with_capacity(count.min(rest.len() / 19));
    for _ in 0..count {
        let (name, tail) = cstr(rest)?;
        let fixed = tail.get(..18)?;
        let u32_at = |i: usize| u32::from_be_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        columns.push(Column {
            name,
            table: u32_at(0),
            attnum: i16::from_be_bytes([fixed[4], fixed[5]]),
            type_oid: u32_at(6),
            typmod: u32_at(12) as i32,
        });
        rest = &tail[18..];
    }
    rest.is_empty().then_some(columns)
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

    #[test]
    fn reads_a_row_description_and_refuses_a_broken_one() {
        let mut body = 2i16.to_be_bytes().to_vec();
        for (name, table, attnum, oid, typmod) in [("id", 16384u32, 1i16, 23u32, -1i32), ("n", 0, 0, 1700, 655366)] {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&table.to_be_bytes());
            body.extend_from_slice(&attnum.to_be_bytes());
            body.extend_from_slice(&oid.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes()); // typlen
            body.extend_from_slice(&typmod.to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes()); // format
        }
        let columns = row_columns(&body).expect("well formed");
        assert_eq!(columns.len(), 2);
        assert_eq!(
            (columns[0].name, columns[0].table, columns[0].attnum, columns[0].type_oid),
            (&b"id"[..], 16384, 1, 23)
        );
        assert_eq!((columns[1].name, columns[1].type_oid, columns[1].typmod), (&b"n"[..], 1700, 655366));
        assert_eq!(row_columns(&body[..body.len() - 1]), None, "cut short");
        assert_eq!(row_columns(&[body.as_slice(), b"x"].concat()), None, "more than its count");
        assert_eq!(row_columns(&[0x7f, 0xff]), None, "a count it does not hold: no panic, no huge allocation");
        assert_eq!(row_columns(&[0xff, 0xff]), None, "a negative count");
        assert_eq!(row_columns(&0i16.to_be_bytes()), Some(vec![]));
    }
}
