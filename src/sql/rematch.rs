//! Whether a text is an earlier text with other literal values, without a token pass. A session
//! mostly sends a few statement templates with new literals each time (pgbench -M simple, ORMs
//! that inline values): comparing the bytes between the earlier text's literals and reading only
//! the new literals costs a fraction of `tokens::shapes_with` (which builds the shape string), and
//! the earlier text's analysis, scan and statement bounds stay valid.
//!
//! Why a match means "same shape": the token pass is a left-to-right scan whose state between
//! tokens depends only on the tokens before, never on a literal's value (its statement nesting
//! included). Where the bytes before a literal are identical, it reaches the
//! literal's start in the same state; a literal whose first byte is of the same kind (a digit for a
//! digit, else the same byte) makes every look-ahead of the token before it decide alike; the new
//! literal is cut by the same function the token pass uses (`tokens::literal_at`), and the bytes
//! after it are compared again. The test below checks this against `shapes` on mutated texts.

use super::tokens::{literal_at, Literals};

/// The literals of `new` when it is `old` (valid UTF-8, whose literals, all of them, are
/// `old_literals`) with other literal values, and valid UTF-8 too; `None` when it is not, or when
/// `old` has more literals than are kept.
pub fn rematch(old: &[u8], old_literals: &Literals, new: &[u8], backslash_quotes: bool) -> Option<Literals> {
    if old_literals.count() > Literals::KEPT || new.len() > usize::from(u16::MAX) {
        return None;
    }
    let mut found = Literals::default();
    let (mut o, mut n) = (0, 0);
    for k in 0..old_literals.count() {
        let span = old_literals.get(k)?;
        let same = old.get(o..span.start)?;
        if new.get(n..n + same.len())? != same {
            return None;
        }
        n += same.len();
        let (was, is) = (*old.get(span.start)?, *new.get(n)?);
        if !(was == is || (was.is_ascii_digit() && is.is_ascii_digit())) {
            return None;
        }
        let end = literal_at(new, n, backslash_quotes)?;
        // The bytes between literals are the old text's, cut at ASCII bytes: the new text is
        // valid UTF-8 when its literals are.
        let literal = &new[n..end];
        if !literal.is_ascii() {
            std::str::from_utf8(literal).ok()?;
        }
        found.push(n, end);
        (o, n) = (span.end, end);
    }
    (new.get(n..)? == old.get(o..)?).then_some(found)
}

/// Where a position of the old text between literals (a statement's start or end) is in the new
/// one: moved by how much longer or shorter each literal before it became.
pub fn shift(old: &Literals, new: &Literals, pos: usize) -> usize {
    let mut at = pos;
    for k in 0..old.count().min(Literals::KEPT) {
        match (old.get(k), new.get(k)) {
            (Some(o), Some(n)) if o.end <= pos => at = at + n.len() - o.len(),
            _ => break,
        }
    }
    at
}

/// Every literal of a text, over all its statements (the token pass keeps them per statement).
pub fn all_literals(shapes: &[super::tokens::Shape]) -> Option<Literals> {
    let mut all = Literals::default();
    for shape in shapes {
        for k in 0..shape.literals.count() {
            let span = shape.literals.get(k)?;
            all.push(span.start, span.end);
        }
    }
    (all.count() <= Literals::KEPT).then_some(all)
}

#[cfg(test)]
mod tests {
    use super::{all_literals, rematch, shift};
    use crate::sql::tokens::shapes_with;

