//! The session's side of the result cache: which client messages are answered from the cache
//! (a simple Query, or Bind/Describe/Execute/Close of the unnamed portal), and which misses are
//! captured for it. A hit never needs a server connection; with one held (inside a transaction)
//! the replies are queued behind the server's, in order.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::reply_queue::{Action, Kind};
use super::session::Session;
use crate::cache::fill::Fill;
use crate::cache::policy::{hint, Hint};
use crate::cache::{Entry, FillPlan, Key, KeyParts, Lookup};
use crate::net::messages;
use crate::prepared::messages as pm;
use crate::protocol::frontend::{ClientMessage, Target};
use crate::sql::tokens::fnv1a;
use crate::sql::Analysis;

/// A prepared statement as the cache sees it.
pub struct CachedStatement {
    pub analysis: Arc<Analysis>,
    /// Text and parameter types: the statement part of the key.
    ident: Bytes,
    /// Its hash, combined with the arguments' for the cache's repeat counting.
    ident_hash: u64,
    hint: Hint,
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

    fn new(analysis: Arc<Analysis>, query: &[u8], types: &[u8]) -> Self {
        let mut ident = BytesMut::with_capacity(query.len() + types.len() + 1);
        ident.extend_from_slice(query);
        ident.extend_from_slice(&[0]);
        ident.extend_from_slice(types);
        let ident_hash = xxhash_rust::xxh3::xxh3_64(&ident);
        Self { hint: hint(query), ident: ident.freeze(), ident_hash, analysis }
    }
}

/// What the unnamed portal holds, as far as the cache is concerned.
#[derive(Default)]
pub enum Portal {
    #[default]
    Unknown,
    /// Answered from this entry; `at` is the byte offset of the next DataRow to send.
    Hit { entry: Arc<Entry>, at: usize },
    /// Forwarded; its result is captured when it is executed.
    Fill { plan: Box<FillPlan>, described: bool },
}

/// The session's cache state.
#[derive(Default)]
pub struct CacheState {
    pub on: bool,
    /// Caching stopped for this session (session mode after SET, temporary tables...).
    pub off: bool,
    /// A simple Query miss, attached to its reply-queue entry once forwarded.
    query_fill: Option<Box<FillPlan>>,
    pub writes: super::cache_writes::Writes,
    /// Distinguishes this session's named statements in session mode.
    nonce: u64,
}

impl CacheState {
    /// `startup` settings that make snapshots pgpilot cannot see switch the cache off.
    pub fn new(on: bool, state: &super::session_state::SessionState) -> Self {
        let isolation = state.get("default_transaction_isolation").is_some_and(|v| !v.starts_with("read"));
        Self { on, off: isolation, nonce: rand::random(), ..Default::default() }
    }
}

impl Session {
    /// Reads may be served from or stored into the cache at this point of the session.
    fn cache_usable(&self) -> bool {
        self.cached.on
            && !self.cached.off
            && self.pin.is_none()
            && !self.state_unknown
            && !self.state_dirty
            && self.cached.writes.clean()
            && self.tx.status != b'E'
            && !self.tx.in_copy()
            && !(self.in_transaction_block()
                && self.app.cache.relations.snapshot_default(&self.observe.origin.database))
    }

    fn in_transaction_block(&self) -> bool {
        self.server.is_some() && self.tx.status == b'T'
    }

    /// The cache's look at a client message before it is forwarded; true when it was answered.
    pub(super) async fn cache_before(&mut self, msg: &ClientMessage<'_>) -> bool {
        match *msg {
            ClientMessage::Query { text } => self.cache_query(text).await,
            ClientMessage::Bind { portal, statement, rest } => self.cache_bind(portal, statement, rest).await,
            ClientMessage::Describe(Target::Portal(b"")) => self.cache_describe(),
            ClientMessage::Execute { portal: b"", max_rows } => self.cache_execute(max_rows as usize),
            ClientMessage::Close(target) => self.cache_close(target),
            ClientMessage::FunctionCall | ClientMessage::Malformed => {
                // What it runs cannot be known: it may write anything.
                self.cached.writes.note_unknown();
                self.portals.unnamed_cache = Portal::Unknown;
                false
            }
            _ => false,
        }
    }

    /// The first part of a message too large to read whole (session-mode Bind, FunctionCall):
    /// pgpilot cannot tell what it runs, so it may write anything, and the portal is unknown.
    pub(super) fn cache_on_part(&mut self, tag: u8) {
        match tag {
            b'B' => {
                self.portals.unnamed_cache = Portal::Unknown;
                self.cached.writes.note_unknown();
            }
            b'F' => {
                self.cached.writes.note_unknown();
                self.cached.writes.close_group();
            }
            _ => {}
        }
    }

    /// The message a fill plan was made for never reached a server.
    pub(super) fn cache_forget_fills(&mut self) {
        self.cached.query_fill = None;
        if matches!(self.portals.unnamed_cache, Portal::Fill { .. }) {
            self.portals.unnamed_cache = Portal::Unknown;
        }
    }

