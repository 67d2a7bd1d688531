//! One client connection after authentication: the loop that moves messages between the client
//! and the server connection it holds, checking one out when a message needs it and handing it
//! back at transaction boundaries (transaction mode) or at the end (session mode).

use std::sync::Arc;

use bytes::BytesMut;

use super::session_state::SessionState;
use super::stages::{Cx, Stages, Turn};
use super::statements::Statements;
use super::tx::TxTracker;
use super::waits::{read_client, read_server};
use crate::backend::cancel::Registration;
use crate::config::PoolMode;
use crate::net::frame::{body, Framer};
use crate::net::messages::{self, sqlstate};
use crate::net::stream::ClientStream;
use crate::pool::{Pool, PooledConn};
use crate::protocol::backend::tx_status;
use crate::protocol::frontend::{self as fe, is_session_tag, ClientMessage};
use crate::shared::App;

#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// Who the client is. The names are shared (`Arc`) with the cancel registry, the stages and
/// insights, which each kept a copy; the address is formatted only when shown.
pub struct ClientInfo {
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub application_name: Arc<str>,
    /// None: a client on the Unix-domain socket.
    pub peer: Option<std::net::SocketAddr>,
}

/// The shared parts a session reaches: counters, the statement registry, the shutdown signal
/// and its place in the cancel registry.
pub(super) struct Handles {
    /// Client counts (waiting, active) for /metrics and /health/status.
    pub(super) clients: Arc<crate::shared::ClientCounters>,
    pub(super) registry: Arc<crate::prepared::Registry>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    pub(super) cancel: Registration,
}

/// What the session keeps for reading the client's SQL: the analyzer (with its per-session
/// cache), the texts read lately, the literals of the text in hand, and how the server lexes.
pub(super) struct Reading {
    pub(super) analyzer: crate::sql::recent::LocalAnalyzer,
    /// Texts read lately with their scans and analyses (a repeat, maybe with other literals, costs
    /// a compare).
    pub(super) known_texts: super::known_texts::KnownTexts,
    /// A Query of one statement: where its literals are in the text (for a literal key). Beside
    /// the `Turn`, not in it: a fresh `Turn` per message would copy it every time.
    pub(super) literals: crate::sql::tokens::Literals,
    /// How the server will lex the client's next text.
    pub(super) lexing: super::lexing::Lexing,
}

/// The client's messages skipped as the server would skip them.
#[derive(Default)]
pub(super) struct Skip {
    /// Up to the next Sync (an error here, or a message the server would fail).
    pub(super) until_sync: bool,
    /// The rest of the message being streamed.
    stream: bool,
}

pub struct Session {
    pub(super) handles: Handles,
    pub(super) client: ClientStream,
    pub(super) cbuf: BytesMut,
    pub(super) cout: BytesMut,
    pub(super) cframer: Framer,
    pub(super) sframer: Framer,
    pub(super) server: Option<PooledConn>,
    pub(super) sout: BytesMut,
    pub(super) pool: Arc<Pool>,
    pub(super) mode: PoolMode,
    pub(super) tx: TxTracker,
    pub(super) state: SessionState,
    /// Why the server connection stays with this client, and how it goes back.
    pub(super) keeping: super::keeping::Keeping,
    /// What the client was told of its parameters.
    pub(super) reported: super::reported::Reported,
    /// What the session keeps for reading the client's SQL.
    pub(super) reading: Reading,
    pub(super) skip: Skip,
    /// Replies expected from the server, in order (transaction mode).
    pub(super) pending: super::stages::Queue,
    /// The client's statements: one entry per name that every stage reads.
    pub(super) statements: Statements,
    /// What was learned of the client message in hand, for every stage that looks at it.
    pub(super) turn: Turn,
    /// Bytes and Parse/Bind counts for SHOW STATS, handed to the pool at each release.
    pub(super) counts: crate::pool::traffic::Counts,
    /// The feature stages (result cache, prepared statements, insights) behind the `Stage` trait.
    pub(super) stages: Stages,
    /// When the client's latest bytes arrived.
    pub(super) received: crate::clock::Stamp,
    /// `strategy.slow_lane_share` when slow-lane statements are kept to it (transaction mode).
    pub(super) slow_lane_share: Option<f64>,
    /// A plain BEGIN answered here and not yet sent (`begin`).
    pub(super) deferred: super::begin::Deferred,
    pub(super) timeouts: super::waits::Timeouts,
    pub info: ClientInfo,
}