    const TEXTS: &[&str] = &[
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
        "UPDATE pgbench_accounts SET abalance = abalance + -4005 WHERE aid = 41324;",
        "INSERT INTO h (tid, bid, aid, delta, mtime) VALUES (3, 1, 7, 4005, CURRENT_TIMESTAMP);",
        "BEGIN; SELECT ';', 5; COMMIT;;",
        "SELECT v FROM kv WHERE k = E'\\'' UNION ALL SELECT v FROM kv2 WHERE k = ''",
        "SELECT 'a' /* nested /* comment */ still */ FROM t WHERE x=.5",
        "SELECT $a$ it's $a$, 1 FROM t WHERE y = x'ff' AND z = n'q' -- c 'x'\n AND w = 1.5e-3",
        "SELECT \"a\"\"b\", e'\\\\' , 'b''c', $1 FROM t1 WHERE a.b=5",
        "SELECT 1e+5, 5'x', U&'d\\0061t' FROM t",
        "SELECT a'1', b FROM t WHERE c=d'2'",
    ];
    /// Literal values, bytes that end or start tokens, and comment and quote starts.
    const PIECES: &[&str] = &[
        "0", "12345", "'x'", "'it''s'", "1.5e-3", "$$a;b$$", "E'\\''", "x'ff'", ".5", "'--'", "5abc", "'", "\"", "-",
        "/*", "*/", "$", "$1", ";", " ", "e", "E'", "--", "\n", "a", "'a\\'", "1e", "+",
    ];

    /// A small deterministic generator: the test must say the same thing every run.
    fn next(state: &mut u64) -> usize {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 16) as usize
    }

    /// `text` with one literal replaced, or one piece put in or one byte taken out somewhere.
    fn mutate(text: &str, lits: &crate::sql::tokens::Literals, state: &mut u64) -> String {
        let piece = PIECES[next(state) % PIECES.len()];
        let (start, end) = match next(state) % 3 {
            0 if lits.count() > 0 => {
                let span = lits.get(next(state) % lits.count()).unwrap();
                (span.start, span.end)
            }
            1 => {
                let at = next(state) % (text.len() + 1);
                (at, at)
            }
            _ => {
                let at = next(state) % text.len();
                (at, at + 1)
            }
        };
        let (start, end) = (start.min(text.len()), end.min(text.len()));
        if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            return text.to_string();
        }
        format!("{}{piece}{}", &text[..start], &text[end..])
    }

    /// Whenever `rematch` says a text is an earlier one with other literals, the token pass says
    /// the same: equal shapes, the same literal spans, statement bounds where `shift` puts them.
    /// And literal-for-literal replacements of the same kind are found.
    #[test]
    fn rematch_agrees_with_the_token_pass() {
        let (mut state, mut matched, mut refused) = (0x9e37_79b9_7f4a_7c15_u64, 0, 0);
        for backslash in [false, true] {
            for &text in TEXTS {
                let old = shapes_with(text, backslash);
                let Some(lits) = all_literals(&old) else { continue };
                for _ in 0..3000 {
                    let mut new = mutate(text, &lits, &mut state);
                    if next(&mut state) % 2 == 0 {
                        new = mutate(&new, &lits, &mut state);
                    }
                    let Some(found) = rematch(text.as_bytes(), &lits, new.as_bytes(), backslash) else {
                        refused += 1;
                        continue;
                    };
                    matched += 1;
                    let shapes = shapes_with(&new, backslash);
                    let texts = |s: &[crate::sql::tokens::Shape]| s.iter().map(|x| x.text.clone()).collect::<Vec<_>>();
                    assert_eq!(texts(&shapes), texts(&old), "{text:?} -> {new:?}");
                    assert_eq!(all_literals(&shapes), Some(found), "{text:?} -> {new:?}");
                    for (a, b) in old.iter().zip(&shapes) {
                        assert_eq!((shift(&lits, &found, a.start), shift(&lits, &found, a.end)), (b.start, b.end));
                    }
                }
            }
        }
        assert!(matched > 1000 && refused > 1000, "matched {matched}, refused {refused}");
        let t = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
        let lits = all_literals(&shapes_with(t, false)).unwrap();
        let new = "SELECT abalance FROM pgbench_accounts WHERE aid = 7;";
        let found = rematch(t.as_bytes(), &lits, new.as_bytes(), false).expect("a new value of the same kind");
        assert_eq!(found.get(0), Some(50..51));
        assert!(rematch(t.as_bytes(), &lits, b"SELECT abalance FROM pgbench_accounts WHERE aid = a7;", false).is_none());
    }
}
