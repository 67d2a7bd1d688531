//! The result cache: exact reply frames of cacheable reads, kept in-process (moka, bounded in
//! bytes, per-entry TTL) and optionally in Redis for other replicas. An entry is served only when
//! its full key matches and the generations of every table it read are unchanged since its fill
//! began (see `generations`), so a write pgpilot has seen commit is never followed by an older
//! result. The session side (which messages hit, fill and invalidate) is src/frontend/stages/cache.rs.

pub mod admission;
mod catalog_query;
pub mod entry;
pub mod fill;
pub mod flight;
pub mod generations;
mod invalidation;
mod kept_counters;
pub mod policy;
pub mod prepared_ddl;
pub mod redis_tier;
pub mod relations;
pub mod replication;
pub mod scopes;
pub mod statement;
mod stats;
mod table_facts;
pub mod visibility;
pub mod wal;
pub mod write_rate;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{BufMut, Bytes, BytesMut};
use moka::notification::RemovalCause;

pub use entry::Entry;
use flight::{Begin, FillGuard, Flight};
use generations::Generations;
pub use invalidation::TableViews;
use policy::Policy;
use redis_tier::RedisTier;
use relations::Relations;
pub use scopes::Written;
pub use stats::{CacheStats, Snapshot};

use crate::sql::learned::Learned;

/// What identifies a result: everything that can change the bytes the server would send.
#[derive(Debug, Clone)]
pub struct Key {
    pub hash: u128,
    pub bytes: Bytes,
    pub db: Arc<str>,
    pub tables: Arc<[Arc<str>]>,
    pub ttl: Duration,
    pub fingerprint: u64,
    /// The shape's counters, for what a hit saves and how often its results repeat.
    pub learned: Arc<Learned>,
}

/// What goes into a key besides the tables, TTL and fingerprint carried along.
pub struct KeyParts<'a> {
    /// b'Q' simple Query, b'E' extended.
    pub proto: u8,
    pub db: &'a Arc<str>,
    pub user: &'a str,
    /// Session settings signature (search_path, role, time zone...).
    pub settings: u64,
    /// Statement text and parameter types.
    pub statement: &'a [u8],
    /// Which version of a prepared statement the client holds (its row description), so a
    /// client whose statement predates a DDL never gets rows of the new shape.
    pub variant: u64,
    /// The Bind message after the statement name (parameter formats and values, result
    /// formats); empty for a simple Query.
    pub args: &'a [u8],
}

impl Key {
    pub fn new(p: KeyParts<'_>, a: &crate::sql::Analysis, ttl: Duration) -> Key {
        let mut b = BytesMut::with_capacity(p.db.len() + p.user.len() + p.statement.len() + p.args.len() + 40);
        b.put_u8(p.proto);
        for part in [p.db.as_bytes(), p.user.as_bytes(), p.statement] {
            b.put_u32(part.len() as u32);
            b.put_slice(part);
        }
        b.put_u64(p.settings);
        b.put_u64(p.variant);
        b.put_slice(p.args);
        let hash = xxhash_rust::xxh3::xxh3_128(&b);
        Key {
            hash,
            bytes: b.freeze(),
            db: p.db.clone(),
            tables: a.read_names.clone(),
            ttl,
            fingerprint: a.fingerprint,
            learned: a.learned.clone(),
        }
    }
}

/// A miss this client fills: the generations it started under decide whether it may be stored.
#[derive(Debug)]
pub struct FillPlan {
    pub key: Key,
    gens: Vec<u64>,
    remote: Option<Vec<i64>>,
    /// Present when this client is the single flight for its key.
    guard: Option<FillGuard>,
    pub(crate) stats: Arc<CacheStats>,
    /// When its query was sent: the miss time admission learns from runs from here to the store.
    started: std::time::Instant,
    /// Until when (`clock::now_ms`) its lookup marked its tables watched: a commit after that may
    /// have bumped nothing for them, so a store later than this (less a margin) is refused.
    watched_until: u64,
}

impl FillPlan {
    /// The fill's query was sent to the server (identical misses may wait for it now).
    pub fn sent(&mut self) {
        self.started = std::time::Instant::now();
        if let Some(g) = &self.guard {
            g.sent();
        }
    }
}

pub enum Lookup {
    Hit(Arc<Entry>),
    Miss(Box<FillPlan>),
    /// An invalidation raced the lookup: run the query, store nothing.
    Bypass,
}

