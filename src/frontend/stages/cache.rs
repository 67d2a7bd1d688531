//! The result cache stage: which client messages are answered from the cache (a simple Query,
//! or Bind/Describe/Execute/Close of the unnamed portal), which misses are captured for it, and
//! which committed writes invalidate it. A hit never needs a server connection; with one held
//! (inside a transaction) the replies are queued behind the server's, in order.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::cache_keys;
use super::cache_portal::Portal;
use super::cache_relations::relations_known;
use super::cache_writes::Writes;
use super::{Cx, Stage};
use crate::cache::fill::Fill;
use crate::cache::policy::{Hint, Policy};
use crate::cache::{FillPlan, Key, KeyParts, Lookup, ResultCache, TableViews};
use crate::config::{Config, PoolMode};
use crate::net::messages;
use crate::pool::Pool;
use crate::protocol::backend as be;
use crate::protocol::backend::tx_status;
use crate::protocol::frontend::{self as fe, ClientMessage, Target};
use crate::sql::tokens::params_hash;
use crate::sql::{Analysis, StatementKind};

/// A read worth a lookup, and what a hit stands for (insights count it as a call).
enum Asked {
    Query { analysis: Arc<Analysis>, params: u64 },
    Bind { analysis: Arc<Analysis>, params: u64 },
}

impl Asked {
    /// The tables it reads.
    fn tables(&self) -> &[Arc<str>] {
        match self {
            Asked::Query { analysis, .. } | Asked::Bind { analysis, .. } => &analysis.read_names,
        }
    }
}

/// A read worth a lookup: its key and what a hit stands for.
pub struct Planned {
    key: Key,
    asked: Asked,
    /// Its database's table list is being loaded for the first time: wait for it briefly.
    cold: bool,
}

/// The session's result cache stage.
pub struct CacheStage {
    pub on: bool,
    /// Caching stopped for this session (session mode after SET, temporary tables...).
    off: bool,
    /// A simple Query miss, attached to its reply-queue entry once forwarded.
    query_fill: Option<Box<FillPlan>>,
    /// What the unnamed portal holds.
    portal: Portal,
    writes: Writes,
    /// What the tables this session writes are (catalog facts, watch deadlines), kept.
    views: TableViews,
    /// Distinguishes this session's named statements in session mode.
    nonce: u64,
    cache: Arc<ResultCache>,
    /// The cache's rules, re-read only when a reload replaced them (a pointer compare per read,
    /// where a plain `ArcSwap::load` costs ~140 instructions).
    policy: arc_swap::Cache<Arc<ArcSwap<Policy>>, Arc<Policy>>,
    config: Arc<ArcSwap<Config>>,
    /// The pool the relation list is read through.
    pool: Arc<Pool>,
    database: Arc<str>,
    user: Arc<str>,
    /// When the database was last found to have no relation that runs user code.
    code_free: isolation::CodeFree,
    /// This session's first checkout waited for the database's first table list (once only).
    list_awaited: bool,
    /// DDL was sent and its transaction's boundary has not come (`list_outdated`): the list is
    /// marked out of date again there (a load started meanwhile may have read the catalog
    /// before the commit), and each ReadyForQuery 'I' until then, and the one after a COMMIT
    /// tag (COMMIT AND CHAIN keeps the status 'T'), announces it.
    pub ddl_pending: bool,
    /// A COMMIT of the transaction that ran the pending DDL was reported, its ReadyForQuery not
    /// yet (`at_ready`).
    ddl_committed: bool,
}

/// What the cache stage works with, besides the session's context.
pub struct Handles {
    pub cache: Arc<ResultCache>,
    pub config: Arc<ArcSwap<Config>>,
    pub pool: Arc<Pool>,
    pub database: Arc<str>,
    pub user: Arc<str>,
}

impl CacheStage {
    /// `startup` settings that make snapshots pgpilot cannot see switch the cache off.
    /// `isolate`: session isolation asks the table list too (`runs_attached_code`), cache or not.
    pub fn new(on: bool, isolate: bool, state: &crate::frontend::session_state::SessionState, h: Handles) -> Self {
        let isolation = state.get("default_transaction_isolation").is_some_and(|v| !v.starts_with("read"));
        if on {
            // The first login to a database starts loading its table list, so its first reads
            // find it (or wait for it briefly) instead of going uncached until a read asks.
            preload(&h);
        } else if isolate {
            relations_known(&h.cache, &h.config, &h.pool, &h.database, &[]);
        }
        Self {
            on,
            off: isolation,
            query_fill: None,
            portal: Portal::Unknown,
            writes: Writes::default(),
            views: TableViews::default(),
            nonce: rand::random(),
            policy: arc_swap::Cache::new(h.cache.policy.clone()),
            cache: h.cache,
            config: h.config,
            pool: h.pool,
            database: h.database,
            user: h.user,
            code_free: isolation::CodeFree::default(),
            list_awaited: false,
            ddl_pending: false,
            ddl_committed: false,
        }
    }