/// What SHOW CLIENTS and cancel requests know of a client (its id is set at registration).
fn client_meta(info: &ClientInfo) -> crate::backend::cancel::ClientMeta {
    crate::backend::cancel::ClientMeta {
        id: 0,
        wake: Default::default(),
        killed: Default::default(),
        user: info.user.clone(),
        database: info.database.clone(),
        application_name: info.application_name.clone(),
        peer: info.peer,
        connected: std::time::SystemTime::now(),
        server: Default::default(),
        running: Default::default(),
    }
}

impl Session {
    /// Wiring: the session takes from `app` the shared parts it uses, not `app` itself.
    pub fn new(app: &App, client: ClientStream, cbuf: BytesMut, info: ClientInfo, state: SessionState) -> Self {
        let cfg = app.config.load();
        let pool = app.pools.get(&info.database, &info.user);
        pool.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stages = new_stages(app, &cfg, &info, &pool, &state);
        Self {
            stages,
            received: crate::clock::Stamp::now(),
            mode: cfg.pool.mode,
            cframer: Framer::with_budget(cfg.server.max_message_bytes, app.buffers.clone()),
            sframer: Framer::new(crate::net::frame::MAX_MESSAGE_LEN),
            handles: Handles {
                clients: app.clients.clone(),
                registry: app.registry.clone(),
                shutdown: app.shutdown_signal(),
                cancel: app.cancels.register(client_meta(&info)),
            },
            client,
            cbuf: if cbuf.is_empty() { BytesMut::new() } else { cbuf },
            cout: BytesMut::new(), // taken at the first read (read_client): an idle client holds none
            server: None,
            sout: BytesMut::new(),
            pool,
            tx: TxTracker::default(),
            state,
            keeping: super::keeping::Keeping::new(cfg.pool.mode, cfg.pool.isolate_attached_code),
            slow_lane_share: (cfg.pool.mode == PoolMode::Transaction && cfg.strategy.enabled && cfg.strategy.slow_lane)
                .then_some(cfg.strategy.slow_lane_share),
            deferred: super::begin::Deferred {
                on: cfg.pool.mode == PoolMode::Transaction && cfg.strategy.enabled && cfg.strategy.defer_begin,
                ..Default::default()
            },
            reported: Default::default(),
            skip: Skip::default(),
            pending: Default::default(),
            statements: Statements::new(cfg.prepared.client_max),
            turn: Turn::default(),
            counts: Default::default(),
            reading: Reading {
                analyzer: crate::sql::recent::LocalAnalyzer::new(app.analyzer.clone()),
                known_texts: Default::default(),
                literals: Default::default(),
                lexing: Default::default(),
            },
            timeouts: super::waits::Timeouts::new(&cfg.pool),
            info,
        }
    }

    /// The session loop; returns when the client leaves, fails, or is told to go at shutdown.
    pub async fn run(&mut self) {
        let mut stopping = *self.handles.shutdown.borrow();
        let meta = self.handles.cancel.meta.clone();
        loop {
            if stopping && self.at_rest() {
                messages::error(&mut self.cout, "FATAL", sqlstate::ADMIN_SHUTDOWN, "pgpilot is shutting down");
                let _ = self.flush_client().await;
                return;
            }
            // Biased: server bytes first (what the client waits for), then the client's, then the
            // shutdown signal; tokio's random branch order costs a thread-local RNG draw per turn.
            // Armed only while the client holds a transaction open and nothing is in flight (off,
            // the client read is the plain read: no timer, no clock read).
            let idle_limit = self.timeouts.idle_transaction.filter(|_| self.idle_in_transaction());
            tokio::select! {
                biased;
                r = read_server(&mut self.server, self.timeouts.deadline) => {
                    let Ok(r) = r else { return self.query_timed_out().await };
                    if !matches!(r, Ok(n) if n > 0) {
                        self.pool.went_away(); // (terminated backends come in batches)
                        self.server_lost("the server closed the connection").await;
                        return;
                    }
                    if self.on_server_bytes().await == Flow::Close {
                        return;
                    }
                }
                // (Not while bytes wait for a Describe's answer: they stay one read's worth.)
                r = read_client(&mut self.client, &mut self.cbuf, idle_limit), if !self.pending.holding() => {
                    let Ok(r) = r else {
                        tracing::info!(user = %self.info.user, database = %self.info.database,
                            "client idle in transaction past pool.idle_transaction_timeout_ms: disconnected");
                        let msg = "terminating connection due to idle-in-transaction timeout (pgpilot)";
                        messages::error(&mut self.cout, "FATAL", sqlstate::IDLE_IN_TRANSACTION_TIMEOUT, msg);
                        let _ = self.flush_client().await;
                        return; // finish() closes the server connection: it is mid-transaction
                    };
                    if self.cout.capacity() == 0 {
                        self.cout.reserve(16 * 1024);
                        self.sout.reserve(16 * 1024);
                    }
                    let Ok(n @ 1..) = r else { return };
                    self.counts.received += n as u64;
                    if self.on_client_bytes().await == Flow::Close {
                        return;
                    }
                }
                // KILL_CLIENT, shutdown (begin_shutdown wakes every session) or an idle nudge.
                _ = std::future::poll_fn(|cx| meta.wake.poll_woken(cx)) => {
                    if meta.killed.load(std::sync::atomic::Ordering::Acquire) {
                        return self.killed().await;
                    }
                    stopping |= *self.handles.shutdown.borrow();
                    self.release_idle_buffers();
                }
            }
        }
    }

