//! A deferred BEGIN (`strategy.defer_begin`, transaction mode): a transaction's connection would
//! be taken at its BEGIN, before pgpilot knows what it runs, so a 3 ms lookup and a 300 ms
//! search would take it the same way. A plain BEGIN is answered here instead and sent, in one
//! write, ahead of the transaction's first statement; the checkout for that statement picks
//! the lane. An empty transaction (BEGIN then COMMIT or ROLLBACK) never takes a connection.
//! Only BEGINs that cannot fail on the server are deferred (no isolation level that changes
//! what the cache may serve, no unknown words): the client's view of the protocol is the same.

use bytes::Bytes;
use smallvec::SmallVec;

use super::reply_queue::{Action, Kind};
use super::session::Session;
use crate::net::messages;
use crate::protocol::backend::tx_status;
use crate::protocol::frontend::{self as fe, ClientMessage};

/// The session's deferred BEGIN.
#[derive(Default)]
pub struct Deferred {
    /// `strategy.defer_begin` applies (transaction mode, the strategy layer on).
    pub on: bool,
    /// The BEGIN answered here and not yet sent.
    pub begin: Option<Bytes>,
    /// That transaction failed before reaching a server (no connection could be had).
    pub failed: bool,
}

impl Session {
    /// A message with no server held while deferral is on: answered here (a plain BEGIN, the
    /// end of an empty transaction, or 25P02 in a failed one)?
    pub(super) fn answered_while_deferring(&mut self, tag: u8, msg: &ClientMessage<'_>, frame: &[u8]) -> bool {
        match *msg {
            ClientMessage::Query { text } => self.answer_deferred(text, frame),
            _ => self.refuse_in_failed(tag),
        }
    }

    /// A simple Query with no server held: answered here when it is a plain BEGIN (or ends a
    /// deferred one). True when answered.
    pub(super) fn answer_deferred(&mut self, text: &[u8], frame: &[u8]) -> bool {
        // Most queries fail this on their first word, before any scan of the text.
        let first = text.trim_ascii_start();
        let word = |w: &[u8]| first.len() >= w.len() && first[..w.len()].eq_ignore_ascii_case(w);
        let candidate = match self.deferred.begin {
            None => word(b"begin") || word(b"start"),
            Some(_) => self.deferred.failed || word(b"commit") || word(b"end") || word(b"rollback") || word(b"abort"),
        };
        if !candidate || text.len() > 160 {
            return self.deferred.begin.is_some() && self.refuse_in_failed(fe::QUERY);
        }
        let sql = match std::str::from_utf8(text) {
            Ok(sql) => sql,
            Err(_) => return false,
        };
        if self.deferred.begin.is_none() {
            if !plain_begin(sql) {
                return false;
            }
            self.deferred.begin = Some(Bytes::copy_from_slice(frame));
            messages::command_complete(&mut self.cout, "BEGIN");
            messages::ready_for_query(&mut self.cout, tx_status::IN_BLOCK);
            return true;
        }
        let Some(tag) = plain_end(sql) else { return self.refuse_in_failed(fe::QUERY) };
        self.deferred.begin = None;
        // COMMIT of a failed transaction rolls it back, and says so.
        let tag = if std::mem::take(&mut self.deferred.failed) { "ROLLBACK" } else { tag };
        messages::command_complete(&mut self.cout, tag);
        messages::ready_for_query(&mut self.cout, tx_status::IDLE);
        true
    }

    /// The deferred transaction failed (no connection could be had for its first statement):
    /// as on the server, everything up to its end gets 25P02. True when refused.
    pub(super) fn refuse_in_failed(&mut self, tag: u8) -> bool {
        if !self.deferred.failed || matches!(tag, fe::SYNC | fe::FLUSH) {
            return false;
        }
        let msg = "current transaction is aborted, commands ignored until end of transaction block";
        messages::error(&mut self.cout, "ERROR", "25P02", msg);
        if tag == fe::QUERY {
            messages::ready_for_query(&mut self.cout, tx_status::FAILED);
        } else {
            self.skip.until_sync = true;
        }
        true
    }

    /// The ReadyForQuery status of a reply given here with no server held.
    pub(super) fn status_without_server(&self) -> u8 {
        match (&self.deferred.begin, self.deferred.failed) {
            (None, _) => tx_status::IDLE,
            (Some(_), false) => tx_status::IN_BLOCK,
            (Some(_), true) => tx_status::FAILED,
        }
    }

    /// A server connection was just taken: the deferred BEGIN goes first, its replies kept
    /// from the client (who was answered already), errors excepted.
    pub(super) fn send_deferred_begin(&mut self) {
        let Some(frame) = self.deferred.begin.take() else { return };
        self.pending.begin_message();
        self.pending.push(Kind::Query, Action::Suppress);
        self.tx.on_client(fe::QUERY);
        if self.stages.cache.on {
            // Its ReadyForQuery settles a write group: its own, empty, not the client's next.
            self.stages.cache.own_query_sent();
        }
        self.tx.status = tx_status::IN_BLOCK;
        self.sout.extend_from_slice(&frame);
    }
}