    /// After a message was forwarded: attach captures to its reply-queue entry.
    pub(super) fn cache_after(&mut self, msg: &ClientMessage<'_>, in_copy: bool) {
        match msg {
            ClientMessage::Sync if !in_copy => self.cached.writes.close_group(),
            ClientMessage::FunctionCall => self.cached.writes.close_group(),
            ClientMessage::Query { .. } => {
                self.cached.writes.close_group();
                if let Some(plan) = self.cached.query_fill.take() {
                    let limit = self.app.cache.max_entry_bytes();
                    self.pending.attach_fill(Fill::new(plan, true, limit));
                }
            }
            ClientMessage::Describe(Target::Portal(b"")) => {
                if let Portal::Fill { described, .. } = &mut self.portals.unnamed_cache {
                    *described = true;
                    self.pending.capture_describe();
                }
            }
            ClientMessage::Execute { portal: b"", .. } => {
                if let Portal::Fill { plan, .. } = std::mem::take(&mut self.portals.unnamed_cache) {
                    let limit = self.app.cache.max_entry_bytes();
                    self.pending.attach_fill(Fill::new(plan, false, limit));
                }
            }
            _ => {}
        }
    }

    /// Just before an Execute of a filling portal is forwarded: a Describe the client did not
    /// send is injected (its reply hidden) so the entry can answer a later Describe.
    pub(super) fn cache_before_forward(&mut self, msg: &ClientMessage<'_>) {
        if !matches!(msg, ClientMessage::Execute { portal: b"", .. }) {
            return;
        }
        if let Portal::Fill { described: false, .. } = self.portals.unnamed_cache {
            self.sout.extend_from_slice(b"D\0\0\0\x06P\0");
            self.pending.push(Kind::DescribePortal, Action::Suppress);
            self.pending.capture_describe();
            self.tx.on_client(b'D');
        }
    }

    async fn cache_query(&mut self, text: &[u8]) -> bool {
        self.portals.unnamed_cache = Portal::Unknown;
        self.cached.query_fill = None;
        let analyzed = std::mem::take(&mut self.turn.analyzed);
        if analyzed.is_empty() && text.iter().any(u8::is_ascii_alphanumeric) {
            // Text the analysis could not split into statements: it may write anything.
            self.cached.writes.note_unknown();
        }
        for (a, _) in &analyzed {
            self.note_writes(a);
        }
        let single = match analyzed.as_slice() {
            [(a, literals)] => Some((a.clone(), *literals)),
            _ => None,
        };
        self.turn.analyzed = analyzed;
        let Some((a, literals)) = single else { return false };
        if !self.pending.is_empty() || !self.cache_usable() {
            return false;
        }
        let Some(ttl) = self.worth_looking_up(&a, hint(text), literals) else { return false };
        let Some(key) = self.cache_key(b'Q', &a, ttl, (text, 0, &[])) else { return false };
        match self.app.cache.lookup(key, self.app.coalesce_wait()).await {
            Lookup::Hit(e) => {
                self.cout.extend_from_slice(&e.row_desc);
                self.cout.extend_from_slice(&e.body);
                let status = if self.server.is_some() { self.tx.status } else { b'I' };
                messages::ready_for_query(&mut self.cout, status);
                self.observe_hit(&a, fnv1a(text), e.rows);
                true
            }
            Lookup::Miss(plan) => {
                self.cached.query_fill = Some(plan);
                false
            }
            Lookup::Bypass => false,
        }
    }

    /// A hit still counts as an execution for the insights (calls, N+1), with no server time.
    fn observe_hit(&mut self, a: &Arc<Analysis>, params: u64, rows: u32) {
        if !self.observe.enabled {
            return;
        }
        let now = std::time::Instant::now();
        let c = crate::insights::Completed {
            analysis: a.clone(),
            params,
            sent: now,
            done: now,
            client_time: now.saturating_duration_since(self.observe.received),
            rows: rows as u64,
            error: false,
            pipelined: false,
            cached: true,
        };
        self.on_completed(c);
    }

    /// The TTL of a read that may be cached and is worth looking up (`params`: a hash of what
    /// tells this run's result from the shape's other runs): a hint or rule always is, others as
    /// the shape's admission decides. Checked before anything costly.
    fn worth_looking_up(&self, a: &Analysis, hint: Hint, params: u64) -> Option<std::time::Duration> {
        let (ttl, asked) = self.app.cache.policy.load().decide(a, hint)?;
        (asked || self.app.cache.admit(&a.learned, params)).then_some(ttl)
    }

    /// The key for a cacheable read, or None when a table it reads is not an ordinary table.
    fn cache_key(
        &mut self,
        proto: u8,
        a: &Analysis,
        ttl: std::time::Duration,
        (statement, variant, args): (&[u8], u64, &[u8]),
    ) -> Option<Key> {
        if !self.relations_known(&a.read_names) {
            return None;
        }
        let db = &self.observe.origin.database;
        let settings = self.state.sig();
        let parts = KeyParts { proto, db, user: &self.info.user, settings, statement, variant, args };
        Some(Key::new(parts, a, ttl))
    }

