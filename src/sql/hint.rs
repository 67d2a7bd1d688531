//! pgpilot's comment directives: `/* pgpilot:nocache */` or `/* pgpilot:cache ttl=N */` (seconds;
//! `cache` alone: the default TTL), in a block or line comment anywhere in the text. Read once
//! per new text (the session keeps it with the text's scan, so a text read again with other
//! literals costs nothing here), and only from comments: a string literal holding the marker is
//! data, and literals are what a known text's later runs may change.

use super::tokens::{dollar, skip_block_comment, skip_line_comment, skip_quoted, IDENT_REST};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Hint {
    #[default]
    None,
    NoCache,
    Ttl(u64),
}

/// The first directive in a comment of `sql`. Comments and strings end where the token pass
/// ends them (its own functions; strings read with standard_conforming_strings on: a text with a
/// backslash is opaque when it is off, and never cached); the bytes between are stepped one by
/// one, which reads a few texts PostgreSQL rejects (`1$$x$$`) differently, never a valid one.
pub fn find(sql: &[u8]) -> Hint {
    // Nearly every text has no marker at all: one vectorised search rules it out.
    if memchr::memmem::find(sql, MARKER).is_none() {
        return Hint::None;
    }
    let mut i = 0;
    while i < sql.len() {
        let (c, next) = (sql[i], sql.get(i + 1).copied());
        let end = match (c, next) {
            (b'-', Some(b'-')) => skip_line_comment(sql, i),
            (b'/', Some(b'*')) => skip_block_comment(sql, i),
            (b'\'', _) => {
                i = skip_quoted(sql, i, b'\'', false);
                continue;
            }
            (b'e' | b'E', Some(b'\'')) if i == 0 || !IDENT_REST[sql[i - 1] as usize] => {
                i = skip_quoted(sql, i + 1, b'\'', true);
                continue;
            }
            (b'"', _) => {
                i = skip_quoted(sql, i, b'"', false);
                continue;
            }
            (b'$', _) if i == 0 || !IDENT_REST[sql[i - 1] as usize] => {
                i = dollar(sql, i).0.max(i + 1);
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        if let Some(h) = in_comment(&sql[i..end]) {
            return h;
        }
        i = end;
    }
    Hint::None
}

const MARKER: &[u8] = b"pgpilot:";

/// The directive a comment holds, if any.
fn in_comment(comment: &[u8]) -> Option<Hint> {
    let at = memchr::memmem::find(comment, MARKER)?;
    let rest = &comment[at + MARKER.len()..];
    if rest.starts_with(b"nocache") {
        return Some(Hint::NoCache);
    }
    let rest = rest.strip_prefix(b"cache")?.trim_ascii_start();
    match rest.strip_prefix(b"ttl=") {
        Some(n) => {
            let digits = n.iter().take_while(|c| c.is_ascii_digit()).count();
            std::str::from_utf8(&n[..digits]).ok().and_then(|d| d.parse().ok()).map(Hint::Ttl)
        }
        None => Some(Hint::Ttl(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::{find, Hint};

    #[test]
    fn directives_in_comments() {
        assert_eq!(find(b"SELECT 1 /* pgpilot:nocache */"), Hint::NoCache);
        assert_eq!(find(b"/* pgpilot:cache ttl=60 */ SELECT 1"), Hint::Ttl(60));
        assert_eq!(find(b"/* pgpilot:cache */ SELECT 1"), Hint::Ttl(0));
        assert_eq!(find(b"SELECT 1"), Hint::None);
        assert_eq!(find(b"/* pgpilot:cache ttl=x */"), Hint::None);
        assert_eq!(find(b"SELECT 1 -- pgpilot:nocache"), Hint::NoCache);
        assert_eq!(find(b"SELECT 1 /* outer /* pgpilot:cache ttl=5 */ */"), Hint::Ttl(5), "nested");
        assert_eq!(find(b"/* other */ SELECT 1 -- pgpilot:cache ttl=7\n"), Hint::Ttl(7), "the one that has it");
        // A line comment ends at a carriage return too: what follows is a literal again.
        assert_eq!(find(b"SELECT 1 -- x\r AND s <> '/* pgpilot:cache ttl=9 */'"), Hint::None);
    }

    #[test]
    fn literals_and_identifiers_are_not_comments() {
        for text in [
            &b"SELECT 'pgpilot:nocache'"[..],
            b"SELECT '/* pgpilot:nocache */' FROM t",
            b"SELECT 'it''s -- pgpilot:nocache' FROM t",
            b"SELECT E'\\' -- pgpilot:nocache' FROM t",
            b"SELECT \"/* pgpilot:nocache */\" FROM t",
            b"SELECT $$ -- pgpilot:nocache $$ FROM t",
            b"SELECT $q$ /* pgpilot:nocache */ $q$ FROM t",
            b"SELECT '-- unterminated pgpilot:nocache",
        ] {
            assert_eq!(find(text), Hint::None, "{}", String::from_utf8_lossy(text));
        }
        // After a literal the scan goes on: a real comment still counts.
        assert_eq!(find(b"SELECT 'a--b' /* pgpilot:nocache */"), Hint::NoCache);
        assert_eq!(find(b"SELECT $1 -- pgpilot:cache ttl=3"), Hint::Ttl(3));
        assert_eq!(find(b"SELECT x$y -- pgpilot:nocache"), Hint::NoCache, "$ inside an identifier");
    }
}
