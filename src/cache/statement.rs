//! A prepared statement as the result cache knows it: its analysis, the text and parameter types
//! that are the statement part of a cache key (and their hash), and its cache hint. Kept in the
//! session's statement table so a Bind finds it without a lookup; defined here, below the
//! session, so that the table (which the stages read) depends on no stage.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::cache::policy::Hint;
use crate::sql::Analysis;

/// A prepared statement as the cache sees it.
pub struct CachedStatement {
    pub analysis: Arc<Analysis>,
    /// Text and parameter types: the statement part of the key.
    pub ident: Bytes,
    /// Its hash, combined with the arguments' for the cache's repeat counting.
    pub ident_hash: u64,
    pub hint: Hint,
}

impl CachedStatement {
    /// The same text and types: a driver's unnamed Parse, repeated for every query.
    fn is(&self, analysis: &Arc<Analysis>, query: &[u8], types: &[u8]) -> bool {
        let i = &self.ident;
        Arc::ptr_eq(&self.analysis, analysis)
            && i.len() == query.len() + 1 + types.len()
            && i.starts_with(query)
            && i.ends_with(types)
            && i[query.len()] == 0
    }

    /// The parameter types its Parse declared (count, then OIDs).
    pub fn declared_types(&self) -> &[u8] {
        self.ident.iter().position(|&b| b == 0).map_or(&[][..], |nul| &self.ident[nul + 1..])
    }

    fn new(analysis: Arc<Analysis>, query: &[u8], types: &[u8], hint: Hint) -> Self {
        let mut ident = BytesMut::with_capacity(query.len() + types.len() + 1);
        ident.extend_from_slice(query);
        ident.extend_from_slice(&[0]);
        ident.extend_from_slice(types);
        let ident_hash = xxhash_rust::xxh3::xxh3_64(&ident);
        Self { hint, ident: ident.freeze(), ident_hash, analysis }
    }

    /// The cache's identity of a client's Parse under `name`, given the one the name had
    /// (`previous`): a driver's unnamed Parse repeated with the same text and types keeps it.
    pub fn identity(
        previous: Option<&Arc<CachedStatement>>,
        name: &[u8],
        analysis: &Arc<Analysis>,
        (query, types): (&[u8], &[u8]),
        hint: Hint,
    ) -> Arc<CachedStatement> {
        match previous {
            Some(p) if name.is_empty() && p.is(analysis, query, types) => p.clone(),
            _ => Arc::new(CachedStatement::new(analysis.clone(), query, types, hint)),
        }
    }
}
