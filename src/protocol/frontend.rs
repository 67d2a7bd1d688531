//! Messages a client sends, decoded once into `ClientMessage` (zero-copy views over the body).

use super::cstr;

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const DESCRIBE: u8 = b'D';
pub const EXECUTE: u8 = b'E';
pub const CLOSE: u8 = b'C';
pub const SYNC: u8 = b'S';
pub const FLUSH: u8 = b'H';
pub const FUNCTION_CALL: u8 = b'F';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';
pub const TERMINATE: u8 = b'X';
/// PasswordMessage, SASLInitialResponse and SASLResponse share it (startup only).
pub const PASSWORD: u8 = b'p';

/// Every tag a client may send once its session runs.
pub const SESSION_TAGS: &[u8] = &[
    QUERY,
    PARSE,
    BIND,
    EXECUTE,
    DESCRIBE,
    CLOSE,
    SYNC,
    FLUSH,
    FUNCTION_CALL,
    COPY_DATA,
    COPY_DONE,
    COPY_FAIL,
    TERMINATE,
];

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Statement(&'a [u8]),
    Portal(&'a [u8]),
}

/// One client message, decoded once; `Malformed` when its body does not hold what its tag says
/// (the server will reject it: pgpilot forwards it and inspects nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    Query {
        text: &'a [u8],
    },
    Parse {
        name: &'a [u8],
        query: &'a [u8],
        types: &'a [u8],
    },
    /// `rest`: parameter formats and values and result formats, verbatim (what a cache key and a
    /// statement-name rewrite need; values are never decoded).
    Bind {
        portal: &'a [u8],
        statement: &'a [u8],
        rest: &'a [u8],
    },
    Describe(Target<'a>),
    /// `max_rows`: 0 for all rows (a negative count is read as 0, as the server does).
    Execute {
        portal: &'a [u8],
        max_rows: u32,
    },
    Close(Target<'a>),
    Sync,
    Flush,
    FunctionCall,
    CopyData,
    CopyDone,
    CopyFail,
    Terminate,
    Malformed,
    /// A tag that is not a session message.
    Unknown(u8),
}

/// Whether a client may send `tag` once its session runs: one table load (a slice's `contains`
/// is a library call, and this runs for every client message).
pub fn is_session_tag(tag: u8) -> bool {
    const TABLE: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < SESSION_TAGS.len() {
            t[SESSION_TAGS[i] as usize] = true;
            i += 1;
        }
        t
    };
    TABLE[tag as usize]
}

impl<'a> ClientMessage<'a> {
    pub fn decode(tag: u8, body: &'a [u8]) -> Self {
        Self::read(tag, body).unwrap_or(if is_session_tag(tag) { Self::Malformed } else { Self::Unknown(tag) })
    }

    fn read(tag: u8, body: &'a [u8]) -> Option<Self> {
        Some(match tag {
            QUERY => Self::Query { text: cstr(body)?.0 },
            PARSE => {
                let (name, rest) = cstr(body)?;
                let (query, types) = cstr(rest)?;
                Self::Parse { name, query, types }
            }
            BIND => {
                let (portal, rest) = cstr(body)?;
                let (statement, rest) = cstr(rest)?;
                Self::Bind { portal, statement, rest }
            }
            DESCRIBE => Self::Describe(target(body)?),
            CLOSE => Self::Close(target(body)?),
            EXECUTE => {
                let (portal, rest) = cstr(body)?;
                let n = rest.get(..4)?;
                Self::Execute { portal, max_rows: i32::from_be_bytes([n[0], n[1], n[2], n[3]]).max(0) as u32 }
            }
            SYNC => Self::Sync,
            FLUSH => Self::Flush,
            FUNCTION_CALL => Self::FunctionCall,
            COPY_DATA => Self::CopyData,
            COPY_DONE => Self::CopyDone,
            COPY_FAIL => Self::CopyFail,
            TERMINATE => Self::Terminate,
            _ => return None,
        })
    }
}

/// Parameter `index` (0-based) of a Bind's `rest`: its format code (0 text, 1 binary) and value;
/// None for a NULL, a missing parameter or a malformed body (every length is checked).
pub fn bind_parameter(rest: &[u8], index: usize) -> Option<(i16, &[u8])> {
    let i16_at = |at: usize| Some(i16::from_be_bytes(rest.get(at..at + 2)?.try_into().ok()?));
    let formats = usize::try_from(i16_at(0)?).ok()?;
    let format = match formats {
        0 => 0,
        1 => i16_at(2)?,
        _ if index < formats => i16_at(2 + 2 * index)?,
        _ => return None,
    };
    let mut at = 2 + 2 * formats;
    let params = usize::try_from(i16_at(at)?).ok()?;
    if index >= params {
        return None;
    }
    at += 2;
    for i in 0..=index {
        let len = i32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let len = usize::try_from(len).ok(); // -1: NULL
        if i == index {
            return rest.get(at..at + len?).map(|v| (format, v));
        }
        at += len.unwrap_or(0);
    }
    None
}

