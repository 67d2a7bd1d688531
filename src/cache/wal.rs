//! The few replication-protocol messages the invalidation stream reads and writes, and the lines
//! of PostgreSQL's `test_decoding` output plugin it understands. Everything here is parsed from
//! network input: every length is checked, and anything unexpected is `None` (the stream then
//! treats the transaction as having changed the whole database).
//!
//! Why test_decoding and not pgoutput: pgoutput needs a publication, and a publication that
//! publishes UPDATE/DELETE makes those statements fail (55000) on every table in it without a
//! replica identity; FOR ALL TABLES also needs a superuser. test_decoding ships with PostgreSQL,
//! needs neither, and its text names each changed table, which is all table-level invalidation
//! needs (docs/ARCHITECTURE.md, "Writes that bypass pgpilot").

use std::sync::Arc;

use super::scopes::WriteKind;

/// One CopyData payload of a logical replication stream.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamMessage<'a> {
    /// XLogData: the WAL position the data starts at, and one line of decoded output.
    Data { start: u64, line: &'a [u8] },
    /// Primary keepalive: the server's end of WAL sent so far, and whether it wants a reply now.
    Keepalive { end: u64, reply: bool },
}

pub fn stream_message(b: &[u8]) -> Option<StreamMessage<'_>> {
    let u64_at = |at: usize| Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?));
    match *b.first()? {
        b'w' if b.len() >= 25 => Some(StreamMessage::Data { start: u64_at(1)?, line: &b[25..] }),
        b'k' if b.len() >= 18 => Some(StreamMessage::Keepalive { end: u64_at(1)?, reply: b[17] != 0 }),
        _ => None,
    }
}

/// Standby status update (a CopyData message): everything up to `applied` is written, flushed and
/// applied here; `reply`: the server should answer at once with a keepalive.
pub fn status_update(applied: u64, reply: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(34);
    body.push(b'r');
    for _ in 0..3 {
        body.extend_from_slice(&applied.to_be_bytes());
    }
    // Microseconds since 2000-01-01; the server only logs it.
    let since_2000 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64 - 946_684_800_000_000);
    body.extend_from_slice(&since_2000.to_be_bytes());
    body.push(reply as u8);
    let mut frame = bytes::BytesMut::new();
    crate::net::messages::copy_data(&mut frame, &body);
    frame.to_vec()
}

/// "16/B374D848" as PostgreSQL prints an LSN.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// What one test_decoding line says.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a> {
    Begin,
    /// With the transaction id when the stream includes them.
    Commit(Option<u32>),
    /// A row of this table (unqualified, unquoted name) was inserted, updated or deleted, or
    /// these tables were truncated (one TRUNCATE names them all); then what the line says of it
    /// ("UPDATE: id[integer]:1 ...", read by `row_keys`).
    Tables(Vec<Arc<str>>, &'a [u8]),
    /// A logical decoding message (pg_logical_emit_message) or anything else: changes no table.
    Other,
    /// A line this parser cannot read: the transaction may have changed anything.
    Unknown,
}

/// Reads one line: "BEGIN 731", "COMMIT 731" (the id with include-xids on), "table public.t:
/// UPDATE: ...", "message: ...".
pub fn change(line: &[u8]) -> Change<'_> {
    if line == b"BEGIN" || line.starts_with(b"BEGIN ") {
        return Change::Begin;
    }
    if line == b"COMMIT" {
        return Change::Commit(None);
    }
    if let Some(xid) = line.strip_prefix(b"COMMIT ") {
        return Change::Commit(std::str::from_utf8(xid).ok().and_then(|x| x.trim().parse().ok()));
    }
    if line.starts_with(b"message:") {
        return Change::Other;
    }
    let Some(mut rest) = line.strip_prefix(b"table ") else { return Change::Unknown };
    let mut tables = Vec::with_capacity(1);
    loop {
        let Some((name, after)) = qualified_name(rest) else { return Change::Unknown };
        tables.push(name.into());
        match after {
            [b':', b' ', what @ ..] => return Change::Tables(tables, what),
            [b':', ..] => return Change::Tables(tables, &[]),
            [b',', b' ', more @ ..] => rest = more,
            _ => return Change::Unknown,
        }
    }
}

