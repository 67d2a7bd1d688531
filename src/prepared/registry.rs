//! The global statement registry, shared by all sessions.

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// A statement as prepared on servers: the Parse body under the proxy's name.
#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    pub server_name: String,
    pub query: Bytes,
    /// Parameter type section of Parse (int16 count + int32 OIDs), verbatim.
    pub types: Bytes,
    /// Session-settings signature it was registered under (search_path etc. change its meaning).
    pub settings: u64,
    /// A server accepted it once: later Parses can be answered without a server.
    pub validated: AtomicBool,
    /// Dropped from the registry (`Registry::remove`): a session that kept it aside must look
    /// the text up again.
    retired: AtomicBool,
    /// The current description with its hash (the statement's *version*: content-addressed, so
    /// a DDL undone brings the old version back, as PostgreSQL's plan revalidation would), and
    /// the registry's DDL epoch when the Describe that gave it was sent: one from before a DDL
    /// is not answered to a client's Describe (`fresh`; it goes to a server and is compared, where
    /// PostgreSQL answers 0A000 if the shape changed), without a walk over every statement at each DDL.
    description: Mutex<Option<(Bytes, u64, u64)>>,
    /// The registry's DDL epoch, shared.
    epoch: Arc<AtomicU64>,
}

impl Statement {
    pub fn is_validated(&self) -> bool {
        self.validated.load(Ordering::Relaxed)
    }

    /// Whether `get_or_insert(query, types, settings)` would return this very entry now.
    pub fn is_entry_for(&self, query: &[u8], types: &[u8], settings: u64) -> bool {
        self.settings == settings
            && *self.query == *query
            && *self.types == *types
            && !self.retired.load(Ordering::Acquire)
    }

    /// The hash of the current description; 0 while none is known.
    pub fn version(&self) -> u64 {
        self.description.lock().as_ref().map_or(0, |d| d.1)
    }

    /// The current description and its version, read together, when no DDL was seen since the
    /// Describe that gave it was sent.
    pub fn fresh(&self) -> Option<(Bytes, u64)> {
        let epoch = self.ddl_epoch();
        self.description.lock().as_ref().filter(|d| d.2 == epoch).map(|(d, h, _)| (d.clone(), *h))
    }

    pub fn description(&self) -> Option<Bytes> {
        self.description.lock().as_ref().map(|d| d.0.clone())
    }

    /// The registry's DDL epoch now (a Describe sent now gives a description of this epoch).
    pub fn ddl_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A server's description of a fresh prepare, asked at DDL epoch `sent_at`: the current
    /// one from now on. Returns its version (never 0).
    pub fn described(&self, reply: Bytes, sent_at: u64) -> u64 {
        let h = version_of(&reply);
        *self.description.lock() = Some((reply, h, sent_at));
        h
    }

    /// A server showed the statement stale (0A000, a type gone): no description is current.
    pub fn went_stale(&self) {
        *self.description.lock() = None;
    }
}

/// The version of a description: its hash, never 0 (0 means "not described").
pub fn version_of(description: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(description) | 1
}

type Key = (Bytes, Bytes, u64);

/// Server-side names of pgpilot's copies: `pgpilot_<id>` (a client's SQL DEALLOCATE of one is
/// answered by the session, `frontend/forward.rs`).
pub const SERVER_NAME_PREFIX: &str = "pgpilot_";

