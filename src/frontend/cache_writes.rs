//! Invalidation from the session's point of view: the tables each statement may write are noted
//! when it is sent, and become invalidations only when the server reports the transaction
//! committed (a COMMIT tag, or ReadyForQuery 'I' ending an implicit transaction without error);
//! a rollback invalidates nothing. The invalidation is applied, and Redis told, before the
//! client sees the ReadyForQuery that tells it its commit happened.

use std::sync::Arc;

use super::session::Session;
use crate::cache::policy::table_names;
use crate::sql::{Analysis, StatementKind, WriteScope};

/// Tables written in the open transaction, and those committed but not yet invalidated.
#[derive(Default)]
pub struct Writes {
    open: Vec<Arc<str>>,
    open_all: bool,
    committed: Vec<Arc<str>>,
    committed_all: bool,
    /// An ErrorResponse since the last ReadyForQuery.
    error: bool,
    /// The last transaction-ending tag since the last ReadyForQuery: Some(true) COMMIT.
    ended: Option<bool>,
    /// The open transaction asked for a snapshot (REPEATABLE READ / SERIALIZABLE): no cache.
    pub strict: bool,
}

impl Writes {
    /// Nothing written in the open transaction (its reads may use the cache).
    pub fn clean(&self) -> bool {
        self.open.is_empty() && !self.open_all && !self.strict
    }

    pub fn note_unknown(&mut self) {
        self.open_all = true;
    }

    fn note(&mut self, tables: &[Arc<str>]) {
        for t in tables {
            if !self.open.contains(t) {
                self.open.push(t.clone());
            }
        }
    }

    fn commit(&mut self) {
        self.committed_all |= std::mem::take(&mut self.open_all);
        for t in std::mem::take(&mut self.open) {
            if !self.committed.contains(&t) {
                self.committed.push(t);
            }
        }
    }

    fn pending(&self) -> bool {
        self.committed_all || !self.committed.is_empty()
    }
}

impl Session {
    /// A statement is being sent: note what it may write (`written`: its tables, precomputed).
    pub(super) fn note_writes(&mut self, a: &Analysis, written: Option<&[Arc<str>]>) {
        let w = &mut self.cached.writes;
        match a.writes {
            WriteScope::Nothing => {}
            WriteScope::Unknown => w.open_all = true,
            WriteScope::Tables => match written {
                Some(t) => w.note(t),
                None => w.note(&table_names(&a.tables_written)),
            },
        }
        match a.kind {
            StatementKind::Ddl => self.app.cache.relations.mark_stale(&self.observe.origin.database),
            StatementKind::Transaction => {
                let text = a.normalized.to_ascii_lowercase();
                if text.contains("serializable") || text.contains("repeatable read") {
                    self.cached.writes.strict = true;
                }
            }
            _ => {}
        }
    }

    /// CommandComplete and ErrorResponse from the server.
    pub(super) fn cache_on_server_tag(&mut self, tag: u8, body: &[u8]) {
        let w = &mut self.cached.writes;
        match tag {
            b'E' => w.error = true,
            b'C' if body.starts_with(b"COMMIT") || body.starts_with(b"PREPARE TRANSACTION") => {
                w.ended = Some(true);
                w.commit();
            }
            b'C' if body.starts_with(b"ROLLBACK") => w.ended = Some(false),
            _ => {}
        }
    }

    /// ReadyForQuery, before it is passed on: an implicit transaction that ended without error
    /// committed; committed writes invalidate now.
    pub(super) async fn cache_on_ready(&mut self, status: u8) {
        let w = &mut self.cached.writes;
        if status == b'I' {
            if !w.error && w.ended != Some(false) {
                w.commit();
            }
            w.open.clear();
            w.open_all = false;
            w.strict = false;
        }
        w.error = false;
        w.ended = None;
        if w.pending() {
            self.cache_invalidate().await;
        }
    }

    /// The server connection was lost: a commit may have happened, so what was written is invalid.
    pub(super) async fn cache_on_server_lost(&mut self) {
        self.cached.writes.commit();
        if self.cached.writes.pending() {
            self.cache_invalidate().await;
        }
    }

    async fn cache_invalidate(&mut self) {
        let w = &mut self.cached.writes;
        let all = std::mem::take(&mut w.committed_all);
        let tables = std::mem::take(&mut w.committed);
        let db = self.observe.origin.database.clone();
        if all {
            self.app.cache.invalidate(&db, None).await;
        } else {
            self.app.cache.invalidate(&db, Some(&tables)).await;
        }
    }
}
