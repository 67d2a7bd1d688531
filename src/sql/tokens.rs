//! A fast token pass over SQL text: literals replaced by `?`, comments dropped, whitespace folded,
//! keywords lower-cased, statements split at top-level semicolons (`nesting`). Texts that differ only in
//! literal values get the same shape, so the parser runs once per shape, not once per text
//! (pgbench -M simple sends a new literal every time). Also the fallback fingerprint source when
//! the parser rejects a text.

/// One statement's shape and the few facts read off its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub text: String,
    /// The original text of this statement (for the parser).
    pub start: usize,
    pub end: usize,
    /// Where its literals (each `?` of the shape that is one) are in the text.
    pub literals: Literals,
}

/// Where a statement's literals are in its text, in order: the first `KEPT` of them within the
/// text's first 64 KiB, and how many there were. A simple Query's key value is read from here
/// (`literal_key`) instead of lexing the text a second time; small and inline, so that recording
/// them allocates nothing and the session can keep one beside each message it handles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Literals {
    spans: [(u16, u16); Literals::KEPT],
    count: u16,
}

impl Literals {
    pub(crate) const KEPT: usize = 8;

    pub(crate) fn push(&mut self, start: usize, end: usize) {
        if let Some(span) = self.spans.get_mut(usize::from(self.count)) {
            // (Past 64 KiB: an empty span, which no key is.)
            *span = match (u16::try_from(start), u16::try_from(end)) {
                (Ok(s), Ok(e)) => (s, e),
                _ => (0, 0),
            };
        }
        self.count = self.count.saturating_add(1);
    }

    /// Forgets them (the spans are read only up to the count).
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// How many literals the statement has (the shape's `?` placeholders that are literals).
    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// The `i`th literal's byte range in the text, when it is among the first `KEPT`.
    pub fn get(&self, i: usize) -> Option<std::ops::Range<usize>> {
        let (start, end) = *self.spans[..self.count().min(Self::KEPT)].get(i)?;
        Some(usize::from(start)..usize::from(end))
    }
}

/// Splits `sql` into statement shapes (empty statements dropped), reading strings as PostgreSQL
/// does with standard_conforming_strings on.
pub fn shapes(sql: &str) -> Vec<Shape> {
    shapes_with(sql, false)
}

/// As `shapes`; `backslash_quotes`: standard_conforming_strings is off, so a backslash escapes
/// the next character in every string, not only in E'...' strings. Token boundaries must be
/// exactly PostgreSQL's: two texts with one shape share one analysis.
pub fn shapes_with(sql: &str, backslash_quotes: bool) -> Vec<Shape> {
    let b = sql.as_bytes();
    let mut scan = Scan {
        b,
        backslash_quotes,
        out: Vec::with_capacity(1),
        // Bytes, not a String: tokens are copied (and identifiers lower-cased) in one pass each.
        cur: Vec::with_capacity(b.len().min(4096)),
        start: 0,
        literals: Literals::default(),
        nesting: super::nesting::Nesting::default(),
    };
    let mut i = 0;
    while i < b.len() {
        // One table load picks the arm: this loop runs over every new simple-protocol text.
        let class = CLASS[b[i] as usize];
        if !matches!(class, Class::Space | Class::Ident | Class::Punct) {
            scan.nesting.other(); // a literal, a quoted name or a `;`
        }
        i = match class {
            Class::Space => i + 1,
            Class::Ident => scan.ident(i),
            Class::Digit => scan.literal_to(i, skip_number(b, i)),
            Class::Semicolon => scan.semicolon(i),
            Class::Quote => scan.literal_to(i, skip_quoted(b, i, b'\'', backslash_quotes)),
            Class::DoubleQuote => scan.token_to(i, skip_quoted(b, i, b'"', false)),
            Class::Dollar => match dollar(b, i) {
                (end, true) => scan.literal_to(i, end),
                (end, false) => scan.token_to(i, end),
            },
            Class::Punct => scan.punct(i),
        };
    }
    scan.finish(b.len());
    scan.out
}

/// The token pass's state over one text: the shapes so far and the statement being read.
struct Scan<'a> {
    b: &'a [u8],
    backslash_quotes: bool,
    out: Vec<Shape>,
    cur: Vec<u8>,
    /// Where the statement being read starts in the text.
    start: usize,
    literals: Literals,
    nesting: super::nesting::Nesting,
}

