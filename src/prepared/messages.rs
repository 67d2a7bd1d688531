//! Building the extended-protocol messages pgpilot sends itself or rewrites (statement names);
//! reading them is `protocol::frontend`'s.

use bytes::{BufMut, Bytes, BytesMut};

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
    frame(b'P', &[name.as_bytes(), b"\0", query, b"\0", types], out);
}

pub fn bind(out: &mut BytesMut, portal: &[u8], stmt: &str, rest: &[u8]) {
    frame(b'B', &[portal, b"\0", stmt.as_bytes(), b"\0", rest], out);
}

pub fn describe_statement(out: &mut BytesMut, name: &str) {
    frame(b'D', &[b"S", name.as_bytes(), b"\0"], out);
}

pub fn describe_portal(out: &mut BytesMut, name: &[u8]) {
    frame(b'D', &[b"P", name, b"\0"], out);
}

pub fn execute(out: &mut BytesMut, portal: &[u8], max_rows: u32) {
    frame(b'E', &[portal, b"\0", &max_rows.to_be_bytes()], out);
}

pub fn close_statement(out: &mut BytesMut, name: &str) {
    frame(b'C', &[b"S", name.as_bytes(), b"\0"], out);
}

/// Replies pgpilot gives itself.
pub fn parse_complete() -> Bytes {
    Bytes::from_static(&[b'1', 0, 0, 0, 4])
}

pub fn bind_complete() -> Bytes {
    Bytes::from_static(&[b'2', 0, 0, 0, 4])
}

pub fn no_data() -> Bytes {
    Bytes::from_static(&[b'n', 0, 0, 0, 4])
}

pub fn close_complete() -> Bytes {
    Bytes::from_static(&[b'3', 0, 0, 0, 4])
}

pub fn portal_suspended() -> Bytes {
    Bytes::from_static(&[b's', 0, 0, 0, 4])
}

/// ParameterDescription of a statement without parameters.
pub fn no_parameters() -> Bytes {
    Bytes::from_static(&[b't', 0, 0, 0, 6, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frontend::ClientMessage;

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
