//! The cache stage's key for a read past the admission (a simple Query's or a Bind's), and
//! whether it is worth a lookup at all: out of the stage's per-message path, which most runs of
//! a read that does not repeat leave before any of this.

use std::sync::Arc;

use super::*;

impl CacheStage {
    /// A simple Query's read past the admission: its key when it is worth a lookup. Out of line:
    /// most runs of a read that does not repeat end before it, and its frame (the key) would
    /// otherwise be set up for them all.
    #[inline(never)]
    pub(super) fn key_query(
        &mut self,
        cx: &Cx<'_>,
        text: &[u8],
        (a, literals): (&Arc<Analysis>, u64),
        skipped: bool,
    ) -> Option<(Key, Asked, bool)> {
        let ttl = self.worth_looking_up(a, cx.turn.hint, skipped, || literals)?;
        let (mut key, cold) = self.key(cx, fe::QUERY, a, ttl, (text, 0, &[]))?;
        let keyed = a.keyed.as_deref();
        if let Some(scopes) =
            cache_keys::literal_read_scopes(&self.cache.relations, &self.database, keyed, text, cx.literals)
        {
            key.tables = Arc::from(scopes);
        }
        Some((key, Asked::Query { params: params_hash(text), analysis: a.clone() }, cold))
    }

    /// The TTL of a read that may be cached and is worth looking up (`params`: a hash of what
    /// tells this run's result from the shape's other runs): a hint or rule always is, a
    /// skipped shape's run the admission let through is, others as the admission decides.
    fn worth_looking_up(
        &mut self,
        a: &Analysis,
        hint: Hint,
        skipped: bool,
        params: impl Fn() -> u64,
    ) -> Option<std::time::Duration> {
        let (ttl, asked) = self.policy.load().decide(a, hint)?;
        (asked || skipped || self.cache.admit(&a.learned, params)).then_some(ttl)
    }

    /// The key for a cacheable read (and whether it must wait for the first table list), or
    /// None when a table it reads is not an ordinary table.
    fn key(
        &self,
        cx: &Cx<'_>,
        proto: u8,
        a: &Analysis,
        ttl: std::time::Duration,
        (statement, variant, args): (&[u8], u64, &[u8]),
    ) -> Option<(Key, bool)> {
        let cold = !self.relations_known(&a.read_names);
        if cold && !self.cache.relations.first_load_running(&self.database) {
            return None;
        }
        let (db, user, settings) = (&self.database, &*self.user, cx.settings);
        let parts = KeyParts { proto, db, user, settings, statement, variant, args };
        Some((Key::new(parts, a, ttl), cold))
    }

    /// Which version of the statement `name` the client holds (see `KeyParts::variant`); None
    /// when its results must not come from the cache (a plan gone stale, no description yet).
    fn statement_variant(&self, cx: &Cx<'_>, name: &[u8]) -> Option<u64> {
        if cx.mode == PoolMode::Session {
            // No registry here: named statements share entries only within this session.
            return Some(if name.is_empty() { 0 } else { self.nonce ^ xxhash_rust::xxh3::xxh3_64(name) });
        }
        match cx.statements.registry(name) {
            // Only a version a server described to this client in this session is proven.
            Some(st) => cx.statements.held_version(name, &st),
            // An unnamed statement parsed anew: the client learns its shape from this reply.
            None if name.is_empty() => Some(0),
            None => None,
        }
    }

    /// A Bind's read past the admission: its key when it is worth a lookup (out of line, as
    /// `key_query`).
    #[inline(never)]
    pub(super) fn key_bind(
        &mut self,
        cx: &Cx<'_>,
        s: &crate::cache::statement::CachedStatement,
        (name, args): (&[u8], &[u8]),
        skipped: bool,
    ) -> Option<(Key, Asked, bool)> {
        let params = || s.ident_hash ^ xxhash_rust::xxh3::xxh3_64(args);
        let ttl = self.worth_looking_up(&s.analysis, s.hint, skipped, params)?;
        let variant = self.statement_variant(cx, name)?;
        let (mut key, cold) = self.key(cx, fe::EXECUTE, &s.analysis, ttl, (&s.ident, variant, args))?;
        let (keyed, types) = (s.analysis.keyed.as_deref(), || s.declared_types());
        if let Some(scopes) = cache_keys::read_scopes(&self.cache.relations, &self.database, keyed, types, args) {
            key.tables = Arc::from(scopes); // keyed on its primary key: other keys' writes keep it
        }
        Some((key, Asked::Bind { params: params_hash(args), analysis: s.analysis.clone() }, cold))
    }
}