/// `BEGIN`, `BEGIN WORK|TRANSACTION`, `START TRANSACTION`, optionally with `ISOLATION LEVEL READ
/// COMMITTED` and `READ ONLY|WRITE` (what asyncpg and SQLAlchemy send), and a final `;`.
pub fn plain_begin(sql: &str) -> bool {
    if bare(sql).eq_ignore_ascii_case("begin") {
        return true; // (what most clients send, without a split into words)
    }
    let words = words(sql);
    let mut rest: &[&str] = match words.as_slice() {
        [first, second, rest @ ..] if is(first, "start") && is(second, "transaction") => rest,
        [first, rest @ ..] if is(first, "begin") => match rest {
            [w, more @ ..] if is(w, "work") || is(w, "transaction") => more,
            _ => rest,
        },
        _ => return false,
    };
    let mut first = true;
    while !rest.is_empty() {
        // Modes may be separated by one comma (not led or followed by one: a syntax error).
        match rest {
            [comma, more @ ..] if !first && *comma == "," => rest = more,
            _ => {}
        }
        rest = match rest {
            [a, b, c, d, more @ ..] if is(a, "isolation") && is(b, "level") && is(c, "read") && is(d, "committed") => {
                more
            }
            [a, b, more @ ..] if is(a, "read") && (is(b, "only") || is(b, "write")) => more,
            _ => return false,
        };
        first = false;
    }
    true
}

/// The command tag of a plain `COMMIT`/`END` or `ROLLBACK`/`ABORT` (with `WORK|TRANSACTION`).
pub fn plain_end(sql: &str) -> Option<&'static str> {
    let words = words(sql);
    let (first, rest) = words.split_first()?;
    let tag = if is(first, "commit") || is(first, "end") {
        "COMMIT"
    } else if is(first, "rollback") || is(first, "abort") {
        "ROLLBACK"
    } else {
        return None;
    };
    match rest {
        [] => Some(tag),
        [w] if is(w, "work") || is(w, "transaction") => Some(tag),
        _ => None,
    }
}

/// The statement without surrounding white space and one final `;`. ASCII white space only:
/// PostgreSQL's lexer reads a byte past 0x7F as part of a word (`BEGIN` and a no-break space
/// is a syntax error there, not a BEGIN to answer here).
fn bare(sql: &str) -> &str {
    let sql = sql.trim_ascii();
    sql.strip_suffix(';').unwrap_or(sql).trim_ascii_end()
}

fn is(word: &str, lower: &str) -> bool {
    word.eq_ignore_ascii_case(lower)
}

/// The words of a short statement with one optional final `;`, commas words of their own. A
/// comment or a quote makes it not plain (empty). Borrowed and compared ignoring case: a BEGIN
/// is on most transactions' path, and lower-cased copies cost it ~700 instructions.
fn words(sql: &str) -> SmallVec<[&str; 12]> {
    let sql = bare(sql);
    let mut out = SmallVec::new();
    if sql.len() > 120 || sql.bytes().any(|b| matches!(b, b'-' | b'/' | b'\'' | b'"' | b';' | b'$')) {
        return out;
    }
    for mut part in sql.split_ascii_whitespace() {
        while let Some(at) = part.find(',') {
            if at > 0 {
                out.push(&part[..at]);
            }
            out.push(",");
            part = &part[at + 1..];
        }
        if !part.is_empty() {
            out.push(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_drivers_send_is_plain() {
        for sql in [
            "BEGIN",
            "begin;",
            "BEGIN ISOLATION LEVEL READ COMMITTED;",
            "BEGIN READ ONLY",
            "START TRANSACTION READ WRITE",
            "BEGIN TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY",
            "  BEGIN WORK ; ",
            "begin isolation level read committed,read only",
            "Begin Read Write , Read Only",
        ] {
            assert!(plain_begin(sql), "{sql}");
        }
    }

    #[test]
    fn anything_that_changes_the_snapshot_or_may_fail_is_not() {
        for sql in [
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "BEGIN ISOLATION LEVEL REPEATABLE READ",
            "BEGIN; SELECT 1",
            "BEGIN DEFERRABLE",
            "BEGIN /* x */",
            "BEGIN -- x",
            "BEGIN READ",
            "BEGIN WORK WORK",
            "BEGIN READ ONLY,DEFERRABLE",
            "BEGIN,",
            "BEGIN READ ONLY,",
            "BEGIN READ ONLY,, READ WRITE",
            "BEGİN",
            "BEGIN\u{a0}",
            "\u{3000}BEGIN",
            "START",
            "SELECT 1",
            "",
        ] {
            assert!(!plain_begin(sql), "{sql}");
        }
    }

    #[test]
    fn ends() {
        assert_eq!(plain_end("COMMIT"), Some("COMMIT"));
        assert_eq!(plain_end("end transaction;"), Some("COMMIT"));
        assert_eq!(plain_end("ROLLBACK"), Some("ROLLBACK"));
        assert_eq!(plain_end("abort work"), Some("ROLLBACK"));
        assert_eq!(plain_end("COMMIT AND CHAIN"), None);
        assert_eq!(plain_end("ROLLBACK TO SAVEPOINT a"), None);
        assert_eq!(plain_end("COMMIT PREPARED 'x'"), None);
        assert_eq!(plain_end("COMMIT\u{a0}"), None);
    }
}
