//! The client's prepared statements and portals, one table each. Everything a stage knows of a
//! statement name (its analysis for insights, its cache identity, the registry statement it maps
//! to in transaction mode, the description version the client holds, what it does to the session)
//! lives in one entry: created by the client's Parse, gone with its Close or DEALLOCATE, or when
//! the server rejects or skips that Parse. One entry per name keeps the stages from disagreeing
//! about which text a name runs (a cache keyed by an older text than the server runs would serve
//! another statement's rows).

use std::sync::Arc;

use bytes::Bytes;
use foldhash::HashMap;

use super::sql_scan::Scan;
pub use super::statement_versions::ADOPTING;
use crate::cache::statement::CachedStatement;
use crate::prepared::Statement;
use crate::sql::Analysis;

/// One client statement name, as every stage sees it.
#[derive(Clone, Default)]
pub struct ClientStatement {
    pub analysis: Option<Arc<Analysis>>,
    pub cache: Option<Arc<CachedStatement>>,
    /// Transaction mode: the registry statement the name maps to.
    pub registry: Option<Arc<Statement>>,
    /// (registry id, the version a server described to this client under this name in this
    /// session); see `statement_versions`.
    pub version: Option<(u64, u64)>,
    /// The text changes session state each time it runs (replayed at every Bind).
    pub effect: Option<Arc<Scan>>,
    /// Its PREPARE TRANSACTION / COMMIT PREPARED statements (noted at every Bind).
    pub two_phase: Option<Arc<[(crate::sql::two_phase::Phase, String)]>>,
}

/// What a client's Parse did to the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Opened {
    /// A new entry (the unnamed statement is always replaced).
    #[default]
    Fresh,
    /// The name is taken: the Parse fails (42P05) and the statement it names stays.
    Duplicate,
    /// `prepared.client_max` names are open.
    Full,
}

pub struct Statements {
    named: HashMap<Bytes, ClientStatement>,
    unnamed: ClientStatement,
    max: usize,
}

impl Statements {
    pub fn new(max: usize) -> Self {
        Self { named: HashMap::default(), unnamed: ClientStatement::default(), max }
    }

    /// The entry under `name` (the unnamed statement always has one, possibly empty).
    pub fn get(&self, name: &[u8]) -> Option<&ClientStatement> {
        if name.is_empty() {
            Some(&self.unnamed)
        } else {
            self.named.get(name)
        }
    }

    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut ClientStatement> {
        if name.is_empty() {
            Some(&mut self.unnamed)
        } else {
            self.named.get_mut(name)
        }
    }

    /// The client's Parse under `name`. A new unnamed statement keeps the description version
    /// the client held: a driver re-parsing the same text still holds its description.
    pub fn open(&mut self, name: &[u8], entry: ClientStatement) -> Opened {
        if name.is_empty() {
            let version = self.unnamed.version;
            self.unnamed = ClientStatement { version, ..entry };
            return Opened::Fresh;
        }
        if self.named.contains_key(name) {
            return Opened::Duplicate;
        }
        if self.named.len() >= self.max {
            return Opened::Full;
        }
        self.named.insert(Bytes::copy_from_slice(name), entry);
        Opened::Fresh
    }

    /// Close (or DEALLOCATE) of `name`: its entry, if there was one.
    pub fn close(&mut self, name: &[u8]) -> Option<ClientStatement> {
        if name.is_empty() {
            Some(std::mem::take(&mut self.unnamed))
        } else {
            self.named.remove(name)
        }
    }

    /// The name holds nothing after all: the server rejected or skipped the Parse, or (unnamed)
    /// a simple Query replaced it. The unnamed statement keeps the version the client held.
    pub fn forget(&mut self, name: &[u8]) {
        if name.is_empty() {
            let version = self.unnamed.version;
            self.unnamed = ClientStatement { version, ..Default::default() };
        } else {
            self.named.remove(name);
        }
    }

    pub fn version(&self, name: &[u8]) -> Option<(u64, u64)> {
        self.get(name).and_then(|e| e.version)
    }

    /// Records the version the client holds under `name` (nothing when the name is not open).
    pub fn set_version(&mut self, name: &[u8], version: Option<(u64, u64)>) {
        if let Some(e) = self.get_mut(name) {
            e.version = version;
        }
    }

