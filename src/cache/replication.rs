//! `[cache] invalidation = "replication"`: one logical replication stream per database the cache
//! serves, so that a write that never passed through pgpilot (psql, a migration, another service)
//! invalidates like one that did, at its commit, locally and through Redis.
//!
//! The stream uses a TEMPORARY slot with the test_decoding plugin (`wal.rs` says why): the server
//! drops the slot when the connection ends, however pgpilot ends, so no slot is left holding WAL.
//! The price: what was committed while no stream was connected is gone, so every (re)connect
//! invalidates the whole database before hits are served again.
//!
//! Freshness is measured, not assumed: every `PROBE_MS` a plain connection reads the server's WAL
//! insert position; once the stream has applied up to it, every commit acknowledged before the probe
//! was sent is applied. A database whose stream is further behind than `max_staleness_ms` (or down)
//! serves no hits. When the stream cannot work at all (wal_level below logical, no REPLICATION
//! privilege) the database falls back to proxy-seen writes and the TTL, with a warning naming the fix.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use parking_lot::{Mutex, RwLock};

use super::relations::Relations;
use super::scopes::{self, Written};
use super::visibility::{self, Rebumps};
use super::wal::{self, Change, StreamMessage};
use super::ResultCache;
use crate::backend::connect::{connect, Target};
use crate::backend::{ServerConn, ServerError};
use crate::config::Config;
use crate::protocol::backend as be;

/// How often the server's WAL position is read to measure how far behind the stream is.
const PROBE_MS: u64 = 100;

/// A stream's state, as /health/status and SHOW CACHE show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Connecting = 0,
    Live = 1,
    /// Lost; reconnecting (no hits once it is past the staleness bound).
    Down = 2,
    /// Cannot work here (wal_level, privileges): proxy-seen writes and the TTL bound it.
    Unavailable = 3,
}

impl State {
    pub fn name(self) -> &'static str {
        ["connecting", "live", "down", "unavailable"][self as usize]
    }
}

/// One database's stream.
pub struct Stream {
    state: AtomicU8,
    /// Wall-clock ms up to which every acknowledged commit has been applied (0: not yet).
    fresh_as_of_us: AtomicU64,
    pub applied_lsn: AtomicU64,
    /// Tables (or whole databases) the stream invalidated.
    pub invalidations: AtomicU64,
    pub reconnects: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Stream {
    pub fn state(&self) -> State {
        match self.state.load(Relaxed) {
            1 => State::Live,
            2 => State::Down,
            3 => State::Unavailable,
            _ => State::Connecting,
        }
    }

    fn set(&self, s: State) {
        self.state.store(s as u8, Relaxed);
    }

    /// How far behind the server the stream is known to be (None: never caught up).
    pub fn lag(&self) -> Option<Duration> {
        let fresh = self.fresh_as_of_us.load(Relaxed);
        (fresh > 0).then(|| Duration::from_micros(wall_us().saturating_sub(fresh)))
    }
}

/// The streams of every database, started on first use.
pub struct Streams {
    config: Arc<ArcSwap<Config>>,
    dbs: RwLock<HashMap<Arc<str>, Arc<Stream>>>,
}

impl Streams {
    pub fn new(config: Arc<ArcSwap<Config>>) -> Self {
        Self { config, dbs: RwLock::default() }
    }

    /// Starts `db`'s stream unless it runs already.
    pub fn ensure(self: &Arc<Self>, cache: &Arc<ResultCache>, db: &Arc<str>) {
        if self.dbs.read().contains_key(db) {
            return;
        }
        let stream = {
            let mut dbs = self.dbs.write();
            if dbs.contains_key(db) {
                return;
            }
            let s = Arc::new(Stream {
                state: AtomicU8::new(State::Connecting as u8),
                fresh_as_of_us: AtomicU64::new(0),
                applied_lsn: AtomicU64::new(0),
                invalidations: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                last_error: Mutex::new(None),
            });
            dbs.insert(db.clone(), s.clone());
            s
        };
        tokio::spawn(run(self.clone(), cache.clone(), db.clone(), stream));
    }

    /// Whether `db`'s cached results may be served: its stream is within the staleness bound,
    /// or cannot work at all (then proxy-seen writes and the TTL bound them, as without it).
    pub fn serves_hits(&self, db: &str) -> bool {
        let dbs = self.dbs.read();
        let Some(s) = dbs.get(db) else { return false };
        if s.state() == State::Unavailable {
            return true;
        }
        let bound = self.config.load().cache.max_staleness_ms;
        // In microseconds: a read made just past the bound after a commit must not round into it.
        s.lag().is_some_and(|lag| lag < Duration::from_millis(bound))
    }

    pub fn all(&self) -> Vec<(Arc<str>, Arc<Stream>)> {
        self.dbs.read().iter().map(|(d, s)| (d.clone(), s.clone())).collect()
    }

