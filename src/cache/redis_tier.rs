//! The tier shared by pgpilot replicas: entries under `pgpilot:r:<key hash>` with a TTL, one
//! generation counter per (database, table) plus a database-wide one and a global epoch, and a
//! pub/sub channel telling other replicas which tables a commit changed. Every call is bounded by
//! `redis_timeout_ms`; after a failure Redis is skipped for a second (a dead Redis must not add
//! its timeout to every miss), and the session goes on local-only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;

use super::generations::Generations;
use super::relations::Relations;

const CHANNEL: &str = "pgpilot:invalidate";
/// How an announcement of DDL starts (`announce_ddl`): no invalidation message does (they start
/// with the sender's id, digits), and a replica without this message reads it as one of an
/// unknown sender with nothing to invalidate.
const DDL: &str = "ddl\x1e";
const EPOCH_KEY: &str = "pgpilot:epoch";
/// How long Redis is skipped after a failed call.
const BACKOFF_MS: u64 = 1000;

pub struct RedisTier {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    timeout: Duration,
    /// Tags this replica's own invalidation messages (it has applied them already).
    id: u64,
    /// Clock ms before which calls are skipped.
    skip_until: AtomicU64,
    pub errors: AtomicU64,
    /// Invalidations received from other replicas.
    pub received: AtomicU64,
    /// The invalidation subscription is live.
    pub subscribed: AtomicBool,
    /// An invalidation could not be sent: other replicas may hold entries it should have ended,
    /// so the shared epoch is bumped as soon as Redis answers again (a task retries it every
    /// `HEAL_EVERY_MS`, so another replica verifying its hits against Redis learns of it at once,
    /// not when this replica next happens to call Redis).
    lost: AtomicBool,
    /// The healing task is running.
    healing: AtomicBool,
}

/// How often a replica that lost an invalidation retries bumping the shared epoch.
const HEAL_EVERY_MS: u64 = 50;

/// What a lookup found: the entry bytes (if any) and the current remote generations.
pub struct Found {
    pub entry: Option<Vec<u8>>,
    pub gens: Vec<i64>,
}

fn gen_key(db: &str, table: Option<&str>) -> String {
    match table {
        Some(t) => format!("pgpilot:g:{}:{db}:{t}", db.len()),
        None => format!("pgpilot:g:{}:{db}", db.len()),
    }
}

pub fn entry_key(hash: u128) -> String {
    format!("pgpilot:r:{hash:032x}")
}