impl Scan<'_> {
    /// An identifier or keyword at `s` (lower-cased), or a literal with its one-letter prefix:
    /// E'..', B'..', X'..', N'..' (U&'..' is U, &, then a plain string); only E'..' takes
    /// backslash escapes. Returns where the token ends.
    #[inline]
    fn ident(&mut self, s: usize) -> usize {
        let (b, c) = (self.b, self.b[s]);
        let mut i = s + 1;
        while i < b.len() && IDENT_REST[b[i] as usize] {
            i += 1;
        }
        let prefix = i - s == 1 && matches!(c.to_ascii_lowercase(), b'e' | b'b' | b'x' | b'n');
        if prefix && b.get(i) == Some(&b'\'') {
            let escapes = self.backslash_quotes || c.eq_ignore_ascii_case(&b'e');
            return self.literal_to(s, skip_quoted(b, i, b'\'', escapes));
        }
        token(&mut self.cur, &b[s..i]);
        let at = self.cur.len() - (i - s);
        self.cur[at..].make_ascii_lowercase();
        self.nesting.ident(&self.cur[at..]);
        i
    }

    /// A comment, a number written `.5`, or an operator character.
    #[inline]
    fn punct(&mut self, i: usize) -> usize {
        let (b, c) = (self.b, self.b[i]);
        match (c, b.get(i + 1)) {
            (b'-', Some(b'-')) => skip_line_comment(b, i),
            (b'/', Some(b'*')) => skip_block_comment(b, i),
            (b'.', Some(d)) if d.is_ascii_digit() => self.literal_to(i, skip_number(b, i)),
            _ => {
                token(&mut self.cur, &b[i..i + 1]);
                self.nesting.punct(c);
                i + 1
            }
        }
    }

    /// A `;` ends the statement, except inside a rule's action list or a routine's body.
    #[inline]
    fn semicolon(&mut self, i: usize) -> usize {
        if self.nesting.at_top() {
            self.finish(i);
            self.nesting.reset();
            self.start = i + 1;
        } else {
            token(&mut self.cur, b";");
        }
        i + 1
    }

    /// A literal from `s` to `end`: `?` in the shape, and where it stood in the text.
    #[inline]
    fn literal_to(&mut self, s: usize, end: usize) -> usize {
        token(&mut self.cur, b"?");
        self.literals.push(s, end);
        end
    }

    /// A token copied as written (a quoted name, a `$name` that opens no string).
    #[inline]
    fn token_to(&mut self, s: usize, end: usize) -> usize {
        token(&mut self.cur, &self.b[s..end]);
        end
    }

    /// Ends a statement at `end`: its shape moves out (no copy; a next statement grows a new
    /// buffer).
    fn finish(&mut self, end: usize) {
        let literals = std::mem::take(&mut self.literals);
        if self.cur.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.cur);
        // Tokens are whole characters of valid UTF-8 cut at ASCII bytes, so this never copies.
        let text = String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        self.out.push(Shape { text, start: self.start, end, literals });
    }
}

/// Where the literal that starts at `i` ends, when the token pass, standing at a token start at
/// `i`, would read a literal there: the same decisions as `shapes_with`'s arms (a number, a
/// quoted string with its E/B/X/N prefix, a dollar-quoted string, `.5`), for `rematch`, which
/// must cut literals exactly where the token pass does.
pub(crate) fn literal_at(b: &[u8], i: usize, backslash_quotes: bool) -> Option<usize> {
    let c = *b.get(i)?;
    match CLASS[c as usize] {
        Class::Digit => Some(skip_number(b, i)),
        Class::Quote => Some(skip_quoted(b, i, b'\'', backslash_quotes)),
        // A one-letter prefix: the identifier run ends at the quote (not an IDENT_REST byte).
        Class::Ident if matches!(c.to_ascii_lowercase(), b'e' | b'b' | b'x' | b'n') && b.get(i + 1) == Some(&b'\'') => {
            Some(skip_quoted(b, i + 1, b'\'', backslash_quotes || c.eq_ignore_ascii_case(&b'e')))
        }
        Class::Dollar => match dollar(b, i) {
            (end, true) => Some(end),
            _ => None,
        },
        Class::Punct if c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) => Some(skip_number(b, i)),
        _ => None,
    }
}

/// What the first byte of a token says it is.
#[derive(Clone, Copy)]
enum Class {
    Space,
    /// Letters, `_`, any byte >= 0x80 (multi-byte characters are identifier characters).
    Ident,
    Digit,
    Semicolon,
    Quote,
    DoubleQuote,
    Dollar,
    /// Other ASCII: an operator character, or the start of a comment or of `.5`.
    Punct,
}

