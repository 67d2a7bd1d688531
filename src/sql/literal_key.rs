//! The key literal of a simple-protocol statement (psql, pgbench -M simple, drivers that inline
//! values): the analysis is shared by every text of one shape, so the value is read from each
//! text, and only where that is unambiguous: the column is named exactly once, as `column =
//! literal` (a plain number or a '...' string) with nothing binding the literal to anything else.
//! The parse tree's top-level `column = constant` (`keyed`) names the column too, so with one
//! mention the two are the same comparison (a second mention, `(id) = 5 AND (id = 7 OR ...)` or
//! merely `SELECT id ...`, leaves the statement table-level). Which literal that is is a fact of the
//! shape, found once per shape (`position`); the shape tokenizer records where each text's
//! literals are (`tokens::Literals`), so a message's key costs a slice and a check (`value`),
//! not a second pass over its text. Anything else is None, and the statement stays table-level.

use std::borrow::Cow;

use super::tokens::Literals;

/// Which of a shape's literals (`?`) `column = literal` gives, and how many `?` the shape has
/// (a `?` operator, jsonb's, is a `?` too: a text whose literal count differs is not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    at: u8,
    placeholders: u16,
}

/// A shape's token as far as this needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// A lower-cased word, or a quoted identifier (its quotes kept).
    Ident(&'a str),
    Equals,
    Literal,
    /// An operator other than `=` (a literal next to one is part of an expression).
    Operator,
    Other,
}

impl Tok<'_> {
    fn names(&self, column: &str) -> bool {
        match *self {
            Tok::Ident(q) if q.starts_with('"') => {
                unquote(q.as_bytes(), b'"').is_some_and(|v| *v == *column.as_bytes())
            }
            Tok::Ident(w) => {
                w.len() == column.len() && w.bytes().zip(column.bytes()).all(|(a, b)| a.to_ascii_lowercase() == b)
            }
            _ => false,
        }
    }
}

/// What the tokens after a name of the column have shown so far.
#[derive(Clone, Copy)]
enum Seen {
    Nothing,
    Column,
    Equals,
    Literal(usize),
}

/// The literal `column = literal` gives in a statement of this `shape`; None when the column is
/// named other than exactly once in that form, or when the shape is not read here. Runs once
/// per shape (its analysis keeps the answer).
pub fn position(shape: &str, column: &str) -> Option<Position> {
    if memchr::memmem::find(shape.as_bytes(), b"u & \"").is_some() {
        return None; // U&"\0069d": an identifier whose name this does not decode
    }
    let mut lexer = ShapeLexer { b: shape.as_bytes(), shape, i: 0 };
    let mut mentions = 0;
    let (mut found, mut seen, mut after_equals, mut literals) = (None, Seen::Nothing, false, 0usize);
    while let Some(t) = lexer.next_token()? {
        seen = match (seen, t) {
            (Seen::Column, Tok::Equals) => Seen::Equals,
            (Seen::Equals, Tok::Literal) => Seen::Literal(literals),
            // An expression, or adjacent strings (`'a'` newline `'b'` is one value, 'ab').
            (Seen::Equals, _) | (Seen::Literal(_), Tok::Operator | Tok::Literal) => return None,
            (Seen::Literal(at), _) => {
                if found.replace(at).is_some() {
                    return None; // two: which one is the conjunct is not known here
                }
                Seen::Nothing
            }
            _ => Seen::Nothing,
        };
        if t.names(column) {
            mentions += 1;
            if after_equals || mentions > 1 {
                return None; // `literal = column`, or a second mention
            }
            seen = Seen::Column;
        }
        after_equals = t == Tok::Equals;
        literals += usize::from(t == Tok::Literal);
    }
    let at = match seen {
        Seen::Equals => return None,
        Seen::Literal(_) if found.is_some() => return None, // two
        Seen::Literal(at) => at,
        _ => found?,
    };
    Some(Position { at: u8::try_from(at).ok()?, placeholders: u16::try_from(literals).ok()? })
}

/// The key's value in one text of the shape (`literals`: where the tokenizer found the text's
/// literals): a plain number, or a '...' string without backslashes (whose meaning depends on
/// standard_conforming_strings); None for anything else (E'..', $$..$$, 5.0, 1e3). Bytes: the
/// caller checks a text key's encoding (`scopes::canonical_text`), and only the key's.
pub fn value<'a>(text: &'a [u8], literals: &Literals, p: Position) -> Option<Cow<'a, [u8]>> {
    if literals.count() != usize::from(p.placeholders) {
        return None;
    }
    let raw = text.get(literals.get(usize::from(p.at))?)?;
    match raw.first()? {
        b'0'..=b'9' if raw.iter().all(u8::is_ascii_digit) => Some(Cow::Borrowed(raw)),
        b'\'' if !raw.contains(&b'\\') => unquote(raw, b'\''),
        _ => None,
    }
}

