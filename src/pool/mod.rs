//! Server connection pools, one per (database, user), with a FIFO wait queue.
//!
//! A pool owns a count of slots (`total`, at most max_size); a slot is either an idle connection
//! or one checked out behind a `PooledConn` guard. Returning or discarding a connection hands it
//! (or its free slot) straight to the longest waiter, so waiting is fair and needs no polling.

pub mod budget;
mod connect_gate;
pub mod guard;
mod health;
pub mod lane;
pub mod logins;
pub mod maintenance;
pub mod set;
pub mod snapshot;
pub mod traffic;
pub use snapshot::PoolSnapshot;
pub mod sizing;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use guard::{Back, PooledConn};
pub use logins::Login;

use crate::backend::connect::{connect, Target};
use crate::backend::{ServerConn, ServerError};
use crate::config::Config;
use crate::net::messages::sqlstate;

/// Address, age and idle time of a server connection.
pub type SocketAddrAge = (crate::net::endpoint::Endpoint, Duration, Duration);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
}

/// What a checkout is handed: a connection, or a free slot to open one in. A connection is boxed
/// from its open to its close: a checkout and a release then move a pointer, not the ~300-byte
/// ServerConn (which was copied ~20 times per transaction through the futures and the guard:
/// ~6% of pgpilot's instructions per transaction on pgbench -S, docs/BENCHMARKS.md).
enum Grant {
    Conn(Box<ServerConn>),
    Slot,
}

#[derive(Default)]
struct State {
    /// Boxed on purpose (see `Grant`): a connection moves between the list and its checkouts.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<ServerConn>>,
    /// Changed only by `reserve` and `release`: every slot taken is given back exactly once.
    total: usize,
    waiters: VecDeque<Waiter>,
}

/// A checkout waiting, and since when (SHOW POOLS' maxwait).
struct Waiter {
    since: Instant,
    tx: oneshot::Sender<Grant>,
}

impl State {
    /// Takes a slot for a connection about to be opened, if fewer than `limit` are taken and
    /// the server-wide budget has room.
    fn reserve(&mut self, limit: usize, budget: &budget::Budget) -> bool {
        let free = self.total < limit && budget.try_take();
        self.total += usize::from(free);
        free
    }

    /// A connection (or a reserved slot) is gone for good.
    fn release(&mut self, budget: &budget::Budget) {
        if self.total > 0 {
            self.total -= 1;
            budget.give_back();
        }
    }
}

pub struct Pool {
    /// What logins were told (see `Logins`).
    pub logins: logins::Logins,
    pub key: PoolKey,
    config: Arc<ArcSwap<Config>>,
    /// PAUSE (admin console): checkouts wait while this is true.
    paused: tokio::sync::watch::Receiver<set::Paused>,
    /// Client sessions using this pool.
    pub clients: std::sync::atomic::AtomicI64,
    state: Mutex<State>,
    pub checkouts: AtomicU64,
    pub wait_timeouts: AtomicU64,
    /// The server refused this pool's database or user (3D000, class 28) at this time: further
    /// connects within `REFUSAL_MEMORY` get the same error without forking a backend.
    refused: Mutex<Option<(Instant, BytesMut, String)>>,
    /// Since when the pool has had no client, connection or waiter (ms on `clock`; 0: in use).
    pub(crate) unused_since_ms: AtomicU64,
    /// Adaptive sizing (`sizing`): the controller, its current target (read without the lock by
    /// every checkout), the last decision, and what it measures.
    sizing: Mutex<sizing::Controller>,
    target: std::sync::atomic::AtomicUsize,
    decision: Mutex<Option<sizing::Decision>>,
    /// Checkouts that had to wait, and the time connections were held by clients (ms on the
    /// coarse clock: unbiased over many checkouts).
    pub waited: AtomicU64,
    pub(crate) held_ms: AtomicU64,
    /// SHOW STATS' bytes, Parse/Bind counts and wait time (`traffic`).
    pub traffic: traffic::Traffic,
    /// (clock ms, checkouts, waited, held ms) at the last sizing tick.
    last_tick: Mutex<(u64, u64, u64, u64)>,
    /// Server connections all pools may hold, shared (`budget`).
    budget: Arc<budget::Budget>,
    /// Connects in progress at once (`pool.max_parallel_connects`, reloadable): a pool growing
    /// fast does not fork a burst of backends (and SCRAM handshakes) on the server.
    connects: connect_gate::ConnectGate,
    /// The slow lane's tickets (`lane`).
    pub lane: Arc<lane::Lane>,
    /// Until then (clock ms) every idle socket is checked before use, however recently used.
    suspect_until_ms: AtomicU64,
}

