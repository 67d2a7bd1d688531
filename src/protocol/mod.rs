//! The PostgreSQL wire protocol as pgpilot reads it: message tags in separate frontend and backend
//! namespaces (b'D' is Describe from a client and DataRow from a server, b'C' Close and
//! CommandComplete), and typed zero-copy views over the bodies of the messages pgpilot inspects.
//! A view borrows the frame; nothing is copied or re-encoded unless a part must change (the
//! statement-name rewrite in `net::messages`).

pub mod backend;
pub mod frontend;

/// Whether an encoding name (as a client sends it or a server reports it, NUL-terminated or
/// not) is UTF8: PostgreSQL ignores case and non-alphanumerics in encoding names (`utf-8`,
/// `Utf_8`) and reports UTF8, but keeps `UNICODE` as a client sent it (old JDBC drivers).
pub fn utf8_encoding(value: &[u8]) -> bool {
    let mut name = [0u8; 8];
    let mut len = 0;
    for b in value.iter().filter(|b| b.is_ascii_alphanumeric()) {
        if len == name.len() {
            return false;
        }
        name[len] = b.to_ascii_lowercase();
        len += 1;
    }
    matches!(&name[..len], b"utf8" | b"unicode")
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn utf8_is_named_as_postgresql_names_it() {
        for name in [&b"UTF8"[..], b"utf-8", b"Utf_8", b"UNICODE", b"unicode\0", b"UTF8\0"] {
            assert!(super::utf8_encoding(name), "{}", String::from_utf8_lossy(name));
        }
        for name in [&b"SJIS"[..], b"LATIN1", b"utf16", b"utf88", b"", b"unicodeunicode", b"SQL_ASCII"] {
            assert!(!super::utf8_encoding(name), "{}", String::from_utf8_lossy(name));
        }
    }
}
