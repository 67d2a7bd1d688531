//! How the server will lex the client's next text: pgpilot reads a text (to scan, analyze and
//! key it) only when it would split it into the same tokens as the server, which depends on two
//! settings the server reports (standard_conforming_strings, client_encoding) and on whether a
//! statement that may change them is still unanswered.

use std::collections::BTreeMap;

#[derive(Default)]
pub struct Lexing {
    /// The server's standard_conforming_strings is off: backslashes escape in plain strings.
    pub backslash_quotes: bool,
    /// The client_encoding is not UTF8: the server converts a text before lexing it, and in
    /// SJIS, BIG5, GBK... a character's second byte may be a backslash or a quote.
    foreign_encoding: bool,
    /// A statement that changes the session's state has not been answered yet: a text read
    /// meanwhile (pipelined) may be lexed by the server under settings pgpilot has not been told of.
    pub unsure: bool,
}

impl Lexing {
    /// As the login was told (the server connection's values, or what the pool knows of them).
    pub fn at_login(&mut self, params: &BTreeMap<String, String>) {
        self.backslash_quotes = params.get("standard_conforming_strings").is_some_and(|v| v == "off");
        self.foreign_encoding =
            params.get("client_encoding").is_some_and(|v| !crate::protocol::utf8_encoding(v.as_bytes()));
    }

    /// A ParameterStatus the server sent (`body`): as reported, or as at login (`told_at_login`):
    /// a RESET or DISCARD ALL returns to the login's value by an internal query whose
    /// ParameterStatus the relay never sees.
    pub fn on_parameter(&mut self, body: &[u8], told_at_login: &BTreeMap<String, String>) {
        let at_login = |name: &str| told_at_login.get(name).map(|v| v.as_bytes());
        if body.starts_with(b"standard_conforming_strings\0") {
            self.backslash_quotes = body.ends_with(b"off\0") || at_login("standard_conforming_strings") == Some(b"off");
        } else if let Some(value) = body.strip_prefix(b"client_encoding\0") {
            self.foreign_encoding = !crate::protocol::utf8_encoding(value)
                || at_login("client_encoding").is_some_and(|v| !crate::protocol::utf8_encoding(v));
        }
    }

    /// A text pgpilot cannot lex as the server will, read as opaque: a backslash while
    /// standard_conforming_strings is off (it escapes in any string, which the parser does not
    /// assume), a byte past ASCII in another client encoding than UTF8 (the server lexes the
    /// text converted), invalid UTF-8 (what the parser would read is a lossy copy).
    /// While a statement changing the session is unanswered, either setting may already differ.
    pub fn unreadable(&self, sql: &[u8]) -> bool {
        let backslash = || memchr::memchr(b'\\', sql).is_some();
        ((self.backslash_quotes || self.unsure) && backslash())
            || ((self.foreign_encoding || self.unsure) && !sql.is_ascii())
    }
}