pub struct ResultCache {
    local: moka::sync::Cache<u128, Arc<Entry>>,
    pub gens: Arc<Generations>,
    pub relations: Arc<Relations>,
    /// Prepared transactions that ran DDL, until their COMMIT PREPARED.
    pub prepared_ddl: prepared_ddl::PreparedDdl,
    flight: Arc<Flight>,
    pub redis: Option<Arc<RedisTier>>,
    /// Shared so that each session can keep a cheap local view of it (`arc_swap::Cache`).
    pub policy: Arc<ArcSwap<Policy>>,
    pub stats: Arc<CacheStats>,
    /// Reloadable, so owned here: fills and stores read the same value.
    max_entry: std::sync::atomic::AtomicUsize,
    max_bytes: u64,
    verify_hits: bool,
    doorkeeper: admission::Doorkeeper,
    skip_unrepeated: bool,
    admission: admission::Params,
    /// Mean intervals between writes per table, and how many of them an entry lives
    /// (`strategy.cache_ttl_write_intervals`; 0: the configured TTL only).
    write_rates: write_rate::WriteRates,
    ttl_write_intervals: u32,
    /// With `invalidation = "replication"`: each database's stream (set once at start).
    pub replication: std::sync::OnceLock<Arc<replication::Streams>>,
}

struct Expiry;

impl moka::Expiry<u128, Arc<Entry>> for Expiry {
    fn expire_after_create(&self, _: &u128, e: &Arc<Entry>, _: std::time::Instant) -> Option<Duration> {
        Some(Duration::from_millis(e.expires_ms.saturating_sub(wall_ms())))
    }
}

use crate::clock::now_ms;
pub use crate::clock::wall_ms;

/// How long a lookup keeps its tables watched (`generations`): the longest a fill may take.
const FILL_WATCH_MS: u64 = 300_000;
/// A fill stored later than its lookup's marks less this is refused (they may have lapsed; the
/// time from the lookup counts, not from the send: a Bind's portal may wait for its Execute).
const FILL_MARGIN_MS: u64 = 20_000;
/// Added to an entry's life in its tables' marks (the coarse clock lags by a tick, more if its
/// thread is starved).
const CLOCK_SLACK_MS: u64 = 5_000;