/// How long a refusal is remembered: a flood of logins to a database that does not exist forks
/// one backend per this period, not one per login.
const REFUSAL_MEMORY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("no server connection available in pool {database}/{user} within {ms} ms (pool size {max})")]
    Timeout { database: String, user: String, ms: u64, max: usize },
    #[error(transparent)]
    Connect(#[from] ServerError),
}

impl Pool {
    pub fn new(
        key: PoolKey,
        config: Arc<ArcSwap<Config>>,
        paused: tokio::sync::watch::Receiver<set::Paused>,
        budget: Arc<budget::Budget>,
    ) -> Arc<Self> {
        // Adaptive pools start at min_size and grow with their checkouts (a waiting checkout
        // raises the target at once), so a start costs no more connections than demand.
        let max_start = {
            let cfg = config.load();
            let max = cfg.pool_max_for(&key.user);
            if cfg.pool.adaptive {
                cfg.pool.min_size.min(max)
            } else {
                max
            }
        };
        Arc::new(Self {
            key,
            connects: connect_gate::ConnectGate::new(config.load().pool.max_parallel_connects),
            config,
            paused,
            clients: Default::default(),
            state: Mutex::new(State::default()),
            checkouts: AtomicU64::new(0),
            wait_timeouts: AtomicU64::new(0),
            logins: Default::default(),
            refused: Mutex::default(),
            unused_since_ms: AtomicU64::new(0),
            sizing: Mutex::new(sizing::Controller::new(max_start)),
            target: max_start.into(),
            decision: Mutex::new(None),
            waited: AtomicU64::new(0),
            held_ms: AtomicU64::new(0),
            traffic: traffic::Traffic::default(),
            last_tick: Mutex::new((crate::clock::now_ms(), 0, 0, 0)),
            budget,
            lane: Default::default(),
            suspect_until_ms: AtomicU64::new(0),
        })
    }

    /// A connection could be had now without waiting (an idle one or a free slot); a hint, it
    /// may be gone a moment later.
    pub fn has_capacity(&self) -> bool {
        let max = self.limit();
        let st = self.state.lock();
        !st.idle.is_empty() || st.total < max
    }

    /// Opens a new server connection (see `Logins::saw_connection` for what it may make the
    /// pool forget, and `refused` for what it remembers).
    async fn open(&self) -> Result<Box<ServerConn>, ServerError> {
        if let Some((at, frame, msg)) = self.refused.lock().as_ref() {
            if at.elapsed() < REFUSAL_MEMORY {
                return Err(ServerError::Server(frame.clone(), msg.clone()));
            }
        }
        let permit = self.connects.enter(self.config.load().pool.max_parallel_connects).await;
        let conn = match connect(&self.target()).await {
            Ok(conn) => conn,
            Err(ServerError::Server(frame, msg)) => {
                let (_, code, _) = crate::protocol::backend::error_fields(crate::net::frame::body(&frame));
                if code == sqlstate::UNKNOWN_DATABASE || code.starts_with("28") {
                    *self.refused.lock() = Some((Instant::now(), frame.clone(), msg.clone()));
                }
                return Err(ServerError::Server(frame, msg));
            }
            Err(e) => return Err(e),
        };
        drop(permit);
        self.logins.saw_connection(&conn.params);
        let mut conn = Box::new(conn);
        if self.budget.claim_derivation() {
            self.derive_budget(&mut conn).await;
        }
        Ok(conn)
    }

    /// The first connection reads what the server allows (`budget::derive`).
    async fn derive_budget(&self, conn: &mut ServerConn) {
        let rows = conn.run_internal(budget::QUERY).await;
        let row = rows.ok().and_then(|r| r.into_iter().next());
        let n = |i: usize| row.as_ref().and_then(|r| r.get(i).cloned().flatten()).and_then(|v| v.parse::<usize>().ok());
        let replicas = self.config.load().pool.replicas;
        match (n(0), n(1), n(2)) {
            (Some(max), Some(superuser), Some(reserved)) => {
                let limit = budget::derive(max, superuser + reserved, replicas);
                tracing::info!(limit, max_connections = max, replicas, "pool: server connection budget");
                self.budget.set_derived(limit);
            }
            _ => tracing::warn!("pool: could not read max_connections; no server connection budget"),
        }
    }