    /// The unnamed portal is answered from the cache (its Describe, Execute and Close are).
    pub fn answering(&self) -> bool {
        matches!(self.portal, Portal::Hit { .. })
    }

    /// `on_send` has work for `msg`: pgpilot's own Describe ahead of a filling portal's Execute,
    /// or its own Execute ahead of the Sync after a row-limited one. (The portal's state first:
    /// one compare rules out the common case, no capture running.)
    #[inline]
    pub fn sends_ahead(&self, msg: &ClientMessage<'_>) -> bool {
        match self.portal {
            Portal::Unknown | Portal::Hit { .. } => false,
            Portal::Suspended => true,
            Portal::Fill { .. } => matches!(msg, ClientMessage::Execute { portal: b"", .. }),
        }
    }

    /// `after_send` has a capture to attach for `msg`: a simple Query's miss, or the filling
    /// portal's Describe and Execute (asked first whether any capture runs).
    #[inline]
    pub fn attaches(&self, msg: &ClientMessage<'_>) -> bool {
        let filling = matches!(self.portal, Portal::Fill { .. });
        (self.query_fill.is_some() || filling)
            && match msg {
                ClientMessage::Query { .. } => self.query_fill.is_some(),
                ClientMessage::Describe(Target::Portal(b"")) | ClientMessage::Execute { portal: b"", .. } => filling,
                _ => false,
            }
    }

    /// The session's state can no longer be keyed (session mode after SET...): stop caching.
    pub fn stop(&mut self) {
        self.off = true;
    }

    /// Reads may be served from or stored into the cache at this point of the session.
    fn usable(&self, cx: &Cx<'_>) -> bool {
        self.on
            && !self.off
            && cx.shareable
            && self.writes.clean()
            && cx.tx.status != tx_status::FAILED
            && !cx.pending.skipping() // (the server skips it: no answer, from the cache neither)
            && !cx.tx.in_copy()
            && !(cx.in_transaction_block() && self.cache.relations.snapshot_default(&self.database))
    }

    /// The first part of a message too large to read whole (session-mode Bind, FunctionCall):
    /// pgpilot cannot tell what it runs, so it may write anything, and the portal is unknown.
    /// `queued`: the server will answer it (a FunctionCall it skips ends no group).
    pub fn on_part(&mut self, tag: u8, queued: bool) {
        match tag {
            fe::BIND => {
                self.portal = Portal::Unknown;
                self.writes.note_unknown();
            }
            fe::FUNCTION_CALL => {
                self.writes.note_unknown();
                if queued {
                    self.writes.close_group();
                }
            }
            _ => {}
        }
    }

    /// pgpilot sent a Query of its own (a deferred BEGIN) whose ReadyForQuery the stages see.
    pub fn own_query_sent(&mut self) {
        self.writes.close_group();
    }

    /// The server skipped `n` Queries or FunctionCalls (an error before their
    /// Sync): the groups they ended join the next, which the Sync's ReadyForQuery settles.
    pub fn boundaries_skipped(&mut self, n: u32) {
        for _ in 0..n {
            self.writes.join_oldest_to_next();
        }
    }

    /// The message a fill plan was made for never reached a server.
    pub fn forget_fills(&mut self) {
        self.query_fill = None;
        if matches!(self.portal, Portal::Fill { .. }) {
            self.portal = Portal::Unknown;
        }
    }

    /// The server started COPY IN: the Syncs sent into it are ignored (call before the
    /// transaction tracker learns it).
    fn on_copy_in(&mut self, cx: &Cx<'_>) {
        self.writes.reopen(cx.tx.syncs_since_execute());
    }

    /// A statement is being sent: note what it may write and what it does to later reads.
    fn note_writes(&mut self, a: &Analysis, keys: Option<crate::cache::scopes::WriteList>) {
        if self.writes.note_statement(a, keys) {
            self.off = true;
        }
        if a.kind == StatementKind::Ddl {
            self.cache.relations.mark_stale(&self.database);
        }
    }

