//! How a client message changes the statement table (`statements`): a Parse opens its name with
//! everything the stages read of it, a Bind reads its entry once, a Close takes it out. Apart
//! from the table itself, which the stages see, so that the table depends on no stage.

use std::sync::Arc;

use super::session::Session;
use super::sql_scan::Scan;
use super::statements::{ClientStatement, Opened};
use crate::cache::statement::CachedStatement;
use crate::config::PoolMode;
use crate::protocol::frontend::{ClientMessage, Target};

impl Session {
    /// The client's Parse: one entry that every stage reads (analysis, cache identity, effect).
    pub(super) fn open_statement(&mut self, name: &[u8], query: &[u8], types: &[u8], found: &Arc<Scan>) {
        let two_phase = if found.two_phase { self.two_phase_of(query) } else { None };
        let analysis = self.turn.analyzed.first().map(|(a, _)| a.clone());
        let cache = match &analysis {
            Some(a) if self.stages.cache.on => {
                let previous = self.statements.get(name).and_then(|e| e.cache.as_ref());
                Some(CachedStatement::identity(previous, name, a, (query, types), found.hint))
            }
            _ => None,
        };
        let effect = found.lasts().then(|| found.clone());
        let lasting = effect.is_some();
        let opened =
            self.statements.open(name, ClientStatement { analysis, cache, effect, two_phase, ..Default::default() });
        if opened == Opened::Full && lasting {
            self.keeping.state_unknown = true; // its effect cannot be remembered: assume the worst
        }
        self.turn.opened = opened;
    }

    /// The statement table and session state for a client message: a Query/Parse text is scanned
    /// (and a Parse opens its name), a Bind or Close reads or takes its entry. True when the
    /// message was a `DEALLOCATE name` answered here.
    pub(super) async fn update_statements(&mut self, msg: &ClientMessage<'_>) -> bool {
        let (sql, parse) = match *msg {
            ClientMessage::Query { text } => (text, false),
            ClientMessage::Parse { query, .. } => (query, true),
            _ => {
                self.look_up_statement(msg);
                return false;
            }
        };
        let found = self.inspect_sql(sql).await;
        if found.two_phase && !parse {
            if let Some(statements) = self.two_phase_of(sql) {
                self.note_two_phase(&statements);
            }
        }
        self.turn.drops_statements = found.drops_statements;
        self.turn.hint = found.hint;
        if let ClientMessage::Parse { name, query, types } = *msg {
            self.open_statement(name, query, types, &found);
        }
        match &found.deallocate {
            Some(name) if self.mode == PoolMode::Session => {
                self.forget_deallocated(name);
                false
            }
            Some(name) => !parse && self.deallocate_locally(name),
            None => false,
        }
    }

    /// A Bind reads its statement's entry once (and replays its effect); a Close takes the
    /// entry out of the table, for the stages to see what it was.
    pub(super) fn look_up_statement(&mut self, msg: &ClientMessage<'_>) {
        match *msg {
            ClientMessage::Bind { statement, .. } => {
                let entry = self.statements.get(statement).cloned();
                if let Some(found) = entry.as_ref().and_then(|e| e.effect.clone()) {
                    self.note_scan(&found);
                }
                if let Some(statements) = entry.as_ref().and_then(|e| e.two_phase.clone()) {
                    self.note_two_phase(&statements);
                }
                self.turn.statement = entry;
            }
            ClientMessage::Close(Target::Statement(name)) => self.turn.statement = self.statements.close(name),
            _ => {}
        }
    }

    /// Session mode, `DEALLOCATE name` sent to the server. An entry whose text changes the
    /// session stays (a DEALLOCATE that fails in an aborted transaction leaves the statement
    /// there, and its Binds must still count) but no longer names a cacheable text.
    pub(super) fn forget_deallocated(&mut self, name: &str) {
        match self.statements.get_mut(name.as_bytes()) {
            Some(e) if e.effect.is_some() => {
                e.cache = None;
                e.analysis = None;
            }
            Some(_) => {
                self.statements.close(name.as_bytes());
            }
            None => {}
        }
    }

    /// The client's Parse never reached a server (no connection could be had).
    pub(super) fn unsent(&mut self, msg: &ClientMessage<'_>) {
        if let (ClientMessage::Parse { name, .. }, Opened::Fresh) = (msg, self.turn.opened) {
            self.statements.forget(name);
        }
    }
}
