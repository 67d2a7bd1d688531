//! The key literal of a simple-protocol statement (psql, pgbench -M simple, drivers that inline
//! values): the analysis is shared by every text of one shape, so the value is read from the text
//! itself, by a small lexer, and only where that is unambiguous: exactly one `column = literal`
//! (a plain number or a '...' string), and no other comparison of that column. Anything else is
//! None, and the statement stays table-level.

use std::borrow::Cow;

/// A token as far as this needs: the column's name, `=`, a literal, or anything else. Borrowed
/// from the text (owned only for a quoted text with doubled quotes): this runs for every
/// simple-protocol write and keyed read, several per transaction.
#[derive(Debug, PartialEq, Eq)]
enum Tok<'a> {
    /// An identifier: unquoted (compared folded to lower case, as PostgreSQL folds ASCII) or
    /// quoted (exact).
    Ident {
        text: Cow<'a, str>,
        quoted: bool,
    },
    Equals,
    /// A plain number or the value of a '...' string.
    Literal(Cow<'a, str>),
    /// An operator other than `=` (a literal followed by one is part of an expression).
    Operator,
    Other,
}

impl Tok<'_> {
    fn names(&self, column: &str) -> bool {
        match self {
            Tok::Ident { text, quoted: true } => text == column,
            Tok::Ident { text, quoted: false } => {
                text.len() == column.len() && text.bytes().zip(column.bytes()).all(|(a, b)| a.to_ascii_lowercase() == b)
            }
            _ => false,
        }
    }
}

/// The one literal `column = literal` gives in `sql`; None when there is none or more than one,
/// when the column is also compared another way, or when the text is not read here.
pub fn key_literal(sql: &str, column: &str) -> Option<String> {
    let toks = lex(sql)?;
    let mut found: Option<&Cow<'_, str>> = None;
    for (i, t) in toks.iter().enumerate() {
        if !t.names(column) {
            continue;
        }
        let before_eq = i > 0 && toks[i - 1] == Tok::Equals;
        let plain = match (toks.get(i + 1), toks.get(i + 2), toks.get(i + 3)) {
            (Some(Tok::Equals), Some(Tok::Literal(v)), next) if !before_eq && !matches!(next, Some(Tok::Operator)) => {
                Some(v)
            }
            (Some(Tok::Equals), ..) => return None,
            _ if before_eq => return None,
            _ => None,
        };
        // Two: which one is the conjunct is not known here.
        if plain.is_some_and(|v| found.replace(v).is_some()) {
            return None;
        }
    }
    found.map(|v| v.to_string())
}

fn lex(sql: &str) -> Option<Vec<Tok<'_>>> {
    let b = sql.as_bytes();
    let mut out = Vec::with_capacity(24);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = block_comment_end(b, i)?,
            b'\'' => {
                let (value, end) = quoted(sql, i, b'\'')?;
                out.push(Tok::Literal(value));
                i = end;
            }
            b'"' => {
                let (text, end) = quoted(sql, i, b'"')?;
                out.push(Tok::Ident { text, quoted: true });
                i = end;
            }
            b'$' => return None, // a parameter or a dollar-quoted string: not read here
            b'0'..=b'9' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                    i += 1;
                }
                let text = &sql[start..i];
                let plain = text.bytes().all(|c| c.is_ascii_digit());
                out.push(if plain { Tok::Literal(Cow::Borrowed(text)) } else { Tok::Other });
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while i < b.len() && super::tokens::IDENT_REST[b[i] as usize] {
                    i += 1;
                }
                out.push(Tok::Ident { text: Cow::Borrowed(&sql[start..i]), quoted: false });
            }
            _ if is_operator(c) => {
                while i < b.len() && is_operator(b[i]) {
                    i += 1;
                }
                out.push(if i - start == 1 && c == b'=' { Tok::Equals } else { Tok::Operator });
            }
            _ => {
                i += 1;
                sql.get(start..i)?; // (a byte inside a character: not read here)
                out.push(Tok::Other);
            }
        }
    }
    Some(out)
}

fn is_operator(c: u8) -> bool {
    matches!(
        c,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

/// A `q`-quoted text with doubled quotes inside: its value (borrowed unless a quote was doubled)
/// and the index after it.
fn quoted(sql: &str, at: usize, q: u8) -> Option<(Cow<'_, str>, usize)> {
    let b = sql.as_bytes();
    let mut i = at + 1;
    let mut doubled = false;
    loop {
        match (*b.get(i)?, b.get(i + 1)) {
            (c, Some(&n)) if c == q && n == q => {
                doubled = true;
                i += 2;
            }
            (c, _) if c == q => break,
            _ => i += 1,
        }
    }
    let inner = &sql[at + 1..i];
    let value = if doubled {
        let q = q as char;
        Cow::Owned(inner.replace(&format!("{q}{q}"), &q.to_string()))
    } else {
        Cow::Borrowed(inner)
    };
    Some((value, i + 1))
}

fn block_comment_end(b: &[u8], at: usize) -> Option<usize> {
    let (mut depth, mut i) = (0usize, at);
    loop {
        match (b.get(i)?, b.get(i + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::key_literal;

    #[test]
    fn reads_the_one_key_literal() {
        let k = |sql: &str| key_literal(sql, "id");
        assert_eq!(k("SELECT v FROM t WHERE id = 42").as_deref(), Some("42"));
        assert_eq!(k("select v from t where t.ID=42 and x = 1").as_deref(), Some("42"));
        assert_eq!(k("SELECT v FROM t WHERE \"id\" = 'it''s' /* id = 1 */ -- id = 2").as_deref(), Some("it's"));
        assert_eq!(k("SELECT v FROM t WHERE id = '7'::int").as_deref(), Some("7"));
        assert_eq!(k("UPDATE t SET v = 'id = 3' WHERE id = 9").as_deref(), Some("9"), "inside a string is not code");
        assert_eq!(k("SELECT v FROM t WHERE id = 1 OR id = 2"), None, "two");
        assert_eq!(k("SELECT v FROM t WHERE 5 = id AND id = 5"), None, "compared another way too");
        assert_eq!(k("SELECT v FROM t WHERE id = 5 + 1"), None, "an expression");
        assert_eq!(k("SELECT v FROM t WHERE id = -5"), None);
        assert_eq!(k("SELECT v FROM t WHERE id = 5.0"), None);
        assert_eq!(k("SELECT v FROM t WHERE id = E'5'"), None);
        assert_eq!(k("SELECT v FROM t WHERE id = $$5$$"), None);
        assert_eq!(k("SELECT v FROM t WHERE \"ID\" = 5"), None, "a quoted name is exact");
        assert_eq!(k("SELECT v FROM t WHERE id >= 5"), None);
        assert_eq!(k("SELECT v FROM t WHERE x = 'unterminated"), None);
        assert_eq!(k("SELECT v FROM t /* open"), None);
    }
}
