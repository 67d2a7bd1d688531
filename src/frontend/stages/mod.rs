//! The feature stages a client message passes through, behind one interface (`Stage`), and the
//! per-message context (`Cx`) that is all a stage sees of its session.
//!
//! Why a context instead of the session: a stage that could reach every field of the session
//! would come to depend on the order the others run in (the analysis once travelled through the
//! insights' field to reach the cache). A stage reads the message, the `Turn` (what the session
//! learned of it) and the few session facts in `Cx`, answers the client or registers what it
//! expects back in the reply queue, and receives only its own events from that queue. Stages
//! never name each other or `session` (tests/layering.rs checks it); the session calls them in
//! order: cache (may answer), prepared statements (may answer what the registry knows, and
//! rewrites statement names), then insights (sees every message, answered or not).

pub mod cache;
mod cache_capture;
mod cache_keys;
mod cache_portal;
mod cache_relations;
mod cache_writes;
pub mod insights;
mod insights_track;
pub mod prepared;
mod prepared_copies;

use bytes::{Bytes, BytesMut};

use super::statements::{ClientStatement, Opened, Statements};
use super::tx::TxTracker;
use crate::backend::ServerConn;
use crate::config::PoolMode;
use crate::protocol::backend::tx_status;
use crate::protocol::frontend::{ClientMessage, Target};

use super::reply_queue::{Attachment, Pending, Replies};
use cache_capture::FillSlot;
#[cfg(test)]
use insights_track::Track;
use insights_track::TrackSlot;

/// What the session learned of the client message in hand: decided once, read by every stage.
#[derive(Default)]
pub struct Turn {
    /// Analyses of its SQL (Query: one per statement; Parse: of its statement).
    pub analyzed: crate::sql::Analyzed,
    /// Query, Parse: the text's cache directive (from its scan).
    pub hint: crate::sql::hint::Hint,
    /// Parse: what it did to the statement table.
    pub opened: Opened,
    /// Bind: the entry of the statement it binds; Close: the entry it closed.
    pub statement: Option<ClientStatement>,
    /// A stage answered the message: it is not forwarded.
    pub answered: bool,
    /// The answer came from the result cache: the execution it stands for (for insights).
    pub served: Option<crate::insights::Completed>,
    /// The message failed here: the client's messages up to its Sync are skipped, as the
    /// server skips them after an error.
    pub skip_to_sync: bool,
    /// DISCARD ALL / DEALLOCATE ALL: the server forgets every prepared statement.
    pub drops_statements: bool,
    /// Execute: how the statement its portal runs reached the server (as sent, or a
    /// server-prepared copy with its runs so far).
    pub run_via: crate::prepared::adaptive::Served,
}

impl Turn {
    /// Ready for the next message, in place: most fields are at their defaults already (only a
    /// Query, Parse, Bind or Close sets any), and a whole new value cost a drop call per message.
    /// (Destructured so that a new field cannot be left out.)
    #[inline]
    pub fn reset(&mut self) {
        let Turn { analyzed, hint, opened, statement, answered, served, skip_to_sync, drops_statements, run_via } =
            self;
        analyzed.clear();
        *hint = Default::default();
        *opened = Opened::default();
        if statement.is_some() {
            *statement = None;
        }
        if served.is_some() {
            *served = None;
        }
        (*answered, *skip_to_sync, *drops_statements) = (false, false, false);
        *run_via = Default::default();
    }
}

