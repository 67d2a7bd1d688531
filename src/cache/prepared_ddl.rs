//! The prepared transactions (two-phase commit) that ran DDL through this pgpilot, by database
//! and identifier: their COMMIT PREPARED, from any session, is where that DDL takes effect, so
//! the table list is distrusted again then (a list read between the PREPARE and the commit has
//! none of it). A COMMIT PREPARED of anything else costs a look at this list (two-phase-commit
//! applications run one per transaction). One queue for every database: a tenant preparing hundreds of DDL
//! transactions pushes the others' out early (their DDL is then found at the periodic load).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

/// Bounded: an identifier never committed through pgpilot (committed elsewhere, or never) leaves
/// after this many newer ones; its DDL is then found at the periodic load.
const KEPT: usize = 256;

#[derive(Default)]
pub struct PreparedDdl {
    gids: Mutex<VecDeque<(Arc<str>, String)>>,
}

impl PreparedDdl {
    pub fn prepared(&self, db: &Arc<str>, gid: String) {
        let mut gids = self.gids.lock();
        if gids.len() == KEPT {
            gids.pop_front();
        }
        gids.push_back((db.clone(), gid));
    }

    /// Whether the transaction `gid` ran DDL. Kept after its COMMIT PREPARED (which may fail and
    /// be retried, as transaction managers do in recovery) until newer ones push it out: a
    /// repeated commit only makes the list be read once more.
    pub fn ran_ddl(&self, db: &str, gid: &str) -> bool {
        self.gids.lock().iter().any(|(d, g)| &**d == db && g == gid)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prepared_transaction_with_ddl_is_known_until_newer_ones_push_it_out() {
        let p = super::PreparedDdl::default();
        let db: std::sync::Arc<str> = "app".into();
        p.prepared(&db, "'g'".into());
        assert!(!p.ran_ddl("other", "'g'"), "per database");
        assert!(p.ran_ddl("app", "'g'"));
        assert!(p.ran_ddl("app", "'g'"), "a retried commit");
        for i in 0..super::KEPT {
            p.prepared(&db, format!("'{i}'"));
        }
        assert!(!p.ran_ddl("app", "'g'"), "bounded: the oldest left");
        assert!(p.ran_ddl("app", &format!("'{}'", super::KEPT - 1)));
    }
}