impl RedisTier {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            client: redis::Client::open(url)?,
            conn: ArcSwapOption::empty(),
            timeout,
            id: rand::random(),
            skip_until: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            healing: AtomicBool::new(false),
        }))
    }

    /// Connects (retrying until it works) and keeps the invalidation subscription alive.
    pub fn start(self: &Arc<Self>, gens: Arc<Generations>, relations: Arc<Relations>) {
        let me = self.clone();
        tokio::spawn(async move {
            let cfg = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(me.timeout.max(Duration::from_millis(200))))
                .set_number_of_retries(2);
            loop {
                match ConnectionManager::new_with_config(me.client.clone(), cfg.clone()).await {
                    Ok(c) => {
                        me.conn.store(Some(Arc::new(c)));
                        break;
                    }
                    Err(e) => tracing::warn!("cache: Redis unreachable, local-only for now: {e}"),
                }
                crate::timers::sleep(Duration::from_secs(1)).await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move { me.subscribe_forever(gens, relations).await });
    }

    fn available(&self) -> Option<Arc<ConnectionManager>> {
        if crate::clock::now_ms() < self.skip_until.load(Ordering::Relaxed) {
            return None;
        }
        self.conn.load_full()
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) {
        let first = self.errors.fetch_add(1, Ordering::Relaxed) == 0
            || self.skip_until.load(Ordering::Relaxed) + 10_000 < crate::clock::now_ms();
        self.skip_until.store(crate::clock::now_ms() + BACKOFF_MS, Ordering::Relaxed);
        if first {
            tracing::warn!("cache: Redis {what} failed, serving from the local tier only: {e}");
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, what: &str, cmd: &redis::Pipeline) -> Option<T> {
        let conn = self.available()?;
        self.run_on(&conn, what, cmd).await
    }

    async fn run_on<T: redis::FromRedisValue>(
        &self,
        conn: &ConnectionManager,
        what: &str,
        cmd: &redis::Pipeline,
    ) -> Option<T> {
        let mut conn = conn.clone();
        match crate::timers::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(what, e);
                None
            }
            Err(_) => {
                self.failed(what, format!("no reply within {:?}", self.timeout));
                None
            }
        }
    }

    /// After a lost invalidation: once Redis answers, every shared entry is ended (epoch).
    async fn heal(&self) -> bool {
        if !self.lost.load(Ordering::Relaxed) {
            return true;
        }
        let flushed = self.flush().await;
        if flushed {
            self.healed();
        }
        flushed
    }

    fn healed(&self) {
        self.lost.store(false, Ordering::Relaxed);
        self.skip_until.store(0, Ordering::Relaxed);
        tracing::info!("cache: Redis reachable again; shared entries from before the outage dropped");
    }

    /// One round trip: the entry and the generations it must match.
    pub async fn lookup(&self, hash: u128, db: &str, tables: &[Arc<str>]) -> Option<Found> {
        if !self.heal().await {
            return None;
        }
        let mut p = redis::pipe();
        let cmd = p.cmd("MGET").arg(entry_key(hash)).arg(EPOCH_KEY).arg(gen_key(db, None));
        // (the entry is a bulk string; the generations parse from their decimal text below)
        for t in tables {
            cmd.arg(gen_key(db, Some(t)));
        }
        let (values,): (Vec<Option<Vec<u8>>>,) = self.run("lookup", &p).await?;
        let mut it = values.into_iter();
        let entry = it.next().flatten();
        let gens = it.map(|v| v.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok()).unwrap_or(0)).collect();
        Some(Found { entry, gens })
    }

    /// The current shared generations alone: a local hit checks them, so a commit through any
    /// replica is seen by the next read on every replica (not only once pub/sub arrives).
    pub async fn generations(&self, db: &str, tables: &[Arc<str>]) -> Option<Vec<i64>> {
        if !self.heal().await {
            return None;
        }
        let mut p = redis::pipe();
        let cmd = p.cmd("MGET").arg(EPOCH_KEY).arg(gen_key(db, None));
        for t in tables {
            cmd.arg(gen_key(db, Some(t)));
        }
        let (values,): (Vec<Option<i64>>,) = self.run("generations", &p).await?;
        Some(values.into_iter().map(|v| v.unwrap_or(0)).collect())
    }

    /// Stores an entry in the background (the client is not kept waiting for it).
    pub fn store(self: &Arc<Self>, hash: u128, payload: Vec<u8>, ttl: Duration) {
        if self.available().is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut p = redis::pipe();
            p.cmd("SET").arg(entry_key(hash)).arg(payload).arg("PX").arg(ttl.as_millis().max(1) as u64).ignore();
            let _: Option<()> = me.run("store", &p).await;
        });
    }

    /// A commit changed `tables` of `db` (None: anything in it): bump the shared generations and
    /// tell the other replicas. Awaited before the client learns of its commit.
    pub async fn invalidate(self: &Arc<Self>, db: &str, tables: Option<&[Arc<str>]>) -> bool {
        let mut p = redis::pipe();
        match tables {
            Some(tables) => {
                for t in tables {
                    p.cmd("INCR").arg(gen_key(db, Some(t))).ignore();
                    p.cmd("PUBLISH").arg(CHANNEL).arg(format!("{}\x1f{db}\x1f{t}", self.id)).ignore();
                }
            }
            None => {
                p.cmd("INCR").arg(gen_key(db, None)).ignore();
                p.cmd("PUBLISH").arg(CHANNEL).arg(format!("{}\x1f{db}", self.id)).ignore();
            }
        }
        let sent = self.heal().await && self.run::<()>("invalidate", &p).await.is_some();
        if !sent {
            self.lost.store(true, Ordering::Relaxed);
            self.heal_soon();
        }
        sent
    }

    /// DDL ended in `db`: the other replicas mark their table list of it out of date. When
    /// Redis does not take it, the tier is lost: its healing flush (`*`) reaches them later, and
    /// a flush marks every list out of date.
    pub async fn announce_ddl(self: &Arc<Self>, db: &str) {
        let mut p = redis::pipe();
        p.cmd("PUBLISH").arg(CHANNEL).arg(format!("{DDL}{}\x1e{db}", self.id)).ignore();
        if self.run::<()>("announce DDL", &p).await.is_none() {
            self.lost.store(true, Ordering::Relaxed);
            self.heal_soon();
        }
    }

    /// Retries the epoch bump until Redis answers (past the backoff: the point is to be first).
    fn heal_soon(self: &Arc<Self>) {
        if self.healing.swap(true, Ordering::Relaxed) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            while me.lost.load(Ordering::Relaxed) {
                crate::timers::sleep(Duration::from_millis(HEAL_EVERY_MS)).await;
                let Some(conn) = me.conn.load_full() else { continue };
                if me.run_on::<()>(&conn, "flush", &flush_command(me.id)).await.is_some() {
                    me.healed();
                }
            }
            me.healing.store(false, Ordering::Relaxed);
        });
    }

    /// Everything cached, on every replica, is invalid.
    pub async fn flush(&self) -> bool {
        self.run::<()>("flush", &flush_command(self.id)).await.is_some()
    }

    async fn subscribe_forever(&self, gens: Arc<Generations>, relations: Arc<Relations>) {
        loop {
            let connected = crate::timers::timeout(Duration::from_secs(2), async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(CHANNEL).await?;
                Ok::<_, redis::RedisError>(ps)
            })
            .await;
            if let Ok(Ok(mut ps)) = connected {
                // Invalidations sent while unsubscribed were missed: nothing cached so far is
                // trusted, nor any table list (DDL may have been announced meanwhile).
                gens.bump_all();
                relations.mark_all_stale();
                self.subscribed.store(true, Ordering::Relaxed);
                let mut messages = ps.on_message();
                while let Some(msg) = messages.next().await {
                    self.apply(&gens, &relations, msg.get_payload_bytes());
                }
                self.subscribed.store(false, Ordering::Relaxed);
                gens.bump_all();
                tracing::warn!("cache: Redis invalidation subscription lost; local entries dropped");
            }
            crate::timers::sleep(Duration::from_secs(1)).await;
        }
    }

    fn apply(&self, gens: &Generations, relations: &Relations, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        if let Some((from, db)) = text.strip_prefix(DDL).and_then(|rest| rest.split_once('\x1e')) {
            if from.parse::<u64>().ok() != Some(self.id) {
                self.received.fetch_add(1, Ordering::Relaxed);
                relations.mark_stale(db);
            }
            return;
        }
        // (at most three parts: a row-level scope name holds the separator itself)
        let mut parts = text.splitn(3, '\x1f');
        let from = parts.next().and_then(|p| p.parse::<u64>().ok());
        if from == Some(self.id) {
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        match (parts.next(), parts.next()) {
            (Some("*"), None) => {
                // A flush, or a replica healing after Redis failed it: an announcement of DDL
                // may be among what was lost.
                gens.bump_all();
                relations.mark_all_stale();
            }
            (Some(db), Some(table)) => gens.bump_tables(db, &[Arc::from(table)]),
            (Some(db), None) => gens.bump_database(db),
            _ => {}
        }
    }
}

/// Ends every shared entry (the epoch) and tells the other replicas to drop their local ones.
fn flush_command(id: u64) -> redis::Pipeline {
    let mut p = redis::pipe();
    p.cmd("INCR").arg(EPOCH_KEY).ignore();
    p.cmd("PUBLISH").arg(CHANNEL).arg(format!("{id}\x1f*")).ignore();
    p
}