    /// Inside a transaction block, waiting for the client: nothing sent is unanswered.
    fn idle_in_transaction(&self) -> bool {
        self.server.is_some()
            && matches!(self.tx.status, tx_status::IN_BLOCK | tx_status::FAILED)
            && self.pending.is_empty()
            && !self.tx.in_copy()
            && !self.cframer.mid_message()
    }

    /// The stages, and the context they see: the parts of the session a stage may read or use.
    #[inline(always)]
    pub(super) fn split(&mut self) -> (&mut Stages, Cx<'_>) {
        let cx = Cx {
            turn: &mut self.turn,
            literals: &self.reading.literals,
            statements: &mut self.statements,
            server: self.server.as_deref_mut(),
            pending: &mut self.pending,
            sout: &mut self.sout,
            cout: &mut self.cout,
            tx: &mut self.tx,
            mode: self.mode,
            settings: self.state.sig(),
            shareable: self.keeping.shareable(),
            received: self.received,
        };
        (&mut self.stages, cx)
    }

    /// Hands each stage its events from the reply queue.
    pub(super) fn deliver_replies(&mut self) {
        if !self.stages.replies.is_empty() {
            let (stages, mut cx) = self.split();
            stages.deliver(&mut cx);
        }
    }

    fn at_rest(&self) -> bool {
        self.server.is_none() || (self.mode == PoolMode::Session && self.tx.idle() && !self.sframer.mid_message())
    }

    pub(super) async fn on_client_message(&mut self, tag: u8, frame: &[u8]) -> Flow {
        if !is_session_tag(tag) || tag == fe::TERMINATE {
            // Boxed: the rare path's flush would otherwise sit in every message's future.
            return Box::pin(self.refuse(tag)).await;
        }
        if self.skipped(tag) {
            return Flow::Continue;
        }
        // Decoded once: every stage below reads this view instead of splitting the frame again.
        let msg = ClientMessage::decode(tag, body(frame));
        if self.deferred.on && self.server.is_none() && self.answered_while_deferring(tag, &msg, frame) {
            return Flow::Continue;
        }
        self.turn.reset();
        self.reading.literals.clear();
        // Only a Query or Parse may wait (for its analysis); the others read the table at once.
        let deallocated = match msg {
            ClientMessage::Query { .. } | ClientMessage::Parse { .. } => self.update_statements(&msg).await,
            _ => {
                self.look_up_statement(&msg);
                false
            }
        };
        if deallocated {
            return Flow::Continue;
        }
        // A deferred transaction's first statement: its connection (and the BEGIN) first, so
        // every stage sees it inside the transaction, as without the deferral.
        if self.deferred.begin.is_some() && !matches!(tag, fe::SYNC | fe::FLUSH) && !self.hold_server(tag, &msg).await {
            return Flow::Continue;
        }
        if self.stages.wants_before_send(self.server.is_some(), self.mode, &msg) {
            let (stages, mut cx) = self.split();
            stages.before_send(&mut cx, &msg).await;
        }
        if self.turn.answered {
            self.skip.until_sync |= self.turn.skip_to_sync;
            return Flow::Continue;
        }
        if self.server.is_none() && !self.hold_server(tag, &msg).await {
            return Flow::Continue;
        }
        let in_copy = self.tx.in_copy();
        if self.stages.wants_on_send(&msg) {
            let (stages, mut cx) = self.split();
            stages.on_send(&mut cx, &msg);
        }
        self.forward(&msg, frame);
        self.after_forward(&msg, frame, in_copy);
        Flow::Continue
    }

    /// Terminate, or a message no client may send in a session: the session ends.
    async fn refuse(&mut self, tag: u8) -> Flow {
        if tag != fe::TERMINATE {
            let msg = format!("invalid frontend message type {}", tag);
            messages::error(&mut self.cout, "FATAL", sqlstate::PROTOCOL_VIOLATION, &msg);
            let _ = self.flush_client().await;
        }
        Flow::Close
    }