/// The session as a stage sees it while it handles one message or reply.
pub struct Cx<'a> {
    pub turn: &'a mut Turn,
    /// A Query of one statement: where its literals are in the text (for a literal key).
    pub literals: &'a crate::sql::tokens::Literals,
    pub statements: &'a mut Statements,
    /// The server connection held, if any (its prepared statements, its unnamed statement).
    pub server: Option<&'a mut ServerConn>,
    pub pending: &'a mut Queue,
    /// Bytes on their way to the server (a stage may inject a message ahead of the client's).
    pub sout: &'a mut BytesMut,
    /// Bytes on their way to the client.
    pub cout: &'a mut BytesMut,
    pub tx: &'a mut TxTracker,
    pub mode: PoolMode,
    /// The client's settings signature: results may be shared only between equal ones.
    pub settings: u64,
    /// The session's state is known and its own (not pinned, nothing unread): another client's
    /// result may stand for one of its reads.
    pub shareable: bool,
    /// When the client's latest bytes arrived (the client-observed time of a statement starts here).
    pub received: crate::clock::Stamp,
}

impl Cx<'_> {
    /// A server connection is held (inside a transaction, or a pipeline in flight).
    pub fn held(&self) -> bool {
        self.server.is_some()
    }

    /// Answers the client here: in turn behind the server's replies when a server is held, else
    /// at once. Marks the message answered.
    pub fn answer(&mut self, reply: Bytes) {
        if self.held() {
            self.pending.push_local(reply);
        } else {
            self.cout.extend_from_slice(&reply);
        }
        self.turn.answered = true;
    }

    /// The held connection is inside a transaction block.
    pub fn in_transaction_block(&self) -> bool {
        self.held() && self.tx.status == tx_status::IN_BLOCK
    }

    /// The ReadyForQuery status a reply given here reports.
    pub fn status(&self) -> u8 {
        if self.held() {
            self.tx.status
        } else {
            tx_status::IDLE
        }
    }
}

/// One feature on the data path. Every hook has a default that does nothing, so a stage
/// implements only the moments it cares about; what it expects back from the server it attaches
/// to the reply-queue entry of the message (`after_send`), and the queue hands it its own events.
pub trait Stage {
    /// What the reply queue gives back to this stage.
    type Event;

    /// A client message before it is forwarded: the stage may answer it (`cx.answer`), after
    /// which it is not forwarded (later stages still see it, with `cx.turn.answered` set).
    async fn before_send(&mut self, _cx: &mut Cx<'_>, _msg: &ClientMessage<'_>) {}

    /// The message is about to be written to the held server: the stage may put a message of
    /// its own ahead of it.
    fn on_send(&mut self, _cx: &mut Cx<'_>, _msg: &ClientMessage<'_>) {}

    /// The message goes to the held server: true when the stage wrote it itself (rewritten, or
    /// answered here), registering its reply-queue entries; otherwise it is sent as it came.
    fn rewrite(&mut self, _cx: &mut Cx<'_>, _msg: &ClientMessage<'_>, _frame: &[u8]) -> bool {
        false
    }

    /// The message was written (its reply-queue entry, if it gets a reply, is the last one):
    /// attach what this stage expects back. `in_copy`: it was sent into COPY IN.
    fn after_send(&mut self, _cx: &mut Cx<'_>, _msg: &ClientMessage<'_>, _in_copy: bool) {}