/// The value of a `q`-quoted token: None unless it is exactly one quoted text (every inner
/// quote doubled).
fn unquote(raw: &[u8], q: u8) -> Option<Cow<'_, [u8]>> {
    let inner = raw.strip_prefix(&[q])?.strip_suffix(&[q])?;
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == q {
            if inner.get(i + 1) != Some(&q) {
                return None; // a lone quote: not one quoted text
            }
            out.get_or_insert_with(|| inner[..i].to_vec()).push(q);
            i += 2;
            continue;
        }
        if let Some(o) = &mut out {
            o.push(inner[i]);
        }
        i += 1;
    }
    Some(out.map_or(Cow::Borrowed(inner), Cow::Owned))
}

/// Tokens of a shape: words, `?`, quoted identifiers and single punctuation characters, one
/// space apart (comments and strings are gone, keywords lower-cased).
struct ShapeLexer<'a> {
    b: &'a [u8],
    shape: &'a str,
    i: usize,
}

impl<'a> ShapeLexer<'a> {
    /// The next token: Ok(None) at the end, None when the shape is not read here.
    fn next_token(&mut self) -> Option<Option<Tok<'a>>> {
        let b = self.b;
        while b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
        let start = self.i;
        let Some(&c) = b.get(start) else { return Some(None) };
        let mut i = start + 1;
        let tok = match c {
            b'?' => Tok::Literal,
            b'$' | b'\'' => return None, // a parameter (or a string the tokenizer did not close)
            b'"' => {
                loop {
                    match (b.get(i)?, b.get(i + 1)) {
                        (b'"', Some(b'"')) => i += 2,
                        (b'"', _) => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                Tok::Ident(self.shape.get(start..i)?)
            }
            _ if super::tokens::IDENT_REST[c as usize] && !c.is_ascii_digit() => {
                while i < b.len() && super::tokens::IDENT_REST[b[i] as usize] {
                    i += 1;
                }
                Tok::Ident(self.shape.get(start..i)?)
            }
            b'=' if b.get(i).is_none_or(|&n| !is_operator(n)) => Tok::Equals,
            _ if is_operator(c) => {
                while i < b.len() && is_operator(b[i]) {
                    i += 1;
                }
                Tok::Operator
            }
            _ => Tok::Other,
        };
        self.i = i;
        Some(Some(tok))
    }
}

fn is_operator(c: u8) -> bool {
    matches!(
        c,
        b'+' | b'-' | b'*' | b'/' | b'<' | b'>' | b'=' | b'~' | b'!' | b'@' | b'#' | b'%' | b'^' | b'&' | b'|' | b'`'
    )
}

#[cfg(test)]
mod tests {
    use super::{position, value};
    use crate::sql::tokens::shapes;

    /// The whole path a simple Query's key takes: tokenized, the shape's position, the value.
    fn key_literal(sql: &str, column: &str) -> Option<String> {
        let [s] = shapes(sql).try_into().ok()?;
        let v = value(sql.as_bytes(), &s.literals, position(&s.text, column)?)?;
        String::from_utf8(v.into_owned()).ok()
    }

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
        assert_eq!(k("SELECT v FROM t WHERE id = 3 AND x = id"), None, "compared another way after");
        assert_eq!(k("UPDATE t SET v = 1 WHERE id ="), None);
        assert_eq!(k("DELETE FROM t WHERE id = 3 -- id = 4").as_deref(), Some("3"));
        assert_eq!(k("DELETE FROM t WHERE id = 3 AND id = 3"), None, "two, even equal");
        assert_eq!(k("SELECT v FROM t WHERE data ? 'k' AND id = 5"), None, "a ? operator: literals not counted");
        assert_eq!(k("SELECT v FROM t WHERE (id) = 5 AND (id = 7 OR v IS NULL)"), None, "the top-level one is hidden");
        assert_eq!(k("SELECT id, v FROM t WHERE id = 5"), None, "a second mention (the price of the rule)");
        assert_eq!(k("SELECT v FROM t WHERE id OPERATOR(pg_catalog.=) 5 AND x = 1"), None);
        assert_eq!(k("SELECT v FROM t WHERE U&\"\\0069d\" = 5 AND x IN (SELECT x FROM u WHERE u.id = 7)"), None);
        assert_eq!(k("SELECT v FROM t WHERE id = (5)"), None);
        assert_eq!(k("SELECT v FROM t WHERE id = 'a'\n'b'"), None, "adjacent strings are one value");
        assert_eq!(k("SELECT v FROM t WHERE id = 'a\\'"), None, "a backslash: its meaning depends on a setting");
        assert_eq!(k("SELECT v FROM t WHERE id = 'it''"), None, "unterminated");
        assert_eq!(k("SELECT v FROM t WHERE id = 1; SELECT 2"), None, "two statements");
        assert_eq!(k("SELECT v FROM t WHERE \"a\"\"b\" = 1 AND id = 2").as_deref(), Some("2"));
        let many = "SELECT v FROM t WHERE a = 1 AND b = 2 AND c = 3 AND d = 4 AND e = 5 AND f = 6 AND g = 7 AND h = 8";
        assert_eq!(k(&format!("{many} AND id = 9")), None, "past the literals kept");
        assert_eq!(k(&format!("SELECT v FROM t WHERE id = 9 AND {}", &many[22..])).as_deref(), Some("9"));
        let far = format!("SELECT v FROM t WHERE v <> '{}' AND id = 9", "x".repeat(70_000));
        assert_eq!(k(&far), None, "past the first 64 KiB");
    }
}