    /// Counted; true when skipped: after an error, as the server skips, until the Sync.
    #[inline]
    fn skipped(&mut self, tag: u8) -> bool {
        self.counts.client_parses += u64::from(tag == fe::PARSE);
        self.counts.binds += u64::from(tag == fe::BIND);
        if self.skip.until_sync {
            if tag != fe::SYNC {
                return true;
            }
            self.skip.until_sync = false;
        }
        false
    }

    /// The message was written to the server: what it may run is noted, the stages attach what
    /// they expect back, a Sync, Query or FunctionCall the server answers ends a group, and a stage's skip to the
    /// next Sync takes effect.
    #[inline]
    fn after_forward(&mut self, msg: &ClientMessage<'_>, frame: &[u8], in_copy: bool) {
        if self.keeping.isolate_attached_code
            && !self.keeping.reset_on_release
            && matches!(msg, ClientMessage::Query { .. } | ClientMessage::Bind { .. } | ClientMessage::FunctionCall)
        {
            self.note_attached_code(msg, frame);
        }
        if self.stages.wants_after_send(msg, &self.turn) {
            let (stages, mut cx) = self.split();
            stages.after_send(&mut cx, msg, in_copy);
        }
        // (A Query or FunctionCall the server skips, after an error before Sync, ends no group:
        // no ReadyForQuery answers it.)
        // (By tag: a malformed Query is counted and answered by the server as any other.)
        let ends_group = match frame[0] {
            fe::SYNC => true,
            fe::QUERY | fe::FUNCTION_CALL => self.pending.queued(),
            _ => false,
        };
        if ends_group {
            self.stages.at_boundary(msg, in_copy);
        }
        self.skip.until_sync |= self.turn.skip_to_sync;
    }

    /// A large message streamed through in parts (Bind with big parameters, CopyData).
    pub(super) async fn on_client_part(&mut self, tag: u8, bytes: &[u8], first: bool) -> Flow {
        if first {
            if !is_session_tag(tag) || tag == fe::TERMINATE {
                return self.on_client_message(tag, bytes).await;
            }
            self.counts.binds += u64::from(tag == fe::BIND);
            self.skip.stream = self.skip.until_sync;
            if !self.skip.stream && self.server.is_none() {
                if matches!(tag, fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL) {
                    self.skip.stream = true;
                } else if let Err(frame) = self.checkout().await {
                    self.cout.extend_from_slice(&frame);
                    self.skip.until_sync = true;
                    self.skip.stream = true;
                }
            }
            if !self.skip.stream {
                // Only a message that goes to a server is the cache's business: a skipped
                // FunctionCall gets no ReadyForQuery to settle a group, and a skipped Bind binds
                // no portal (as a skipped whole message, which no stage sees).
                self.pending.begin_message();
                if let Some(kind) = self.reply_kind(tag, None) {
                    self.pending.push(kind, super::reply_queue::Action::Forward);
                }
                let queued = self.pending.queued();
                if self.stages.cache.on {
                    self.stages.cache.on_part(tag, queued);
                }
                if queued || tag != fe::FUNCTION_CALL {
                    self.tx.on_client(tag);
                }
                self.note_streamed_call(tag, bytes);
            }
        }
        if !self.skip.stream {
            self.sout.extend_from_slice(bytes);
            if self.sout.len() >= crate::net::frame::STREAM_THRESHOLD {
                return self.flush_server().await;
            }
        }
        Flow::Continue
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.pool.clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The stages of a new session, each given the shared parts it uses.
fn new_stages(
    app: &App,
    cfg: &crate::config::Config,
    info: &ClientInfo,
    pool: &Arc<Pool>,
    state: &SessionState,
) -> Stages {
    let (database, user) = (info.database.clone(), info.user.clone());
    let handles = super::stages::cache::Handles {
        cache: app.cache.clone(),
        config: app.config.clone(),
        pool: pool.clone(),
        database: database.clone(),
        user: user.clone(),
    };
    let origin = crate::insights::Origin::new(database, user, info.application_name.clone());
    let insights_handles = (app.query_stats.clone(), app.findings.clone());
    let pool_scope = xxhash_rust::xxh3::xxh3_64_with_seed(
        info.user.as_bytes(),
        xxhash_rust::xxh3::xxh3_64(info.database.as_bytes()),
    );
    Stages {
        cache: super::stages::cache::CacheStage::new(
            cfg.cache.enabled,
            super::keeping::isolates(cfg.pool.mode, cfg.pool.isolate_attached_code),
            state,
            handles,
        ),
        prepared: super::stages::prepared::PreparedStage::new(app.registry.clone(), app.config.clone(), pool_scope),
        insights: super::stages::insights::InsightsStage::new(
            &cfg.insights,
            origin,
            cfg.prepared.client_max,
            insights_handles,
        ),
        replies: Default::default(),
    }
}