    /// A server message the data path inspects anyway (CommandComplete, ErrorResponse,
    /// CopyInResponse), before the client sees it.
    fn on_server_message(&mut self, _cx: &mut Cx<'_>, _tag: u8, _body: &[u8]) {}

    /// A ReadyForQuery, before the client sees it (no context: the session builds none for
    /// the one message every round trip ends with).
    async fn at_ready(&mut self, _status: u8) {}

    /// A Sync, Query or FunctionCall was written (after `after_send`) and the server will answer
    /// it: a group of statements ends, which the next ReadyForQuery settles. `in_copy`: it was
    /// sent into COPY IN.
    fn at_boundary(&mut self, _msg: &ClientMessage<'_>, _in_copy: bool) {}

    /// One of this stage's events from the reply queue.
    fn on_reply(&mut self, _cx: &mut Cx<'_>, _event: Self::Event) {}

    /// The server connection was lost mid-session: whatever was in flight may have committed.
    async fn on_server_lost(&mut self) {}

    /// The session ends.
    fn at_end(&mut self) {}
}

/// The stages of one session, in the order they see a client message.
pub struct Stages {
    pub cache: cache::CacheStage,
    pub prepared: prepared::PreparedStage,
    pub insights: insights::InsightsStage,
    /// The reply queue's events not yet delivered (buffers kept from one batch to the next).
    pub replies: Events,
}

impl Stages {
    #[inline]
    pub async fn before_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>) {
        if self.cache.on {
            if let Some(planned) = self.cache.plan(cx, msg) {
                self.cache.look_up(cx, planned).await;
            }
        }
        self.prepared.before_send(cx, msg).await;
        self.insights.before_send(cx, msg).await;
    }

    /// Which hooks some stage needs for this message: the session builds a context only for
    /// those (measured: a context per hook and message was ~10% of the proxy's instructions in
    /// extended mode). Each answer mirrors the stages' own first checks.
    #[inline]
    pub fn wants_on_send(&self, msg: &ClientMessage<'_>) -> bool {
        self.cache.on && self.cache.sends_ahead(msg)
    }

    #[inline]
    pub fn wants_before_send(&self, held: bool, mode: crate::config::PoolMode, msg: &ClientMessage<'_>) -> bool {
        let prepared = mode == crate::config::PoolMode::Transaction && !held;
        let insights = self.insights.enabled
            && matches!(msg, ClientMessage::Bind { .. } | ClientMessage::Close(Target::Portal(_)));
        let cache = self.cache.on
            && match msg {
                // Describe, Execute and Close are answered only from a hit on the unnamed portal.
                ClientMessage::Describe(_) | ClientMessage::Execute { .. } | ClientMessage::Close(_) => {
                    self.cache.answering()
                }
                ClientMessage::Parse { .. } | ClientMessage::Sync | ClientMessage::Flush => false,
                _ => true,
            };
        cache || prepared || insights
    }

    pub fn wants_rewrite(&self, mode: crate::config::PoolMode, msg: &ClientMessage<'_>) -> bool {
        mode == crate::config::PoolMode::Transaction
            && !matches!(
                msg,
                ClientMessage::Sync
                    | ClientMessage::Flush
                    | ClientMessage::CopyData
                    | ClientMessage::CopyDone
                    | ClientMessage::CopyFail
            )
    }

    #[inline]
    pub fn wants_after_send(&self, msg: &ClientMessage<'_>, turn: &Turn) -> bool {
        let insights =
            self.insights.enabled && matches!(msg, ClientMessage::Execute { .. } | ClientMessage::Query { .. });
        // The cache only for a capture (the end of a group is `at_boundary`'s).
        insights || turn.drops_statements || (self.cache.on && self.cache.attaches(msg))
    }

    /// `at_ready` (the cache stage also announces DDL, cache on or off).
    #[inline]
    pub fn hears_server(&self) -> bool {
        self.cache.on || self.cache.ddl_pending
    }

    /// `on_server_message` for this server message (DDL's commit is watched for, cache on or off).
    #[inline]
    pub fn hears(&self, tag: u8, body: &[u8]) -> bool {
        self.hears_server() && cache::CacheStage::hears(tag, body)
    }

    #[inline]
    pub fn on_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>) {
        if self.cache.on {
            self.cache.on_send(cx, msg);
        }
    }

    #[inline]
    pub fn rewrite(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>, frame: &[u8]) -> bool {
        self.prepared.rewrite(cx, msg, frame)
    }

    #[inline]
    pub fn after_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>, in_copy: bool) {
        if self.cache.on {
            self.cache.after_send(cx, msg, in_copy);
        }
        self.prepared.after_send(cx, msg, in_copy);
        self.insights.after_send(cx, msg, in_copy);
    }

    /// A Sync, Query or FunctionCall was forwarded and the server will answer it (the session
    /// calls it for those only): the end of a group of statements, which its ReadyForQuery
    /// settles (no context: most of them need nothing else from the session).
    #[inline]
    pub fn at_boundary(&mut self, msg: &ClientMessage<'_>, in_copy: bool) {
        if self.cache.on {
            self.cache.at_boundary(msg, in_copy);
        }
    }

