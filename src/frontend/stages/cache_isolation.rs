//! Session isolation's questions to the table list, asked of the cache stage because the list is
//! its own (it loads it, with the cache on or off): does a statement run code attached to the
//! relations it touches (`Relations::runs_attached_code`), and has the database none at all.

use std::sync::Arc;

use super::CacheStage;

impl CacheStage {
    /// Whether a statement reading `reads` and writing `writes` may run code attached to them (see
    /// `Relations::runs_attached_code`). While the list is not known (yet, or since DDL): yes,
    /// whatever it names (DDL may have made an operator that runs code). Callers ask
    /// `known_code_free` first.
    pub fn runs_attached_code(&mut self, reads: &[Arc<str>], writes: &[Arc<str>]) -> bool {
        let relations = &self.cache.relations;
        let (version, now) = (relations.version(), crate::clock::now_ms());
        let refresh = self.config.load().cache.relations_refresh_s * 1000;
        let (free, due) = relations.code_free(&self.database, now, refresh);
        if due && relations.begin_load(&self.database) {
            crate::cache::relations::spawn_load(self.cache.clone(), self.pool.clone(), self.database.clone());
        }
        if free {
            self.code_free = CodeFree { version: version + 1, until_ms: now + refresh };
            return false;
        }
        relations.runs_attached_code(&self.database, reads, writes).unwrap_or(true)
    }

    /// The session's first checkout (true once): it waits for the database's first table list
    /// if a load of it is under way (`first_list`).
    pub fn first_checkout(&mut self) -> bool {
        !std::mem::replace(&mut self.list_awaited, true)
    }

    /// Waits (up to a second) for the database's first table list while its load runs, as a read
    /// waits for it (`wait_loaded`; a failed load ends the wait): without it every transaction
    /// would be reset, not knowing what code its tables run.
    pub async fn first_list(&self) {
        let relations = &self.cache.relations;
        if relations.first_load_running(&self.database) {
            relations.wait_loaded(&self.database, std::time::Duration::from_secs(1)).await;
        }
    }

    /// DDL went through: the table list may be out of date (a trigger or default may be new),
    /// and until the transaction's boundary each ReadyForQuery 'I' (each may follow its commit:
    /// a pipeline's later statements may run long), and the one after a COMMIT tag (COMMIT AND
    /// CHAIN), tells the other replicas too (`at_ready`, with the cache on or off: the list is
    /// read either way).
    pub fn list_outdated(&mut self) {
        self.cache.relations.mark_stale(&self.database);
        self.ddl_pending = true;
    }

    /// PREPARE TRANSACTION `gid` was sent: when its transaction ran DDL, that DDL takes effect
    /// at its COMMIT PREPARED, from whichever session.
    pub fn prepared(&mut self, gid: String) {
        if self.ddl_pending {
            self.cache.prepared_ddl.prepared(&self.database, gid);
        }
    }

    /// COMMIT PREPARED `gid` was sent: the list is outdated as by DDL when that transaction ran
    /// some (then true).
    pub fn commit_prepared(&mut self, gid: &str) -> bool {
        let ddl = self.cache.prepared_ddl.ran_ddl(&self.database, gid);
        if ddl {
            self.list_outdated();
        }
        ddl
    }

    /// The boundary after DDL: out of date again here (a load started meanwhile may have read
    /// the catalog before the commit); the other replicas were told at its ReadyForQuery.
    pub fn list_outdated_at_end(&mut self) {
        self.cache.relations.mark_stale(&self.database);
        self.ddl_pending = false;
    }

    /// DDL may have committed: out of date here again, and on the other replicas.
    pub async fn ddl_ended(&self) {
        self.cache.ddl_ended(&self.database).await;
    }

    /// The client left with DDL in flight: told again after 1 s and 10 s, by when it has most
    /// likely committed (a DDL running longer is found at the next periodic load).
    pub fn ddl_ended_later(&self) {
        let (cache, db) = (self.cache.clone(), self.database.clone());
        tokio::spawn(async move {
            for wait in [1, 9] {
                crate::timers::sleep(std::time::Duration::from_secs(wait)).await;
                cache.ddl_ended(&db).await;
            }
        });
    }

    /// The database had no relation that runs user code when last asked, and neither the table
    /// list nor the refresh time has moved since: two loads and two compares per statement.
    #[inline]
    pub fn known_code_free(&self) -> bool {
        // (`code_free` is false while the list is stale after DDL: asked statement by statement.)
        self.code_free.version == self.cache.relations.version() + 1 && crate::clock::now_ms() < self.code_free.until_ms
    }
}

/// The table list's version under which (and the time until which) the database had no relation
/// that runs user code: the list is asked again when it moves or the time passes (a trigger
/// created outside pgpilot is found at the next periodic load).
#[derive(Default)]
pub(super) struct CodeFree {
    /// The version + 1 (0: never found code-free).
    pub(super) version: u64,
    pub(super) until_ms: u64,
}