    /// Which version of the statement `name` the client holds (see `KeyParts::variant`); None
    /// when its results must not come from the cache (a plan gone stale, no description yet).
    fn statement_variant(&self, name: &[u8]) -> Option<u64> {
        if self.mode == crate::config::PoolMode::Session {
            // No registry here: named statements share entries only within this session.
            return Some(if name.is_empty() { 0 } else { self.cached.nonce ^ xxhash_rust::xxh3::xxh3_64(name) });
        }
        match self.mapped(name) {
            // Only a version a server described to this client in this session is proven.
            // The version (description hash) a server gave this client in this session; none
            // proven yet: not from the cache.
            Some(st) => self.held_version(name, &st),
            // An unnamed statement parsed anew: the client learns its shape from this reply.
            None if name.is_empty() => Some(0),
            None => None,
        }
    }

    /// Every table read is an ordinary table (a list loaded in the background).
    fn relations_known(&self, tables: &[Arc<str>]) -> bool {
        let cfg = self.app.config.load();
        let refresh = cfg.cache.relations_refresh_s * 1000;
        let db = &self.observe.origin.database;
        let (ok, due) = self.app.cache.relations.check(db, tables, crate::clock::now_ms(), refresh);
        if due && self.app.cache.relations.begin_load(db) {
            crate::cache::relations::spawn_load(self.app.cache.relations.clone(), self.pool.clone(), db.clone());
        }
        ok
    }

    /// The cache's identity of a client's Parse; a driver's unnamed Parse repeated with the
    /// same text and types keeps the one it had.
    pub(super) fn cache_identity(
        &self,
        name: &[u8],
        analysis: &Arc<Analysis>,
        query: &[u8],
        types: &[u8],
    ) -> Arc<CachedStatement> {
        let previous = self.statements.get(name).and_then(|e| e.cache.as_ref());
        match previous {
            Some(p) if name.is_empty() && p.is(analysis, query, types) => p.clone(),
            _ => Arc::new(CachedStatement::new(analysis.clone(), query, types)),
        }
    }

    async fn cache_bind(&mut self, portal: &[u8], name: &[u8], args: &[u8]) -> bool {
        let stmt = self.turn.statement.as_ref().and_then(|e| e.cache.clone());
        match &stmt {
            Some(s) => self.note_writes(&s.analysis.clone()),
            None => self.cached.writes.note_unknown(),
        }
        if !portal.is_empty() {
            return false;
        }
        self.portals.unnamed_cache = Portal::Unknown;
        let Some(s) = stmt else { return false };
        if !self.cache_usable() {
            return false;
        }
        let params = s.ident_hash ^ xxhash_rust::xxh3::xxh3_64(args);
        let Some(ttl) = self.worth_looking_up(&s.analysis, s.hint, params) else { return false };
        let Some(variant) = self.statement_variant(name) else { return false };
        let Some(key) = self.cache_key(b'E', &s.analysis, ttl, (&s.ident, variant, args)) else { return false };
        match self.app.cache.lookup(key, self.app.coalesce_wait()).await {
            Lookup::Hit(entry) => {
                self.local_portal = false;
                self.observe_hit(&s.analysis, fnv1a(args), entry.rows);
                self.portals.unnamed_cache = Portal::Hit { entry, at: 0 };
                self.answer(pm::bind_complete())
            }
            Lookup::Miss(plan) => {
                self.portals.unnamed_cache = Portal::Fill { plan, described: false };
                false
            }
            Lookup::Bypass => false,
        }
    }

    fn cache_describe(&mut self) -> bool {
        let Portal::Hit { entry, .. } = &self.portals.unnamed_cache else { return false };
        let reply = entry.row_desc.clone();
        self.answer(reply)
    }

    /// Execute of a portal answered from the cache, honouring the row limit (PortalSuspended).
    fn cache_execute(&mut self, max_rows: usize) -> bool {
        let Portal::Hit { entry, at } = &mut self.portals.unnamed_cache else { return false };
        let (end, rows, more) = entry.split_rows(*at, max_rows);
        let mut reply = BytesMut::from(&entry.body[*at..end]);
        if more {
            reply.extend_from_slice(b"s\0\0\0\x04");
        } else if *at == 0 {
            reply.extend_from_slice(&entry.body[end..]);
        } else {
            // After a PortalSuspended, the server's tag counts the rows of this Execute only.
            reply.extend_from_slice(&messages::command_complete_frame(&format!("SELECT {rows}")));
        }
        *at = end;
        self.answer(reply.freeze())
    }

    fn cache_close(&mut self, target: Target<'_>) -> bool {
        match target {
            Target::Portal(b"") if matches!(self.portals.unnamed_cache, Portal::Hit { .. }) => {
                self.portals.unnamed_cache = Portal::Unknown;
                self.answer(pm::close_complete())
            }
            _ => false,
        }
    }
}