    #[inline]
    pub fn on_server_message(&mut self, cx: &mut Cx<'_>, tag: u8, body: &[u8]) {
        if self.hears_server() {
            self.cache.on_server_message(cx, tag, body);
        }
    }

    #[inline]
    pub async fn at_ready(&mut self, status: u8) {
        if self.hears_server() {
            self.cache.at_ready(status).await;
        }
    }

    /// Routes the reply queue's events, each to its stage.
    /// Hands each stage its events collected in `replies`.
    #[inline]
    pub fn deliver(&mut self, cx: &mut Cx<'_>) {
        let r = &mut self.replies;
        if !r.attached.filled.is_empty() {
            r.attached.filled.drain(..).for_each(|fill| self.cache.on_reply(cx, fill));
        }
        if !r.statements.is_empty() {
            r.statements.drain(..).for_each(|event| self.prepared.on_reply(cx, event));
        }
        if !r.attached.completed.is_empty() {
            r.attached.completed.drain(..).for_each(|done| self.insights.on_reply(cx, done));
        }
    }

    #[inline]
    pub async fn on_server_lost(&mut self) {
        if self.hears_server() {
            self.cache.on_server_lost().await;
        }
    }

    #[inline]
    pub fn at_end(&mut self) {
        self.insights.at_end();
    }
}

/// The session's attachment on each reply-queue entry: one slot per stage that expects something
/// back from the server beyond what the client sees (the cache's capture, insights' track). A
/// stage that needs one adds its slot here, in each method of its `Attachment` (`no_events`
/// included: a slot left out there has its events wait for another's), in `SlotEvents` and in
/// `Stages::deliver`; the queue itself stays unaware.
#[derive(Debug, Default)]
pub struct Attached {
    pub fill: FillSlot,
    pub track: TrackSlot,
}

/// The reply queue of a session, and the events it hands back.
pub type Queue = Pending<Attached>;
pub type Events = Replies<Attached>;

/// Each slot's events, for its stage.
#[derive(Debug, Default)]
pub struct SlotEvents {
    /// Result cache fills that completed.
    pub filled: Vec<crate::cache::fill::Fill>,
    /// Tracked statements that finished (insights).
    pub completed: Vec<crate::insights::Completed>,
}

impl Attachment for Attached {
    type Shared = Option<Bytes>;
    type Events = SlotEvents;

    #[inline(always)]
    fn on_frame(&mut self, shared: &mut Option<Bytes>, tag: u8, frame: &[u8], body: &[u8], ev: &mut SlotEvents) {
        self.track.on_frame(&mut (), tag, frame, body, &mut ev.completed);
        self.fill.on_frame(shared, tag, frame, body, &mut ev.filled);
    }

    #[inline(always)]
    fn on_rows(&mut self, run: &[u8], n: u64) {
        self.track.on_rows(run, n);
        self.fill.on_rows(run, n);
    }

    #[inline(always)]
    fn complete(self, shared: &mut Option<Bytes>, mut next: Option<&mut Self>, ev: &mut SlotEvents) {
        self.track.complete(&mut (), next.as_deref_mut().map(|n| &mut n.track), &mut ev.completed);
        self.fill.complete(shared, next.map(|n| &mut n.fill), &mut ev.filled);
    }

    fn unreadable(&mut self) {
        self.track.unreadable();
        self.fill.unreadable();
    }

    fn unreadable_shared(shared: &mut Option<Bytes>) {
        FillSlot::unreadable_shared(shared);
    }

    #[inline]
    fn no_events(ev: &SlotEvents) -> bool {
        ev.filled.is_empty() && ev.completed.is_empty()
    }
}

#[cfg(test)]
#[path = "attached_tests.rs"]
mod attached_tests;