pub struct Registry {
    map: Mutex<HashMap<Key, Arc<Statement>>>,
    next_id: AtomicU64,
    max: usize,
    /// Bumped by DDL seen through pgpilot: server copies prepared before it are prepared again
    /// (and re-described) before their next use; descriptions from before it are not fresh.
    epoch: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
#[error("pgpilot: too many distinct prepared statements ({0}); raise prepared.registry_max or close unused statements")]
pub struct RegistryFull(pub usize);

impl Registry {
    pub fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            max,
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// DDL went through pgpilot (sent, and again at its transaction's end): no server copy
    /// prepared before now is trusted, nor any description to answer a Describe (`Statement::fresh`).
    pub fn ddl_seen(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The entry for this text and types, created on first use.
    pub fn get_or_insert(&self, query: &[u8], types: &[u8], settings: u64) -> Result<Arc<Statement>, RegistryFull> {
        let key: Key = (Bytes::copy_from_slice(query), Bytes::copy_from_slice(types), settings);
        let mut map = self.map.lock();
        if let Some(s) = map.get(&key) {
            return Ok(s.clone());
        }
        if map.len() >= self.max {
            // Entries only the registry still holds are no client's statement any more.
            map.retain(|_, s| Arc::strong_count(s) > 1);
            if map.len() >= self.max {
                return Err(RegistryFull(self.max));
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stmt = Arc::new(Statement {
            id,
            server_name: format!("{SERVER_NAME_PREFIX}{id}"),
            query: key.0.clone(),
            types: key.1.clone(),
            settings,
            validated: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            description: Mutex::new(None),
            epoch: self.epoch.clone(),
        });
        map.insert(key, stmt.clone());
        Ok(stmt)
    }

    /// Drops an entry that turned out invalid (Parse error) or stale (result type changed), so the
    /// next Parse of the same text starts afresh under a new server name.
    pub fn remove(&self, stmt: &Arc<Statement>) {
        let mut map = self.map.lock();
        let key: Key = (stmt.query.clone(), stmt.types.clone(), stmt.settings);
        if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, stmt)) {
            map.remove(&key);
            stmt.retired.store(true, Ordering::Release);
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_and_types_share_an_entry() {
        let r = Registry::new(10);
        let a = r.get_or_insert(b"select 1", b"\0\0", 0).unwrap();
        let b = r.get_or_insert(b"select 1", b"\0\0", 0).unwrap();
        let c = r.get_or_insert(b"select 1", b"\0\x01\0\0\0\x17", 0).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(a.id, c.id);
        assert!(a.is_entry_for(b"select 1", b"\0\0", 0));
        assert!(!a.is_entry_for(b"select 1", b"\0\0", 1));
        assert!(!a.is_entry_for(b"select 2", b"\0\0", 0));
        assert!(!c.is_entry_for(b"select 1", b"\0\0", 0));
        let sent_at = a.ddl_epoch();
        let v = a.described(Bytes::from_static(b"n\0\0\0\x04"), sent_at);
        assert_eq!(a.fresh().map(|(_, h)| h), Some(v));
        r.ddl_seen();
        assert!(r.epoch() > sent_at && a.fresh().is_none(), "no description from before a DDL is fresh");
        assert_eq!(a.version(), v, "still the version copies are compared with");
        a.described(Bytes::from_static(b"n\0\0\0\x04"), sent_at);
        assert!(a.fresh().is_none(), "asked before the DDL, answered after it: not fresh");
        a.described(Bytes::from_static(b"n\0\0\0\x04"), a.ddl_epoch());
        assert_eq!(a.fresh().map(|(_, h)| h), Some(v), "described again: fresh");
        r.remove(&a);
        assert!(!a.is_entry_for(b"select 1", b"\0\0", 0), "a removed entry is no longer the text's");
        let d = r.get_or_insert(b"select 1", b"\0\0", 0).unwrap();
        assert_ne!(a.id, d.id);
        assert!(d.is_entry_for(b"select 1", b"\0\0", 0));
    }

    #[test]
    fn versions_are_descriptions() {
        let r = Registry::new(10);
        let s = r.get_or_insert(b"select 1", b"\0\0", 0).unwrap();
        assert_eq!(s.version(), 0);
        let a = s.described(Bytes::from_static(b"a"), 0);
        let b = s.described(Bytes::from_static(b"b"), 0);
        assert!(a != b && a != 0 && b != 0 && s.version() == b);
        s.went_stale();
        assert_eq!((s.version(), s.description()), (0, None));
        assert_eq!(s.described(Bytes::from_static(b"a"), 0), a, "a DDL undone is the old version again");
    }

    #[test]
    fn full_registry_drops_unreferenced_entries_first() {
        let r = Registry::new(2);
        let kept = r.get_or_insert(b"a", b"", 0).unwrap();
        drop(r.get_or_insert(b"b", b"", 0).unwrap());
        assert!(r.get_or_insert(b"c", b"", 0).is_ok());
        let _c = r.get_or_insert(b"c", b"", 0).unwrap();
        assert!(r.get_or_insert(b"d", b"", 0).is_err());
        drop(kept);
    }
}