    fn target(&self, db: &str, replication: bool) -> Target {
        let cfg = self.config.load();
        let up = cfg.upstream();
        Target {
            host: up.host.clone(),
            port: up.port,
            user: cfg.cache.replication_user.clone().unwrap_or(up.user.clone()),
            password: cfg.cache.replication_password.clone().or(up.password.clone()),
            database: db.to_string(),
            timeout: cfg.connect_timeout(),
            prepared_cache: 1,
            replication,
            link: crate::backend::connect::Link::from_config(&cfg),
        }
    }
}

/// Why a stream ended.
enum Ended {
    /// It cannot work on this server as configured: retried rarely.
    Unavailable(String),
    Lost(String),
}

impl From<ServerError> for Ended {
    fn from(e: ServerError) -> Self {
        let text = e.to_string();
        // 42501: no REPLICATION privilege; 55000: wal_level; 28000: pg_hba refuses; 58P01: no
        // test_decoding (a PostgreSQL built without contrib).
        if ["42501", "55000", "28000", "58P01"].iter().any(|c| text.contains(c)) {
            Ended::Unavailable(text)
        } else {
            Ended::Lost(text)
        }
    }
}

async fn run(streams: Arc<Streams>, cache: Arc<ResultCache>, db: Arc<str>, s: Arc<Stream>) {
    let mut warned = false;
    loop {
        let ended = stream(&streams, &cache, &db, &s).await;
        let (state, text, pause) = match ended {
            Ended::Unavailable(t) => (State::Unavailable, t, Duration::from_secs(60)),
            Ended::Lost(t) => (State::Down, t, Duration::from_secs(1)),
        };
        if !warned || state == State::Unavailable {
            tracing::warn!(database = %db, "cache: replication stream {}: {text}", state.name());
            warned = true;
        }
        // The reason first: whoever sees the new state finds its reason beside it.
        *s.last_error.lock() = Some(text);
        s.reconnects.fetch_add(1, Relaxed);
        s.set(state);
        crate::timers::sleep(pause).await;
    }
}

/// Connects, creates the slot, invalidates what may have been missed, then applies the stream
/// until it fails.
async fn stream(streams: &Streams, cache: &ResultCache, db: &Arc<str>, s: &Stream) -> Ended {
    let mut repl = match connect(&streams.target(db, true)).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    match repl.run_internal("SHOW wal_level").await {
        Ok(rows) if first_value(&rows).as_deref() == Some("logical") => {}
        Ok(rows) => {
            let level = first_value(&rows).unwrap_or_default();
            return Ended::Unavailable(format!(
                "wal_level is {level:?}: set wal_level = logical on the server (a restart) to see writes that \
                 bypass pgpilot; until then they are bounded by the TTL"
            ));
        }
        Err(e) => return e.into(),
    }
    let slot = format!("pgpilot_{:016x}", rand::random::<u64>());
    if let Err(e) = repl.run_internal(&format!("CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL test_decoding")).await
    {
        return e.into();
    }
    let mut probe = match connect(&streams.target(db, false)).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    // Commits made while no stream was connected are not in this slot.
    cache.invalidate(db, None).await;
    s.invalidations.fetch_add(1, Relaxed);
    let start = format!(
        "START_REPLICATION SLOT {slot} LOGICAL 0/0 (\"skip-empty-xacts\" '1', \"include-xids\" '1', \
         \"include-timestamp\" '0')"
    );
    let mut out = BytesMut::new();
    crate::net::messages::query(&mut out, &start);
    if let Err(e) = repl.send(&out).await {
        return e.into();
    }
    match repl.read_message().await {
        Ok((be::COPY_BOTH_RESPONSE, _)) => {}
        Ok((be::ERROR_RESPONSE, frame)) => return ServerError::from_error_frame(frame).into(),
        Ok((tag, _)) => return Ended::Lost(format!("{:?} instead of CopyBothResponse", tag as char)),
        Err(e) => return e.into(),
    }
    s.set(State::Live);
    tracing::info!(database = %db, %slot, "cache: replication stream live");
    match apply(cache, db, s, &mut repl, &mut probe).await {
        Err(e) => e.into(),
        Ok(()) => Ended::Lost("the server ended the stream".into()),
    }
}

/// A row change of `table` as the keys it wrote, when the table is keyed and the line gives
/// every key value; None: the table.
fn keyed_writes(relations: &Relations, db: &str, table: &Arc<str>, what: &[u8]) -> Option<Vec<Written>> {
    let (column, family) = relations.key_column(db, table)?;
    let (kind, values) = wal::row_keys(what, &column)?;
    values.iter().map(|v| Some(Written::key(table, kind, &scopes::canonical_text(family, v)?))).collect()
}

/// The server's WAL insert position and a snapshot (which transactions are still in progress).
const PROBE: &str = "SELECT pg_catalog.pg_current_wal_insert_lsn()::text, pg_catalog.txid_current_snapshot()::text";

fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn first_value(rows: &[crate::backend::internal::Row]) -> Option<String> {
    rows.first()?.first().cloned().flatten()
}

/// What a transaction being decoded has changed so far.
#[derive(Default)]
struct Open {
    tables: scopes::WriteList,
    all: bool,
    open: bool,
}

async fn apply(
    cache: &ResultCache,
    db: &Arc<str>,
    s: &Stream,
    repl: &mut ServerConn,
    probe: &mut ServerConn,
) -> Result<(), ServerError> {
    let mut tx = Open::default();
    let mut rebumps = Rebumps::default();
    // (time sent, WAL insert position then): fresh as of that time once applied up to it.
    let mut probes: VecDeque<(u64, u64)> = VecDeque::new();
    let mut tick = crate::timers::interval(Duration::from_millis(PROBE_MS));
    loop {
        tokio::select! {
            read = repl.read_message() => {
                let (tag, frame) = read?;
                match tag {
                    be::COPY_DATA => {
                        let body = crate::net::frame::body(&frame);
                        let reply = on_data(cache, db, s, (&mut tx, &mut rebumps), body).await?;
                        if reply {
                            repl.send(&wal::status_update(s.applied_lsn.load(Relaxed), false)).await?;
                        }
                    }
                    be::ERROR_RESPONSE => return Err(ServerError::from_error_frame(frame)),
                    be::COPY_DONE => return Ok(()),
                    be::NOTICE_RESPONSE | be::PARAMETER_STATUS => {}
                    other => return Err(ServerError::Protocol(format!("{:?} in the replication stream", other as char))),
                }
            }
            _ = tick.tick() => {
                if let Some(sent_at) = on_probe(cache, db, probe, &mut rebumps).await? {
                    if probes.len() == 64 {
                        probes.pop_front();
                    }
                    probes.push_back(sent_at);
                }
                // Asks for a keepalive: it carries how far the server has decoded.
                repl.send(&wal::status_update(s.applied_lsn.load(Relaxed), true)).await?;
            }
        }
        advance_fresh(s, &rebumps, &mut probes);
    }
}

/// A probe of the server: commits it shows visible are invalidated again; (time sent, WAL
/// position then) when it read one.
async fn on_probe(
    cache: &ResultCache,
    db: &Arc<str>,
    probe: &mut ServerConn,
    rebumps: &mut Rebumps,
) -> Result<Option<(u64, u64)>, ServerError> {
    let sent = wall_us();
    let rows = probe.run_internal(PROBE).await?;
    let lsn = first_value(&rows).and_then(|t| wal::parse_lsn(&t));
    let snapshot = rows.first().and_then(|r| r.get(1).cloned().flatten());
    if let Some(snapshot) = snapshot.as_deref().and_then(visibility::parse_snapshot) {
        for names in rebumps.visible(&snapshot) {
            cache.invalidate(db, names.as_deref()).await;
        }
    }
    Ok(lsn.map(|lsn| (sent, lsn)))
}

/// The stream is fresh up to a probe once every commit before it is applied, and applied again
/// once visible.
fn advance_fresh(s: &Stream, rebumps: &Rebumps, probes: &mut VecDeque<(u64, u64)>) {
    let applied = s.applied_lsn.load(Relaxed);
    let visible_to = rebumps.oldest().map_or(u64::MAX, |lsn| lsn.saturating_sub(1));
    while let Some(&(sent, lsn)) = probes.front() {
        if lsn > applied || lsn > visible_to {
            break;
        }
        s.fresh_as_of_us.fetch_max(sent, Relaxed);
        probes.pop_front();
    }
}

/// One CopyData of the stream; true when the server asked for a reply.
async fn on_data(
    cache: &ResultCache,
    db: &Arc<str>,
    s: &Stream,
    (tx, rebumps): (&mut Open, &mut Rebumps),
    body: &[u8],
) -> Result<bool, ServerError> {
    let Some(msg) = wal::stream_message(body) else {
        return Err(ServerError::Protocol("malformed replication message".into()));
    };
    match msg {
        StreamMessage::Keepalive { end, reply } => {
            // Decoding sends a transaction whole at its commit: between transactions, everything
            // the server has processed up to `end` has been applied here.
            if !tx.open {
                s.applied_lsn.fetch_max(end, Relaxed);
            }
            Ok(reply)
        }
        StreamMessage::Data { start, line } => {
            match wal::change(line) {
                Change::Begin => *tx = Open { open: true, ..Open::default() },
                Change::Tables(names, what) => {
                    let keys = match names.as_slice() {
                        [t] => keyed_writes(&cache.relations, db, t, what),
                        _ => None,
                    };
                    let written = keys.unwrap_or_else(|| names.into_iter().map(Written::table).collect());
                    for w in written {
                        scopes::add(&mut tx.tables, w);
                    }
                }
                Change::Unknown => tx.all = true,
                Change::Other => {}
                Change::Commit(xid) => {
                    let done = std::mem::take(tx);
                    let names = match (done.all, done.tables.is_empty()) {
                        (true, _) => Some(None),
                        (false, false) => Some(Some(done.tables.into_vec())),
                        (false, true) => None,
                    };
                    if let Some(names) = names {
                        cache.invalidate(db, names.as_deref()).await;
                        s.invalidations.fetch_add(names.as_ref().map_or(1, |n| n.len() as u64), Relaxed);
                        rebumps.push(start, xid, names); // and again once it is visible
                    }
                    s.applied_lsn.fetch_max(start, Relaxed);
                }
            }
            Ok(false)
        }
    }
}
