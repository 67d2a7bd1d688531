//! The checkout guard: a server connection can only leave a session by an explicit, clean
//! `give_back` (to the pool, reset first if need be) or by being dropped (closed, slot freed). No
//! path leaks it.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::Pool;
use crate::backend::ServerConn;

pub struct PooledConn {
    conn: Option<Box<ServerConn>>,
    pool: Arc<Pool>,
    /// A slow-lane checkout's place in the lane: it goes back with the connection.
    pub(super) ticket: Option<super::lane::Ticket>,
}

/// How a connection goes back to its pool (`frontend::keeping` decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Back {
    /// As it is: its settings are the ones its signature says.
    Reuse,
    /// Its settings changed and were not read back: the next client's are replayed over RESET ALL.
    SettingsUnknown,
    /// Through `reset_and_release`.
    Reset,
}

impl PooledConn {
    /// The one way a session hands its connection back. (The reset boxed: it is rare, and its
    /// future, inline, made every transaction's return copy a few hundred bytes more.)
    #[inline]
    pub async fn give_back(mut self, back: Back) {
        match back {
            Back::Reuse => self.release(),
            Back::SettingsUnknown => {
                self.state_sig = crate::backend::UNKNOWN_STATE;
                self.release();
            }
            Back::Reset => Box::pin(self.reset_and_release()).await,
        }
    }

    pub(super) fn new(conn: Box<ServerConn>, pool: Arc<Pool>) -> Self {
        // While checked out, `last_used_ms` is when it was taken: the pool's sizing measures the
        // time held from it (no field of its own: the guard is moved on every checkout).
        let mut conn = conn;
        conn.last_used_ms = crate::clock::now_ms();
        Self { conn: Some(conn), pool, ticket: None }
    }

    /// Hands a connection that is idle at a protocol boundary back to the pool.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }

    /// Hands back a connection whose session state is not known to be clean (session mode, a
    /// pinned or unknown state, user code that may have changed it): advisory locks released and
    /// the pool's `reset_query` run first; one that fails either is closed instead. Only DISCARD
    /// ALL leaves it as fresh: after another reset query (or none, as converted PgBouncer configs
    /// often have) its settings are marked unknown, so the next client's are replayed over a
    /// RESET ALL, and its prepared statements are dropped with DEALLOCATE ALL (whether that query
    /// dropped them or not, pgpilot's list of copies then matches the server).
    async fn reset_and_release(mut self) {
        let reset = self.pool.reset_query();
        let fresh = discards_all(&reset);
        let deallocate = if fresh { "" } else { "DEALLOCATE ALL" };
        for sql in ["SELECT pg_catalog.pg_advisory_unlock_all()", reset.as_str(), deallocate] {
            if sql.is_empty() {
                continue;
            }
            if let Err(e) = self.run_internal(sql).await {
                tracing::debug!(server = self.id, "reset failed, closing the connection: {e}");
                return; // dropped: closed, slot freed
            }
        }
        self.state_sig = if fresh { 0 } else { crate::backend::UNKNOWN_STATE };
        self.prepared.clear();
        self.stale.clear();
        self.release();
    }
}

/// `DISCARD ALL` in any spelling of case, space and a final semicolon.
fn discards_all(sql: &str) -> bool {
    let words: Vec<&str> = sql.trim().trim_end_matches(';').split_whitespace().collect();
    matches!(words.as_slice(), [a, b] if a.eq_ignore_ascii_case("discard") && b.eq_ignore_ascii_case("all"))
}

impl Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn.as_ref().expect("connection present until release or drop")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("connection present until release or drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::debug!(server = conn.id, database = %self.pool.key.database, "closing server connection");
            self.pool.note_held(conn.last_used_ms);
            drop(conn);
            self.pool.free_slot();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_discard_all_itself_leaves_a_connection_fresh() {
        for fresh in ["DISCARD ALL", "discard all;", "  Discard\n  ALL ; "] {
            assert!(super::discards_all(fresh), "{fresh:?}");
        }
        for other in ["", "RESET ALL", "DISCARD ALL; SELECT 1", "DEALLOCATE ALL", "DISCARD PLANS"] {
            assert!(!super::discards_all(other), "{other:?}");
        }
    }
}