const CLASS: [Class; 256] = {
    let mut t = [Class::Punct; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = match c {
            b';' => Class::Semicolon,
            b'\'' => Class::Quote,
            b'"' => Class::DoubleQuote,
            b'$' => Class::Dollar,
            b'0'..=b'9' => Class::Digit,
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | 0x80..=0xff => Class::Ident,
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => Class::Space,
            _ => Class::Punct,
        };
        i += 1;
    }
    t
};

/// Appends one token, a space before it unless it is the statement's first.
fn token(cur: &mut Vec<u8>, tok: &[u8]) {
    if !cur.is_empty() {
        cur.push(b' ');
    }
    cur.extend_from_slice(tok);
}

/// Bytes that continue an identifier or keyword (letters, digits, `_`, `$`, any non-ASCII byte):
/// one table load per byte where the tests were a chain of comparisons (every new text is
/// tokenized on the hot path).
pub(crate) const IDENT_REST: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
        i += 1;
    }
    t
};

/// A `--` comment ends at a line feed or a carriage return, as in PostgreSQL's scan.l
/// (`newline [\n\r]`): a text that hid a statement behind `\r` would otherwise share the
/// shape (and the cached analysis) of the text before it.
pub(crate) fn skip_line_comment(b: &[u8], from: usize) -> usize {
    memchr::memchr2(b'\n', b'\r', &b[from..]).map_or(b.len(), |p| from + p + 1)
}

fn skip_to(b: &[u8], from: usize, pat: &[u8]) -> usize {
    b[from..].windows(pat.len()).position(|w| w == pat).map_or(b.len(), |p| from + p + pat.len())
}

pub(crate) fn skip_block_comment(b: &[u8], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

pub(crate) fn skip_quoted(b: &[u8], start: usize, q: u8, backslash: bool) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            // An escape string goes on past a quote followed by whitespace that holds a newline
            // and another quote (scan.l's quotecontinue), its next part still taking escapes:
            // read as a new plain string, `E'x'<newline>'\'' ; SET ... -- '` hid the SET.
            // (Plain, B, X and U& strings continue too, but without escapes their parts end
            // where separate strings would.)
            match (backslash && q == b'\'').then(|| continuation(b, i + 1)).flatten() {
                Some(next) => i = next + 1,
                None => return i + 1,
            }
            continue;
        }
        if b[i] == b'\\' && backslash {
            i += 1;
        }
        i += 1;
    }
    b.len()
}

/// Where a string's next part starts (its quote) when the bytes from `from` are whitespace
/// holding a newline, `--` comments included, then a quote. A vertical tab counts as space (it
/// does in newer servers; older ones reject a text with one there).
fn continuation(b: &[u8], mut j: usize) -> Option<usize> {
    let mut newline = false;
    loop {
        match *b.get(j)? {
            b' ' | b'\t' | 0x0b | 0x0c => j += 1,
            b'\n' | b'\r' => (newline, j) = (true, j + 1),
            // (A comment ends at a newline, consumed with it; one cut by the text's end finds nothing after.)
            b'-' if b.get(j + 1) == Some(&b'-') => (newline, j) = (true, skip_line_comment(b, j)),
            b'\'' if newline => return Some(j),
            _ => return None,
        }
    }
}

/// `$1` is a parameter (kept); `$tag$...$tag$` is a literal.
pub(crate) fn dollar(b: &[u8], start: usize) -> (usize, bool) {
    let mut j = start + 1;
    if j < b.len() && b[j].is_ascii_digit() {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        return (j, false);
    }
    // A tag is an identifier (letters, bytes >= 0x80, '_', digits after the first), as in scan.l.
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    if j < b.len() && b[j] == b'$' {
        let tag = &b[start..=j];
        return (skip_to(b, j + 1, tag), true);
    }
    (j, false)
}

fn skip_number(b: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
        // exponent sign: 1e-5 (only before a digit: in `0x1e--` the `--` starts a comment)
        if (b[i] == b'e' || b[i] == b'E')
            && matches!(b.get(i + 1), Some(b'+') | Some(b'-'))
            && b.get(i + 2).is_some_and(u8::is_ascii_digit)
        {
            i += 1;
        }
        i += 1;
    }
    i
}

/// A hash of a statement's literal text or a Bind's parameter bytes, compared only within this
/// process (has a read repeated?): xxh3, several bytes per instruction where FNV-1a takes four
/// instructions a byte, on every Query and Bind.
pub fn params_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// FNV-1a: a stable 64-bit hash (the fallback fingerprint must not change between runs).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