    pub fn max_size(&self) -> usize {
        self.config.load().pool_max_for(&self.key.user)
    }

    /// The connections this pool may hold now: the adaptive target (within [min_size, max_size]),
    /// or max_size with `pool.adaptive = false`. Kept in an atomic by the sizing tick and by
    /// checkouts that grow it, so a checkout reads no configuration.
    pub fn limit(&self) -> usize {
        self.target.load(Ordering::Relaxed)
    }

    /// A checkout would wait: the target grows by one now (not at the next tick) unless the
    /// controller found the server contended. Whether it grew.
    fn grow_for_waiter(&self) -> bool {
        let cfg = self.config.load();
        if !cfg.pool.adaptive || self.budget.exhausted() {
            return false;
        }
        let max = cfg.pool_max_for(&self.key.user);
        let mut c = self.sizing.lock();
        let grew = c.grow_for_waiter(max);
        self.target.store(c.target(), Ordering::Relaxed);
        grew
    }

    /// A checked-out connection came back (or was closed) after `since_ms` on the clock.
    pub(crate) fn note_held(&self, since_ms: u64) {
        self.held_ms.fetch_add(crate::clock::now_ms().saturating_sub(since_ms), Ordering::Relaxed);
    }

    /// What a connection runs before it is reused after a session that may have changed it.
    pub fn reset_query(&self) -> String {
        self.config.load().pool.reset_query.clone()
    }

    fn target(&self) -> Target {
        let cfg = self.config.load();
        let up = cfg.upstream();
        let (user, password) = match cfg.find_user(&self.key.user) {
            Some(u) => u.server_credentials(&up),
            None => (self.key.user.clone(), None),
        };
        Target {
            host: up.host.clone(),
            port: up.port,
            user,
            password,
            database: self.key.database.clone(),
            timeout: cfg.connect_timeout(),
            prepared_cache: cfg.prepared.server_cache_size,
            replication: false,
            link: crate::backend::connect::Link::from_config(&cfg),
        }
    }

    /// Gets a server connection, waiting up to the configured checkout timeout.
    pub async fn checkout(self: &Arc<Self>) -> Result<PooledConn, CheckoutError> {
        if self.paused.borrow().covers(&self.key.database) {
            let mut paused = self.paused.clone();
            let _ = paused.wait_for(|p| !p.covers(&self.key.database)).await;
        }
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        // Fast path: an idle connection that passes its check, with no clock read.
        let mut taken = self.try_take();
        if let Some(Grant::Conn(conn)) = taken {
            let checked = if self.fresh(&conn) { Some(conn) } else { self.validate(conn).await };
            match checked {
                Some(conn) => {
                    crate::metrics::pool_wait(Duration::ZERO);
                    return Ok(PooledConn::new(conn, self.clone()));
                }
                None => taken = None,
            }
        }
        let started = Instant::now();
        // Boxed: waiting and connecting (TCP, TLS, SCRAM) make a large future that every session's
        // state would otherwise carry for its whole life, idle or not (docs/RELIABILITY.md).
        let result = Box::pin(self.checkout_slow(taken)).await;
        let waited = started.elapsed();
        crate::metrics::pool_wait(waited);
        self.traffic.waited(waited.as_micros() as u64);
        result.map(|conn| PooledConn::new(conn, self.clone()))
    }

