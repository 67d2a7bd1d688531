//! The PostgreSQL wire protocol as pgpilot reads it: message tags in separate frontend and backend
//! namespaces (b'D' is Describe from a client and DataRow from a server, b'C' Close and
//! CommandComplete), and typed zero-copy views over the bodies of the messages pgpilot inspects.
//! A view borrows the frame; nothing is copied or re-encoded unless a part must change (the
//! statement-name rewrite in `prepared::messages`).

pub mod backend;
pub mod frontend;

/// Reads a NUL-terminated string at the start of `b`; returns it and the rest. An empty string
/// (the unnamed statement or portal, most of what drivers send) is answered before the vectorised
/// search, whose set-up costs more than its scan of a short string.
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    if b.first() == Some(&0) {
        return Some((&[], &b[1..]));
    }
    let end = memchr::memchr(0, b)?;
    Some((&b[..end], &b[end + 1..]))
}