/// The values of `column` a row change names, as text (unquoted): the new row's for an INSERT,
/// the old key's for a DELETE, the new row's and (when the key changed, or with REPLICA
/// IDENTITY FULL) the old key's for an UPDATE. None when the line does not give them all (no
/// replica identity, a NULL or unchanged TOAST value, anything unexpected).
pub fn row_keys(what: &[u8], column: &str) -> Option<(WriteKind, Vec<String>)> {
    let (kind, mut rest) = if let Some(r) = what.strip_prefix(b"INSERT: ") {
        (WriteKind::Insert, r)
    } else if let Some(r) = what.strip_prefix(b"UPDATE: ") {
        (WriteKind::Update, r)
    } else {
        (WriteKind::Delete, what.strip_prefix(b"DELETE: ")?)
    };
    let mut out = Vec::with_capacity(2);
    if let Some(r) = rest.strip_prefix(b"old-key: ") {
        let (value, after) = tuple_value(r, column, b"new-tuple: ")?;
        out.push(value?);
        rest = after;
    }
    if kind == WriteKind::Delete && !out.is_empty() {
        return None; // (a DELETE's tuple is its key: never labelled)
    }
    let (value, _) = tuple_value(rest, column, b"")?;
    out.push(value?);
    Some((kind, out))
}

/// Reads `name[type]:value` items up to `stop` (or the end): `column`'s value (None for NULL or
/// unchanged TOAST, or when absent) and what follows the stop.
#[allow(clippy::type_complexity)]
fn tuple_value<'a>(mut s: &'a [u8], column: &str, stop: &[u8]) -> Option<(Option<String>, &'a [u8])> {
    let mut found = None;
    loop {
        if s.is_empty() && stop.is_empty() {
            return Some((found, s));
        }
        if !stop.is_empty() && s.starts_with(stop) {
            return Some((found, &s[stop.len()..]));
        }
        let (name, rest) = if s.first() == Some(&b'"') {
            quoted(s, b'"')?
        } else {
            let end = s.iter().position(|&c| c == b'[')?;
            (String::from_utf8(s[..end].to_vec()).ok()?, &s[end..])
        };
        let rest = rest.strip_prefix(b"[")?;
        let type_end = rest.windows(2).position(|w| w == b"]:")?;
        let rest = &rest[type_end + 2..];
        let (value, rest) = match rest.first() {
            Some(b'\'') => {
                let (v, r) = quoted(rest, b'\'')?;
                (Some(v), r)
            }
            _ => {
                let end = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
                let v = std::str::from_utf8(&rest[..end]).ok()?;
                ((!matches!(v, "null" | "unchanged-toast-datum")).then(|| v.to_string()), &rest[end..])
            }
        };
        if name == column {
            found = value;
        }
        s = rest.strip_prefix(b" ").unwrap_or(rest);
    }
}