    /// Waiting for a connection or a slot, and connecting.
    async fn checkout_slow(self: &Arc<Self>, mut taken: Option<Grant>) -> Result<Box<ServerConn>, CheckoutError> {
        let timeout = self.config.load().checkout_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let grant = match taken.take().or_else(|| self.try_take()) {
                Some(grant) => grant,
                None if self.grow_for_waiter() => continue,
                None => {
                    self.waited.fetch_add(1, Ordering::Relaxed);
                    match self.wait(deadline).await {
                        Some(grant) => grant,
                        None => return Err(self.timeout_error(timeout)),
                    }
                }
            };
            match grant {
                Grant::Conn(conn) => {
                    if let Some(conn) = self.validate(conn).await {
                        return Ok(conn);
                    }
                }
                Grant::Slot => {
                    return self.open().await.map_err(|err| {
                        self.free_slot();
                        err.into()
                    })
                }
            }
        }
    }

    pub(super) fn timeout_error(&self, timeout: Duration) -> CheckoutError {
        self.wait_timeouts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(database = %self.key.database, user = %self.key.user, "pool exhausted: checkout timed out");
        CheckoutError::Timeout {
            database: self.key.database.clone(),
            user: self.key.user.clone(),
            ms: timeout.as_millis() as u64,
            max: self.max_size(),
        }
    }

    fn try_take(&self) -> Option<Grant> {
        let max = self.limit();
        let mut st = self.state.lock();
        if let Some(conn) = st.idle.pop() {
            return Some(Grant::Conn(conn));
        }
        st.reserve(max, &self.budget).then_some(Grant::Slot)
    }

    async fn wait(&self, deadline: tokio::time::Instant) -> Option<Grant> {
        let rx = {
            let mut st = self.state.lock();
            // Re-check under the lock: a connection may have come back since try_take.
            if let Some(conn) = st.idle.pop() {
                return Some(Grant::Conn(conn));
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(Waiter { since: Instant::now(), tx });
            rx
        };
        crate::timers::timeout_at(deadline, rx).await.ok().and_then(Result::ok)
    }

    /// Returns a clean, idle connection: to the first live waiter, else to the idle list.
    pub(crate) fn checkin(&self, mut conn: Box<ServerConn>) {
        self.note_held(conn.last_used_ms); // (set at checkout: see `PooledConn::new`)
        conn.last_used_ms = crate::clock::now_ms();
        let limit = self.limit();
        let mut st = self.state.lock();
        if st.total > limit {
            st.release(&self.budget); // above the target (or a reload lowered max_size): closed
            return;
        }
        if st.waiters.is_empty() {
            st.idle.push(conn);
            return;
        }
        while let Some(Waiter { tx, .. }) = st.waiters.pop_front() {
            match tx.send(Grant::Conn(conn)) {
                Ok(()) => return,
                Err(Grant::Conn(back)) => conn = back,
                Err(Grant::Slot) => unreachable!("sent a connection"),
            }
        }
        st.idle.push(conn);
    }

    /// A connection was closed: its slot goes to the first live waiter, or back to the pool.
    pub(crate) fn free_slot(&self) {
        let limit = self.limit();
        let mut st = self.state.lock();
        if st.total <= limit {
            while let Some(Waiter { tx, .. }) = st.waiters.pop_front() {
                if tx.send(Grant::Slot).is_ok() {
                    return;
                }
            }
        }
        st.release(&self.budget);
    }

    /// Checkouts are waiting.
    pub fn has_waiters(&self) -> bool {
        let mut st = self.state.lock();
        st.waiters.retain(|w| !w.tx.is_closed());
        !st.waiters.is_empty()
    }

    /// Closes one idle connection (its budget goes back); whether there was one.
    pub fn close_one_idle(&self) -> bool {
        let conn = {
            let mut st = self.state.lock();
            let conn = st.idle.pop();
            if conn.is_some() {
                st.release(&self.budget);
            }
            conn
        };
        conn.is_some()
    }

    /// Budget came free elsewhere: a slot for the first waiter, if the pool may open one.
    pub fn offer_slot(&self) {
        let limit = self.limit();
        let mut st = self.state.lock();
        if st.waiters.is_empty() || !st.reserve(limit, &self.budget) {
            return;
        }
        while let Some(Waiter { tx, .. }) = st.waiters.pop_front() {
            if tx.send(Grant::Slot).is_ok() {
                return;
            }
        }
        st.release(&self.budget);
    }

    /// No connection, open or being opened, and no waiter.
    pub fn is_empty(&self) -> bool {
        let st = self.state.lock();
        st.total == 0 && st.waiters.is_empty()
    }
}

/// An idle connection as the admin console lists it: its backend pid, address and ages.
fn idle_server(c: &ServerConn) -> (i32, SocketAddrAge) {
    (c.pid, (c.addr.clone(), crate::clock::since(c.created_ms), crate::clock::since(c.last_used_ms)))
}