/// The type OID a Parse declared for parameter `index` (its types part: count, then OIDs); 0
/// when it declared none.
pub fn declared_type(types: &[u8], index: usize) -> u32 {
    let count = types.get(..2).map_or(0, |c| i16::from_be_bytes([c[0], c[1]]).max(0) as usize);
    if index >= count {
        return 0;
    }
    types.get(2 + 4 * index..6 + 4 * index).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Describe / Close body: 'S' or 'P', then a name.
pub fn target(body: &[u8]) -> Option<Target<'_>> {
    let (&kind, rest) = body.split_first()?;
    let name = cstr(rest)?.0;
    match kind {
        b'S' => Some(Target::Statement(name)),
        b'P' => Some(Target::Portal(name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_parameters_are_found_and_bounded() {
        // formats: 2 (text, binary); params: "42", NULL, 4 bytes; result formats: 0
        let mut b = vec![0, 2, 0, 0, 0, 1, 0, 3];
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(b"42");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&4i32.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        assert_eq!(bind_parameter(&b, 0), Some((0, &b"42"[..])));
        assert_eq!(bind_parameter(&b, 1), None, "NULL");
        assert_eq!(bind_parameter(&b, 2), None, "no format for it: two formats, three values");
        assert_eq!(bind_parameter(&b, 3), None);
        for cut in 0..b.len() {
            let _ = bind_parameter(&b[..cut], 0); // never panics on a cut body
        }
        let one_format = [0, 1, 0, 1, 0, 1, 0, 0, 0, 2, 0, 9];
        assert_eq!(bind_parameter(&one_format, 0), Some((1, &[0, 9][..])));
        assert_eq!(declared_type(&[0, 2, 0, 0, 0, 23, 0, 0, 0, 25], 1), 25);
        assert_eq!(declared_type(&[0, 1, 0, 0, 0, 23], 1), 0);
        assert_eq!(declared_type(&[], 0), 0);
    }

    #[test]
    fn decodes_what_pgpilot_inspects() {
        assert_eq!(ClientMessage::decode(QUERY, b"SELECT 1\0"), ClientMessage::Query { text: b"SELECT 1" });
        assert_eq!(
            ClientMessage::decode(PARSE, b"s1\0SELECT $1\0\0\x01\0\0\0\x17"),
            ClientMessage::Parse { name: b"s1", query: b"SELECT $1", types: b"\0\x01\0\0\0\x17" }
        );
        assert_eq!(
            ClientMessage::decode(BIND, b"\0s1\0\0\0\0\x01\0\0\0\x015\0\0"),
            ClientMessage::Bind { portal: b"", statement: b"s1", rest: b"\0\0\0\x01\0\0\0\x015\0\0" }
        );
        assert_eq!(ClientMessage::decode(DESCRIBE, b"P\0"), ClientMessage::Describe(Target::Portal(b"")));
        assert_eq!(ClientMessage::decode(CLOSE, b"Sabc\0"), ClientMessage::Close(Target::Statement(b"abc")));
        assert_eq!(
            ClientMessage::decode(EXECUTE, b"\0\0\0\0\x0a"),
            ClientMessage::Execute { portal: b"", max_rows: 10 }
        );
        assert_eq!(
            ClientMessage::decode(EXECUTE, b"\0\xff\xff\xff\xff"),
            ClientMessage::Execute { portal: b"", max_rows: 0 }
        );
        assert_eq!(ClientMessage::decode(SYNC, b""), ClientMessage::Sync);
    }

    #[test]
    fn hostile_bodies_are_malformed_never_a_panic() {
        for (tag, body) in [
            (QUERY, &b"no terminator"[..]),
            (PARSE, b"name only\0"),
            (BIND, b"\0"),
            (DESCRIBE, b""),
            (DESCRIBE, b"X\0"),
            (CLOSE, b"S"),
            (EXECUTE, b"\0\0\0"),
        ] {
            assert_eq!(ClientMessage::decode(tag, body), ClientMessage::Malformed, "{}", tag as char);
        }
        assert_eq!(ClientMessage::decode(b'Z', b""), ClientMessage::Unknown(b'Z'));
    }
}