    pub fn registry(&self, name: &[u8]) -> Option<Arc<Statement>> {
        self.get(name).and_then(|e| e.registry.clone())
    }

    /// DISCARD ALL / DEALLOCATE ALL: no named statement is left, and the unnamed one is no
    /// longer a registry statement.
    pub fn drop_all(&mut self) {
        self.named.clear();
        self.unnamed.registry = None;
        self.unnamed.version = None;
    }

    /// How many named statements may be open (`prepared.client_max` at the session's start: the
    /// limit a Parse is refused at, and the one its error names).
    pub fn max(&self) -> usize {
        self.max
    }

    pub fn has_named(&self) -> bool {
        !self.named.is_empty()
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.named.contains_key(name)
    }
}

/// A portal as insights see it: the statement it runs and a hash of its parameters.
pub type PortalRun = (Arc<Analysis>, u64);

/// The client's portals as insights see them (named ones bounded like statements).
pub struct Portals {
    unnamed_run: Option<PortalRun>,
    named: HashMap<Bytes, PortalRun>,
    max: usize,
}

impl Portals {
    pub fn new(max: usize) -> Self {
        Self { unnamed_run: None, named: HashMap::default(), max }
    }

    pub fn run(&self, name: &[u8]) -> Option<PortalRun> {
        if name.is_empty() {
            self.unnamed_run.clone()
        } else {
            self.named.get(name).cloned()
        }
    }

    pub fn bind(&mut self, name: &[u8], run: Option<PortalRun>) {
        if name.is_empty() {
            self.unnamed_run = run;
        } else if let Some(run) = run {
            if self.named.len() < self.max || self.named.contains_key(name) {
                self.named.insert(Bytes::copy_from_slice(name), run);
            }
        } else {
            self.named.remove(name);
        }
    }

    pub fn close(&mut self, name: &[u8]) {
        if name.is_empty() {
            self.unnamed_run = None;
        } else {
            self.named.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_effect() -> ClientStatement {
        ClientStatement { effect: Some(Arc::new(Scan::default())), ..Default::default() }
    }

    #[test]
    fn a_taken_name_keeps_its_statement() {
        let mut t = Statements::new(4);
        assert_eq!(t.open(b"s1", with_effect()), Opened::Fresh);
        assert_eq!(t.open(b"s1", ClientStatement::default()), Opened::Duplicate);
        assert!(t.get(b"s1").unwrap().effect.is_some(), "the first Parse's statement stays");
        t.forget(b"s1");
        assert_eq!(t.open(b"s1", ClientStatement::default()), Opened::Fresh, "a rejected Parse frees the name");
        assert!(t.get(b"s1").unwrap().effect.is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = Statements::new(2);
        assert_eq!(t.open(b"a", ClientStatement::default()), Opened::Fresh);
        assert_eq!(t.open(b"b", ClientStatement::default()), Opened::Fresh);
        assert_eq!(t.open(b"c", ClientStatement::default()), Opened::Full);
        assert!(t.close(b"a").is_some());
        assert_eq!(t.open(b"c", ClientStatement::default()), Opened::Fresh);
    }

    #[test]
    fn the_unnamed_statement_keeps_its_description_version_across_parses() {
        let mut t = Statements::new(2);
        t.get_mut(b"").unwrap().version = Some((7, 3));
        assert_eq!(t.open(b"", with_effect()), Opened::Fresh);
        let u = t.get(b"").unwrap();
        assert_eq!(u.version, Some((7, 3)));
        assert!(u.effect.is_some());
        assert!(t.close(b"").is_some());
        assert_eq!(t.get(b"").unwrap().version, None, "Close forgets it");
    }

    #[test]
    fn named_portals_are_bounded() {
        let mut p = Portals::new(1);
        let a: Arc<Analysis> = Arc::new(crate::sql::parse::opaque("x"));
        p.bind(b"p1", Some((a.clone(), 1)));
        p.bind(b"p2", Some((a.clone(), 2)));
        assert!(p.run(b"p1").is_some());
        assert!(p.run(b"p2").is_none());
        p.bind(b"p1", Some((a, 3)));
        assert_eq!(p.run(b"p1").unwrap().1, 3, "a rebind of a known name replaces it");
    }
}