impl ResultCache {
    pub fn new(cfg: &crate::config::CacheConfig, strategy: &crate::config::StrategyConfig) -> anyhow::Result<Self> {
        let stats = Arc::new(CacheStats::default());
        let evicted = stats.clone();
        let local = moka::sync::Cache::builder()
            .max_capacity(cfg.max_bytes)
            .weigher(|_: &u128, e: &Arc<Entry>| e.weight())
            .expire_after(Expiry)
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    CacheStats::bump(&evicted.evictions);
                }
            })
            .build();
        let redis = match cfg.redis() {
            Some(url) => Some(RedisTier::new(url, Duration::from_millis(cfg.redis_timeout_ms))?),
            None => None,
        };
        Ok(Self {
            local,
            gens: Arc::new(Generations::default()),
            relations: Arc::default(),
            prepared_ddl: Default::default(),
            flight: Arc::new(Flight::default()),
            redis,
            policy: Arc::new(ArcSwap::from_pointee(Policy::new(cfg))),
            stats,
            max_entry: cfg.max_entry_bytes.into(),
            max_bytes: cfg.max_bytes,
            verify_hits: cfg.redis_verify_hits,
            doorkeeper: Default::default(),
            skip_unrepeated: cfg.skip_unrepeated && strategy.enabled,
            admission: admission::Params::new(strategy),
            write_rates: Default::default(),
            ttl_write_intervals: if strategy.enabled { strategy.cache_ttl_write_intervals } else { 0 },
            replication: Default::default(),
        })
    }

    /// A reloaded configuration: the rules and the entry size limit (the size bound, Redis and
    /// admission are fixed at start).
    pub fn reconfigure(&self, cfg: &crate::config::CacheConfig) {
        self.policy.store(Arc::new(Policy::new(cfg)));
        self.max_entry.store(cfg.max_entry_bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Largest result kept (bytes): a fill stops capturing past it.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// With `invalidation = "replication"`: streams start as databases are first used.
    pub fn start_replication(&self, config: Arc<ArcSwap<crate::config::Config>>) {
        let _ = self.replication.set(Arc::new(replication::Streams::new(config)));
    }

    /// A database's first login: its replication stream starts (when configured).
    pub fn ensure_stream(self: &Arc<Self>, db: &Arc<str>) {
        if let Some(streams) = self.replication.get() {
            streams.ensure(self, db);
        }
    }

    /// A transaction that ran DDL in `db` ended: the table list is out of date here and, through
    /// Redis, on the other replicas (a trigger made through one replica runs on writes through
    /// any; their lists would otherwise wait for their next periodic load). Awaited before the
    /// client learns of the commit, as an invalidation is; the other replicas apply it as their
    /// subscription delivers it (within milliseconds: a client racing both can be faster).
    pub async fn ddl_ended(&self, db: &str) {
        self.relations.mark_stale(db);
        if let Some(r) = &self.redis {
            r.announce_ddl(db).await;
        }
    }

    /// Starts the Redis connection and invalidation subscription (needs the runtime).
    pub fn start(&self) {
        if let Some(r) = &self.redis {
            r.start(self.gens.clone(), self.relations.clone());
        }
    }

    /// The local tier only, for the hit path: a valid entry or nothing.
    fn local_hit(&self, key: &Key, gens: &[u64]) -> Option<Arc<Entry>> {
        let e = self.local.get(&key.hash)?;
        if e.key == key.bytes && e.gens == gens && e.expires_ms > wall_ms() {
            return Some(e);
        }
        if e.key == key.bytes {
            // Filled before a commit that changed its tables: never served again.
            self.local.invalidate(&key.hash);
            CacheStats::bump(&self.stats.stale_dropped);
        }
        None
    }

    /// Local tier, then (after waiting for an identical fill in progress) Redis.
    pub async fn lookup(&self, key: Key, coalesce_wait: Duration) -> Lookup {
        if self.replication.get().is_some_and(|r| !r.serves_hits(&key.db)) {
            // Its stream is behind (or down): a hit might predate a commit it has not applied.
            CacheStats::bump(&self.stats.misses);
            return Lookup::Bypass;
        }
        let mut waited = false;
        loop {
            let until = now_ms() + FILL_WATCH_MS;
            let gens = self.gens.snapshot(&key.db, &key.tables, until);
            if let Some(e) = self.local_hit(&key, &gens) {
                match self.shared_still_valid(&key, &e).await {
                    Some(true) => {
                        tracing::trace!(key = %format!("{:x}", key.hash), ?gens, "cache: local hit");
                        CacheStats::bump(&self.stats.hits_local);
                        admission::note_hit(&key.learned);
                        return Lookup::Hit(e);
                    }
                    Some(false) => {
                        self.local.invalidate(&key.hash);
                        CacheStats::bump(&self.stats.stale_dropped);
                    }
                    None => {
                        // Redis cannot vouch for it: the server answers (the entry may serve
                        // again once Redis does).
                        CacheStats::bump(&self.stats.misses);
                        return Lookup::Bypass;
                    }
                }
            }
            let guard = match self.flight.begin(key.hash) {
                Begin::Wait(rx) if !waited => {
                    waited = true;
                    CacheStats::bump(&self.stats.coalesced);
                    flight::wait(rx, coalesce_wait).await;
                    continue;
                }
                // Still running after the wait, or not sent yet: run it too, without filling.
                Begin::Wait(_) | Begin::Busy => None,
                Begin::Fill(guard) => Some(guard),
            };
            return self.remote_lookup(key, (gens, until), guard).await;
        }
    }

    /// With Redis and `verify_hits`, a local entry is served only if no replica committed a
    /// write to its tables since it was filled; None when Redis cannot tell (unreachable: the
    /// hit is not served). Without `verify_hits`: always valid here (local-only during an outage).
    async fn shared_still_valid(&self, key: &Key, e: &Entry) -> Option<bool> {
        let Some(r) = self.redis.as_ref().filter(|_| self.verify_hits) else { return Some(true) };
        Some(r.generations(&key.db, &key.tables).await? == e.remote)
    }

    async fn remote_lookup(&self, key: Key, (gens, until): (Vec<u64>, u64), guard: Option<FillGuard>) -> Lookup {
        let found = match (&self.redis, &guard) {
            (Some(r), Some(_)) => r.lookup(key.hash, &key.db, &key.tables).await,
            _ => None,
        };
        let Some(found) = found else {
            CacheStats::bump(&self.stats.misses);
            return Lookup::Miss(self.plan(key, (gens, until), None, guard));
        };
        let entry = found.entry.as_deref().and_then(Entry::decode);
        if let Some(mut e) = entry.filter(|e| e.key == key.bytes && e.remote == found.gens && e.expires_ms > wall_ms())
        {
            // A local commit during the round trip may not be reflected in what Redis answered.
            let life = e.expires_ms.saturating_sub(wall_ms());
            if self.gens.snapshot(&key.db, &key.tables, now_ms() + life + CLOCK_SLACK_MS) != gens {
                CacheStats::bump(&self.stats.misses);
                return Lookup::Bypass;
            }
            e.gens = gens;
            let e = Arc::new(e);
            self.local.insert(key.hash, e.clone());
            CacheStats::bump(&self.stats.hits_redis);
            admission::note_hit(&key.learned);
            return Lookup::Hit(e);
        }
        CacheStats::bump(&self.stats.misses);
        Lookup::Miss(self.plan(key, (gens, until), Some(found.gens), guard))
    }

    fn plan(
        &self,
        key: Key,
        (gens, until): (Vec<u64>, u64),
        remote: Option<Vec<i64>>,
        guard: Option<FillGuard>,
    ) -> Box<FillPlan> {
        let (stats, started) = (self.stats.clone(), std::time::Instant::now());
        Box::new(FillPlan { key, gens, remote, guard, stats, started, watched_until: until })
    }

    /// Whether a run of a cacheable read should be looked up at all (see `admission`); `params`
    /// hashes what distinguishes this run's result from the shape's other runs.
    /// (`params` is computed only for the runs the doorkeeper checks.)
    pub fn admit(&self, learned: &Learned, params: impl FnOnce() -> u64) -> bool {
        if !self.skip_unrepeated {
            // The adaptive layer is off; an operator's pass-through pin still holds.
            return learned.pinned() != Some(crate::sql::learned::Pinned::PassThrough);
        }
        let admitted = admission::admit(learned, &self.admission, || self.doorkeeper.seen(params()));
        if !admitted {
            CacheStats::bump(&self.stats.skipped);
        }
        admitted
    }

    /// A fill completed: stored unless too large or a commit touched its tables meanwhile.
    pub fn store(&self, plan: FillPlan, row_desc: Bytes, body: Bytes, rows: u32) {
        // The single-flight guard lives to the end: waiters wake once the entry is in.
        let FillPlan { key, gens, remote, guard: _flight, started, watched_until, .. } = plan;
        admission::note_miss_time(&key.learned, started.elapsed());
        if row_desc.len() + body.len() + key.bytes.len() > self.max_entry_bytes() {
            CacheStats::bump(&self.stats.too_large);
            return;
        }
        if now_ms() + FILL_MARGIN_MS > watched_until {
            CacheStats::bump(&self.stats.raced); // its tables' marks may have lapsed: a write may have skipped them
            return;
        }
        let now = wall_ms();
        let ttl = self.write_rates.bound(&key.db, &key.tables, key.ttl, self.ttl_write_intervals, now);
        let life = ttl.as_millis() as u64 + CLOCK_SLACK_MS;
        if self.gens.snapshot(&key.db, &key.tables, now_ms() + life) != gens {
            CacheStats::bump(&self.stats.raced);
            return;
        }
        if remote.is_none() && self.verify_hits && self.redis.is_some() {
            return; // filled while Redis was away: it could never be verified, so never served
        }
        tracing::trace!(key = %format!("{:x}", key.hash), ?gens, rows, "cache: stored");
        if key.learned.cut_short.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            key.learned.cut_short.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        let e = Entry {
            key: key.bytes,
            row_desc,
            body,
            rows,
            fingerprint: key.fingerprint,
            tables: key.tables,
            gens,
            remote: remote.clone().unwrap_or_default(),
            expires_ms: now + ttl.as_millis() as u64,
        };
        if let (Some(r), Some(_)) = (&self.redis, remote) {
            r.store(key.hash, e.encode(), ttl);
        }
        self.local.insert(key.hash, Arc::new(e));
        CacheStats::bump(&self.stats.stores);
    }

    /// Drops everything, here and (with Redis) on every replica.
    pub async fn flush(&self) -> bool {
        self.gens.bump_all();
        self.local.invalidate_all();
        CacheStats::bump(&self.stats.flushes);
        match &self.redis {
            Some(r) => r.flush().await,
            None => true,
        }
    }

    /// Counters and size; `enabled` is the configuration's switch (sessions read it at login).
    pub fn snapshot(&self, enabled: bool) -> Snapshot {
        self.local.run_pending_tasks();
        Snapshot::new(self, enabled)
    }
}