    /// Committed writes invalidated, then DDL that may have committed announced. One await for
    /// both in each hook, the rare one boxed: an await point more in `at_ready`, or a larger
    /// future under it, cost every round trip ~35 instructions (its callers' futures grew, and
    /// their drop code moved out of line).
    async fn settle(&mut self, committed: bool, ddl: bool) {
        if committed {
            self.invalidate().await;
        }
        if ddl {
            Box::pin(self.ddl_ended()).await;
        }
    }

    /// What committed writes make invalid, here and on the other replicas.
    async fn invalidate(&mut self) {
        let Some((all, tables)) = self.writes.take_committed() else { return };
        let db = &self.database;
        tracing::debug!(database = %db, all, ?tables, "cache: committed writes invalidate");
        if all {
            self.cache.invalidate(db, None).await;
        } else {
            self.cache.invalidate_seen(db, &tables, &mut self.views).await;
        }
    }

    fn coalesce_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.load().cache.coalesce_wait_ms)
    }

    /// A simple Query: its writes noted; the key to look up when it is a cacheable read worth one.
    fn plan_query(&mut self, cx: &Cx<'_>, text: &[u8]) -> Option<(Key, Asked, bool)> {
        self.portal = Portal::Unknown;
        self.query_fill = None;
        // Borrowed, not taken and put back: a read that is not looked up (most runs of a
        // non-repeating one) then costs no reference count and no move of the list.
        let analyzed = &cx.turn.analyzed;
        if analyzed.is_empty() && text.iter().any(u8::is_ascii_alphanumeric) {
            // Text the analysis could not split into statements: it may write anything.
            self.writes.note_unknown();
        }
        let one = analyzed.len() == 1; // (a literal key is read from the text of a single statement)
        for (a, _) in analyzed.iter().filter(|(a, _)| noted(a)) {
            let keyed = a.keyed.as_deref().filter(|_| one);
            let keys = cache_keys::literal_keyed_writes(
                (&self.cache, &mut self.views),
                &self.database,
                keyed,
                text,
                cx.literals,
            );
            self.note_writes(a, keys);
        }
        let [(a, literals)] = analyzed.as_slice() else { return None };
        if !cx.pending.is_empty() || !self.usable(cx) {
            return None;
        }
        let skipped = self.past_admission(a, cx.turn.hint, || *literals)?;
        self.key_query(cx, text, (a, *literals), skipped)
    }

    /// The lookup itself (the only part that may wait: single flight, Redis) and what its answer
    /// does: a hit answers the client, a miss becomes a fill for the reply it is forwarded for.
    pub async fn look_up(&mut self, cx: &mut Cx<'_>, Planned { key, asked, cold }: Planned) {
        if cold && !self.wait_for_relations(asked.tables()).await {
            return;
        }
        let found = self.cache.lookup(key, self.coalesce_wait()).await;
        match (found, asked) {
            (Lookup::Hit(e), Asked::Query { analysis, params }) => {
                cx.cout.extend_from_slice(&e.row_desc);
                cx.cout.extend_from_slice(&e.body);
                let status = cx.status();
                messages::ready_for_query(cx.cout, status);
                cx.turn.answered = true;
                served(cx, &analysis, params, e.rows);
            }
            (Lookup::Hit(entry), Asked::Bind { analysis, params }) => {
                served(cx, &analysis, params, entry.rows);
                self.portal = Portal::Hit { entry, at: 0 };
                cx.answer(messages::bind_complete());
            }
            (Lookup::Miss(plan), Asked::Query { .. }) => self.query_fill = Some(plan),
            (Lookup::Miss(plan), Asked::Bind { analysis, .. }) => {
                let continuable =
                    cx.tx.status == tx_status::IDLE && cx.pending.runs_nothing() && analysis.learned.worth_continuing();
                self.portal = Portal::Fill { plan, described: false, continuable };
            }
            (Lookup::Bypass, _) => {}
        }
    }

    /// A run of a shape the admission skips (no hint or rule can ask for it) goes on only when
    /// the admission picks it: asked before the policy (most runs of a non-repeating read end
    /// here), after `usable` (the admission counts only runs the cache could have answered: its
    /// one probe run per window must not go to a session that cannot fill). `Some(skipped)` when
    /// the run goes on.
    fn past_admission(&mut self, a: &Analysis, hint: Hint, params: impl Fn() -> u64) -> Option<bool> {
        let skipped = hint == Hint::None && a.learned.skipped() && !self.policy.load().has_rules();
        (!skipped || self.cache.admit(&a.learned, params)).then_some(skipped)
    }

    /// A read that came before its database's first table list: waits for the list (at most
    /// `relations_wait_ms`) and says whether every table it reads is ordinary after all.
    async fn wait_for_relations(&self, tables: &[Arc<str>]) -> bool {
        let wait = std::time::Duration::from_millis(self.config.load().cache.relations_wait_ms);
        self.cache.relations.wait_loaded(&self.database, wait).await && self.relations_known(tables)
    }

    /// Every table read is an ordinary table (a list loaded in the background).
    fn relations_known(&self, tables: &[Arc<str>]) -> bool {
        relations_known(&self.cache, &self.config, &self.pool, &self.database, tables)
    }

    /// A Bind: its statement's writes noted; the key to look up when it binds a cacheable read
    /// worth one to the unnamed portal.
    fn plan_bind(&mut self, cx: &Cx<'_>, portal: &[u8], name: &[u8], args: &[u8]) -> Option<(Key, Asked, bool)> {
        let stmt = cx.turn.statement.as_ref().and_then(|e| e.cache.as_deref());
        match stmt {
            // A plain read is none of the write bookkeeping's business (most Binds).
            Some(s) if !noted(&s.analysis) => {}
            Some(s) => {
                let (keyed, types) = (s.analysis.keyed.as_deref(), || s.declared_types());
                let keys = cache_keys::keyed_writes((&self.cache, &mut self.views), &self.database, keyed, types, args);
                self.note_writes(&s.analysis, keys)
            }
            None => self.writes.note_unknown(),
        }
        if !portal.is_empty() {
            if let Portal::Fill { continuable, .. } = &mut self.portal {
                *continuable = false; // it may run before the fill's Execute
            }
            return None;
        }
        self.portal = Portal::Unknown;
        let s = stmt?;
        if !self.usable(cx) {
            return None;
        }
        let params = || s.ident_hash ^ xxhash_rust::xxh3::xxh3_64(args);
        let skipped = self.past_admission(&s.analysis, s.hint, params)?;
        self.key_bind(cx, s, (name, args), skipped)
    }

    /// Everything but the lookup, decided without waiting (most reads of a non-repeating shape
    /// end here): the session enters the lookup's state machine only for a read worth one.
    #[inline]
    pub fn plan(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>) -> Option<Planned> {
        let (key, asked, cold) = match *msg {
            ClientMessage::Query { text } => self.plan_query(cx, text),
            ClientMessage::Bind { portal, statement, rest } => self.plan_bind(cx, portal, statement, rest),
            ClientMessage::Describe(Target::Portal(b"")) => {
                self.portal.describe(cx);
                None
            }
            ClientMessage::Execute { portal: b"", max_rows } => {
                self.portal.execute(cx, max_rows as usize);
                None
            }
            ClientMessage::Close(target) => {
                self.portal.close(cx, target);
                None
            }
            ClientMessage::FunctionCall | ClientMessage::Malformed => {
                // What it runs cannot be known: it may write anything.
                self.writes.note_unknown();
                self.portal = Portal::Unknown;
                None
            }
            _ => None,
        }?;
        Some(Planned { key, asked, cold })
    }

    /// The server messages `on_server_message` acts on (the session builds a context only for them).
    #[inline]
    pub fn hears(tag: u8, body: &[u8]) -> bool {
        match tag {
            be::ERROR_RESPONSE | be::COPY_IN_RESPONSE => true,
            be::COMMAND_COMPLETE => super::cache_writes::ends_transaction(body),
            _ => false,
        }
    }
}

/// Whether a statement is any of the write bookkeeping's business: a plain read is not (the
/// common case, which skips the literal-key scan and the bookkeeping calls).
fn noted(a: &Analysis) -> bool {
    a.writes != crate::sql::WriteScope::Nothing
        || a.cache_effect != crate::sql::CacheEffect::None
        || a.kind == StatementKind::Ddl
}

fn preload(h: &Handles) {
    relations_known(&h.cache, &h.config, &h.pool, &h.database, &[]);
    h.cache.ensure_stream(&h.database);
}

/// A hit still counts as an execution for the insights (calls, N+1), with no server time.
fn served(cx: &mut Cx<'_>, a: &Arc<Analysis>, params: u64, rows: u32) {
    cx.turn.served = Some(crate::insights::Completed::from_cache(a.clone(), params, rows.into(), cx.received));
}

#[path = "cache_hooks.rs"]
mod hooks;
#[path = "cache_isolation.rs"]
mod isolation;
#[path = "cache_keying.rs"]
mod keying;
