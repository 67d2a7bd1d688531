//! The prepared transactions (two-phase commit) that ran DDL through this pgpilot, by database
//! and identifier: their COMMIT PREPARED, from any session, is where that DDL takes effect, so
//! the table list is distrusted again then (a list read between the PREPARE and the commit has
//! none of it). A COMMIT PREPARED of anything else costs nothing (two-phase-commit applications
//! run one per transaction).

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

    /// The transaction `gid` was committed or rolled back: whether it had run DDL.
    pub fn ended(&self, db: &str, gid: &str) -> bool {
        let mut gids = self.gids.lock();
        match gids.iter().position(|(d, g)| &**d == db && g == gid) {
            Some(i) => gids.remove(i).is_some(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prepared_transaction_with_ddl_is_known_until_it_ends() {
        let p = super::PreparedDdl::default();
        let db: std::sync::Arc<str> = "app".into();
        p.prepared(&db, "'g'".into());
        assert!(!p.ended("other", "'g'"), "per database");
        assert!(p.ended("app", "'g'"));
        assert!(!p.ended("app", "'g'"), "once");
        for i in 0..=super::KEPT {
            p.prepared(&db, format!("'{i}'"));
        }
        assert!(!p.ended("app", "'0'"), "bounded: the oldest left");
        assert!(p.ended("app", &format!("'{}'", super::KEPT)));
    }
}