/// A `q`-quoted text with doubled quotes inside: the text and what follows.
fn quoted(s: &[u8], q: u8) -> Option<(String, &[u8])> {
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        match (*s.get(i)?, s.get(i + 1)) {
            (c, Some(&n)) if c == q && n == q => {
                out.push(q);
                i += 2;
            }
            (c, _) if c == q => return Some((String::from_utf8(out).ok()?, &s[i + 1..])),
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// `schema.table` (each part bare or double-quoted with "" for a quote): the table part,
/// unquoted, and what follows it.
fn qualified_name(s: &[u8]) -> Option<(String, &[u8])> {
    let (_schema, rest) = identifier(s)?;
    let rest = rest.strip_prefix(b".")?;
    identifier(rest)
}

fn identifier(s: &[u8]) -> Option<(String, &[u8])> {
    if s.first() == Some(&b'"') {
        let mut out = Vec::new();
        let mut i = 1;
        loop {
            match (s.get(i)?, s.get(i + 1)) {
                (b'"', Some(b'"')) => {
                    out.push(b'"');
                    i += 2;
                }
                (b'"', _) => return Some((String::from_utf8(out).ok()?, &s[i + 1..])),
                (&c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
    }
    let end = s.iter().position(|&c| matches!(c, b'.' | b':' | b','))?;
    (end > 0).then(|| Some((String::from_utf8(s[..end].to_vec()).ok()?, &s[end..]))).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_test_decoding() {
        assert_eq!(change(b"BEGIN"), Change::Begin);
        assert_eq!(change(b"COMMIT"), Change::Commit(None));
        assert_eq!(change(b"COMMIT 731"), Change::Commit(Some(731)));
        assert_eq!(change(b"BEGIN 731"), Change::Begin);
        let t = |n: &str, w: &'static [u8]| Change::Tables(vec![n.into()], w);
        let u = b"UPDATE: id[uuid]:'a' title[text]:'x: y'";
        assert_eq!(change(b"table public.work_items: UPDATE: id[uuid]:'a' title[text]:'x: y'"), t("work_items", u));
        assert_eq!(change(b"table public.t: TRUNCATE: (no-flags)"), t("t", b"TRUNCATE: (no-flags)"));
        assert_eq!(
            change(br#"table "My Schema"."a.b:""c": INSERT: x[integer]:1"#),
            t(r#"a.b:"c"#, b"INSERT: x[integer]:1")
        );
        let both = Change::Tables(vec!["a".into(), "b".into()], b"TRUNCATE: restart_seqs cascade");
        assert_eq!(change(b"table public.a, s.b: TRUNCATE: restart_seqs cascade"), both);
        assert_eq!(change(b"message: transactional: 1 prefix: p, sz: 1 content:x"), Change::Other);
        assert_eq!(change(b"table t: INSERT"), Change::Unknown, "always schema-qualified");
        assert_eq!(change(b"table public.\"open"), Change::Unknown);
        assert_eq!(change(b"something else"), Change::Unknown);
        assert_eq!(change(b""), Change::Unknown);
    }

    #[test]
    fn row_keys_of_each_change() {
        let keys =
            |w: &[u8], c: &str| row_keys(w, c).map(|(k, v)| (k, v.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
        let ins = b"INSERT: k[text]:'it''s a ]: key' v[bigint]:5 \"odd [col]\"[integer[]]:'{1,2}'";
        assert_eq!(keys(ins, "k"), Some((WriteKind::Insert, vec!["it's a ]: key".into()])));
        assert_eq!(keys(ins, "v"), Some((WriteKind::Insert, vec!["5".into()])));
        assert_eq!(keys(ins, "odd [col]"), Some((WriteKind::Insert, vec!["{1,2}".into()])));
        assert_eq!(keys(ins, "missing"), None);
        let upd = b"UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 t[text]:null";
        assert_eq!(keys(upd, "id"), Some((WriteKind::Update, vec!["1".into(), "2".into()])));
        assert_eq!(keys(upd, "t"), None, "NULL");
        assert_eq!(
            keys(b"UPDATE: id[integer]:7 b[text]:unchanged-toast-datum", "id"),
            Some((WriteKind::Update, vec!["7".into()]))
        );
        assert_eq!(keys(b"DELETE: id[integer]:3", "id"), Some((WriteKind::Delete, vec!["3".into()])));
        assert_eq!(keys(b"DELETE: (no-tuple-data)", "id"), None);
        assert_eq!(keys(b"TRUNCATE: (no-flags)", "id"), None);
        for cut in 0..ins.len() {
            let _ = row_keys(&ins[..cut], "k"); // never panics on a cut line
        }
    }

    #[test]
    fn stream_messages_and_lsns() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&7u64.to_be_bytes());
        w.extend_from_slice(&[0; 16]);
        w.extend_from_slice(b"COMMIT");
        assert_eq!(stream_message(&w), Some(StreamMessage::Data { start: 7, line: b"COMMIT" }));
        let mut k = vec![b'k'];
        k.extend_from_slice(&9u64.to_be_bytes());
        k.extend_from_slice(&[0; 8]);
        k.push(1);
        assert_eq!(stream_message(&k), Some(StreamMessage::Keepalive { end: 9, reply: true }));
        for cut in 0..k.len() {
            assert_eq!(stream_message(&k[..cut]), None, "cut at {cut}");
        }
        assert_eq!(stream_message(&w[..24]), None);
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("x/1"), None);
        let s = status_update(5, true);
        assert_eq!((s[0], s.len(), s[s.len() - 1]), (b'd', 39, 1));
    }
}
