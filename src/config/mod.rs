//! Configuration: the types every other module reads, with their defaults.
//!
//! Loaded once at start and again on SIGHUP (`load`); readers take a snapshot from an `ArcSwap`
//! so a reload never blocks or tears a session.

pub mod env;
pub mod load;
pub mod pgbouncer;
pub mod secrets;
pub mod strategy;
pub mod users;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

pub use strategy::{PinnedStrategy, StrategyConfig};
pub use users::{AuthMethod, UserConfig};

/// Command line: the interface contract in DESIGN.md section 3.
#[derive(Parser, Debug, Clone, Default)]
// A flag given twice takes its last value (as a wrapper script's defaults followed by the user's).
#[command(name = "pgpilot", version, about = "SQL-aware PostgreSQL pooling proxy", args_override_self = true)]
pub struct Cli {
    /// TOML configuration file (see config/pgpilot.toml).
    #[arg(long, env = "PGPILOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address clients connect to.
    #[arg(long, env = "PGPILOT_LISTEN")]
    pub listen: Option<String>,
    /// The real server: postgres://USER:PASSWORD@HOST:PORT (env PGPILOT_UPSTREAM, then DATABASE_URL).
    #[arg(long)]
    pub upstream: Option<String>,
    /// Address of /health, /health/status and /metrics.
    #[arg(long, env = "PGPILOT_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Pooling mode: session or transaction.
    #[arg(long, env = "PGPILOT_POOL_MODE")]
    pub pool_mode: Option<PoolMode>,
    /// Redis for the shared result cache tier.
    #[arg(long, env = "PGPILOT_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Validate the configuration, print it (secrets masked) and exit (0 valid, 2 invalid).
    #[arg(long)]
    pub check: bool,
    /// Print the pgpilot configuration equivalent to this PgBouncer configuration (and its
    /// auth_file), naming every setting that does not carry over, and exit.
    #[arg(long, value_name = "PGBOUNCER_INI")]
    pub from_pgbouncer: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    Session,
    #[default]
    Transaction,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub upstream: UpstreamConfig,
    pub pool: PoolConfig,
    pub cache: CacheConfig,
    pub prepared: PreparedConfig,
    pub insights: InsightsConfig,
    pub http: HttpConfig,
    pub strategy: StrategyConfig,
    pub users: Vec<UserConfig>,
    /// `upstream.url` parsed once (it is read at every login): the URL it was parsed from, so a
    /// changed URL is parsed anew, and the user entry it gives when no users are configured.
    #[serde(skip)]
    parsed_upstream: std::sync::OnceLock<(String, Upstream, UserConfig)>,
}

/// The HTTP listener's access (see src/http).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// When set, /queries, /insights/* and every POST need `Authorization: Bearer TOKEN` (or the
    /// cookie `pgpilot_token`); /metrics and /health stay open for Prometheus and probes.
    pub token: Option<String>,
}

/// Query insights (see src/insights).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InsightsConfig {
    pub enabled: bool,
    /// Statements slower than this (server time) are logged and counted as slow.
    pub slow_query_ms: u64,
    /// Fingerprints kept per (database, user) statistics, least recently used dropped first.
    pub max_fingerprints: usize,
    /// Distinct statement shapes whose analysis is cached.
    pub analysis_cache_entries: u64,
    /// Statements longer than this are not parsed (the parser's time grows faster than the text
    /// in some shapes and cannot be interrupted): they count as unknown, never cached.
    pub max_analyzed_bytes: usize,
    /// Fingerprints with their own pgpilot_query_duration_seconds series (by total time).
    pub metrics_top_k: usize,
    pub n_plus_one_threshold: usize,
    pub n_plus_one_window_ms: u64,
    pub n_plus_one_min_total_ms: u64,
    /// How often table and index usage is read from each database (`index_usage`; 0: never).
    pub index_usage_interval_s: u64,
}

impl Default for InsightsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            slow_query_ms: 100,
            max_fingerprints: 5000,
            analysis_cache_entries: 20_000,
            max_analyzed_bytes: 64 * 1024,
            metrics_top_k: 20,
            n_plus_one_threshold: 5,
            n_plus_one_window_ms: 500,
            n_plus_one_min_total_ms: 50,
            index_usage_interval_s: 60,
        }
    }
}

/// Prepared statements in transaction mode (see src/prepared).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreparedConfig {
    /// Statements kept prepared per server connection (LRU), like PgBouncer's max_prepared_statements.
    pub server_cache_size: usize,
    /// Distinct statements (text + parameter types) known across all clients.
    pub registry_max: usize,
    /// Named statements one client may hold open.
    pub client_max: usize,
    /// Serve repeated unnamed Parse of the same text from a statement already prepared on the
    /// server (skips parse/plan upstream; plans then follow named-statement caching rules).
    pub reuse_unnamed: bool,
}

impl Default for PreparedConfig {
    fn default() -> Self {
        Self { server_cache_size: 200, registry_max: 10_000, client_max: 2_000, reuse_unnamed: false }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub http_listen: String,
    pub max_client_conn: usize,
    pub startup_timeout_ms: u64,
    pub shutdown_timeout_ms: u64,
    pub max_message_bytes: usize,
    /// Bytes all clients' large messages (over 64 KiB, buffered whole) may hold at once.
    pub max_buffered_bytes: usize,
    /// Users allowed into the admin console (database "pgpilot" or "pgbouncer"). Empty: the
    /// upstream URL's user.
    pub admin_users: Vec<String>,
    /// Runtime worker threads; 0 = half the cores (at least one). See docs/BENCHMARKS.md.
    pub worker_threads: usize,
    /// Key of the SCRAM exchange unknown users get (`secrets::fake_verifier`); unset: random at
    /// start (an unknown user's salt then changes across restarts while a real one's does not).
    pub auth_secret: Option<String>,
    /// Every failed login waits this long before its error (not per peer: in a sidecar every
    /// client is the same peer), which slows password guessing without costing CPU.
    pub auth_failure_delay_ms: u64,
    /// TCP_USER_TIMEOUT on server sockets: a server that leaves sent data unacknowledged this long
    /// (a dead host, a blackholed network) fails the connection; 0 = the kernel's default.
    pub tcp_user_timeout_ms: u64,
    /// TCP keepalive on server sockets: first probe after this many idle seconds (then every 10 s,
    /// 3 probes), so a silent dead server is noticed; 0 = off.
    pub tcp_keepalive_s: u64,
    /// TCP_DEFER_ACCEPT on the client listener: a connection is accepted once its first bytes
    /// arrive (one wake-up fewer per connection), waiting at most this long; 0 = off.
    pub tcp_defer_accept_s: u64,
    /// Directory of a Unix-domain socket clients on this machine may use besides `listen`
    /// (`.s.PGSQL.<listen port>`, as libpq names it; PgBouncer's unix_socket_dir); empty: none.
    pub unix_socket_dir: String,
    /// SHOW STATS' avg_* columns average over periods of this many seconds (PgBouncer's
    /// stats_period).
    pub stats_period_s: u64,
}

impl ServerConfig {
    pub fn worker_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.div_ceil(2)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            http_listen: "127.0.0.1:9930".into(),
            max_client_conn: 1000,
            startup_timeout_ms: 10_000,
            shutdown_timeout_ms: 30_000,
            max_message_bytes: 64 << 20,
            max_buffered_bytes: 256 << 20,
            admin_users: Vec::new(),
            worker_threads: 0,
            auth_secret: None,
            auth_failure_delay_ms: 100,
            tcp_user_timeout_ms: 0,
            tcp_keepalive_s: 60,
            tcp_defer_accept_s: 45,
            unix_socket_dir: String::new(),
            stats_period_s: 60,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: String,
    pub connect_timeout_ms: u64,
    /// TLS toward the server, as libpq's sslmode (net/upstream_tls.rs).
    pub sslmode: SslMode,
    /// The CA certificates (PEM) verify-ca and verify-full check the server's certificate against.
    pub sslrootcert: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that ask for one.
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432".into(),
            connect_timeout_ms: 5_000,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
        }
    }
}

/// libpq's sslmode values for the upstream connection, weakest first (`Ord`: the stricter of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without checking its certificate; plain otherwise.
    Prefer,
    /// TLS or no connection; the certificate is not checked (as libpq without a root certificate).
    Require,
    /// TLS with a certificate signed by `sslrootcert`, whatever host name it names.
    VerifyCa,
    /// As verify-ca, and the certificate names the host of the upstream URL.
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    pub mode: PoolMode,
    pub min_size: usize,
    pub max_size: usize,
    pub checkout_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub lifetime_ms: u64,
    pub health_check_after_ms: u64,
    pub reset_query: String,
    /// Databases whose pools are opened at start (min_size connections each, for every user).
    pub warm_databases: Vec<String>,
    /// A client idle inside a transaction for this long is disconnected with 25P03 and its
    /// server connection closed (the server rolls back); 0 = off, as in PgBouncer.
    pub idle_transaction_timeout_ms: u64,
    /// A statement (a round trip to the server) still unanswered after this long is canceled on
    /// the server, its connection closed and the client disconnected with 57014, as PgBouncer's
    /// query_timeout; 0 = off. Prefer statement_timeout where the server can be told.
    pub query_timeout_ms: u64,
    /// A pool with no client, connection or waiter for this long is dropped (logins to a
    /// database that does not exist leave no entry behind).
    pub drop_idle_pool_after_ms: u64,
    /// Each pool sizes itself between min_size and max_size from its measured load
    /// (src/pool/sizing.rs); false: every pool may always grow to max_size.
    pub adaptive: bool,
    /// Server connections all pools together may hold (per pgpilot replica); 0: derived from the
    /// server at the first connection (src/pool/budget.rs).
    pub max_server_connections: usize,
    /// pgpilot replicas sharing the server: the derived budget is divided among them.
    pub replicas: usize,
    /// Server connections a pool opens at once (fixed when the pool is created).
    pub max_parallel_connects: usize,
    /// Transaction mode: a transaction that ran code attached to a relation (config/pgpilot.toml
    /// says which), a FunctionCall or DDL resets its server connection before another client
    /// gets it; that code may change the session unseen.
    pub isolate_attached_code: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            mode: PoolMode::Transaction,
            min_size: 0,
            max_size: 20,
            checkout_timeout_ms: 5_000,
            idle_timeout_ms: 600_000,
            lifetime_ms: 3_600_000,
            health_check_after_ms: 30_000,
            reset_query: "DISCARD ALL".into(),
            warm_databases: Vec::new(),
            idle_transaction_timeout_ms: 0,
            query_timeout_ms: 0,
            drop_idle_pool_after_ms: 60_000,
            adaptive: true,
            max_server_connections: 0,
            replicas: 1,
            max_parallel_connects: 2,
            isolate_attached_code: true,
        }
    }
}

/// The result cache (see src/cache): which reads are cached, for how long, and where.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// TTL of a cacheable read that no rule or hint names; 0 caches only what a rule or a
    /// `/* pgpilot:cache ttl=N */` hint asks for.
    pub default_ttl_s: u64,
    /// Bound of the in-process tier (entry bytes, as weighed).
    pub max_bytes: u64,
    /// Results larger than this are never cached.
    pub max_entry_bytes: usize,
    /// Redis for the tier shared between replicas (empty: local only).
    pub redis_url: Option<String>,
    /// A Redis call slower than this counts as an outage for that call (the client is not kept waiting).
    pub redis_timeout_ms: u64,
    /// With Redis, every local hit first checks the shared generations (one round trip), so a
    /// commit through another replica is never followed by an older result there. Off: other
    /// replicas' commits arrive by pub/sub (sub-millisecond, but not ordered with the client).
    pub redis_verify_hits: bool,
    /// How long a miss waits for another client's identical query already running (single flight).
    pub coalesce_wait_ms: u64,
    /// How often the list of ordinary tables (only their reads are cached) is re-read.
    pub relations_refresh_s: u64,
    /// How long a read waits for its database's first table list (loaded at the first login)
    /// before it goes on uncached: a cold start is not minutes of misses, nor a stall.
    pub relations_wait_ms: u64,
    /// Look past a statement shape whose results do not repeat often enough to pay for the
    /// lookup (decided per shape every 256 runs from the repeat ratio and the time a miss takes).
    pub skip_unrepeated: bool,
    /// What invalidates: the writes pgpilot sees ("proxy"), or also every committed write on the
    /// server, read from a logical replication stream ("replication").
    pub invalidation: Invalidation,
    /// The role the replication stream logs in as (needs REPLICATION; default: the upstream's).
    pub replication_user: Option<String>,
    pub replication_password: Option<String>,
    /// With "replication": a database whose stream is further behind the server than this (or
    /// down) serves no hits until it has caught up.
    pub max_staleness_ms: u64,
    /// Rules by table or fingerprint; the first that matches decides (ttl_s = 0: never cache).
    pub rules: Vec<CacheRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Invalidation {
    Proxy,
    Replication,
}

impl CacheConfig {
    /// The Redis URL when a shared tier is configured (an empty one means local only).
    pub fn redis(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.is_empty())
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default_ttl_s: 300,
            max_bytes: 128 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            redis_url: None,
            redis_timeout_ms: 50,
            redis_verify_hits: true,
            coalesce_wait_ms: 10_000,
            relations_refresh_s: 60,
            relations_wait_ms: 50,
            skip_unrepeated: true,
            invalidation: Invalidation::Proxy,
            replication_user: None,
            replication_password: None,
            max_staleness_ms: 500,
            rules: Vec::new(),
        }
    }
}

/// One cache rule: `table` matches a read that touches that table (unqualified name),
/// `fingerprint` one statement shape (hex id as in /queries).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheRule {
    pub table: Option<String>,
    pub fingerprint: Option<String>,
    pub ttl_s: u64,
}

/// Parsed `postgres://` URL of the upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
}

impl Config {
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.server.startup_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream.connect_timeout_ms)
    }
    pub fn checkout_timeout(&self) -> Duration {
        Duration::from_millis(self.pool.checkout_timeout_ms)
    }
    pub fn upstream(&self) -> Upstream {
        self.parsed().map_or_else(|| self.parse_upstream(), |(up, _)| up.clone())
    }

    /// The parsed URL and its user entry, unless the URL changed since they were parsed.
    fn parsed(&self) -> Option<(&Upstream, &UserConfig)> {
        let url = &self.upstream.url;
        let (from, up, user) = self.parsed_upstream.get_or_init(|| {
            let up = self.parse_upstream();
            let user = UserConfig::from_upstream(&up);
            (url.clone(), up, user)
        });
        (from == url).then_some((up, user))
    }

    fn parse_upstream(&self) -> Upstream {
        load::parse_upstream(&self.upstream.url).expect("validated at load")
    }

    /// The user entry for a login name; `None` means the login is refused. (Borrowed: it is
    /// read at every login.)
    pub fn find_user(&self, name: &str) -> Option<std::borrow::Cow<'_, UserConfig>> {
        use std::borrow::Cow;
        if self.users.is_empty() {
            return match self.parsed() {
                Some((up, user)) => (up.user == name).then_some(Cow::Borrowed(user)),
                None => {
                    let up = self.parse_upstream();
                    (up.user == name).then(|| Cow::Owned(UserConfig::from_upstream(&up)))
                }
            };
        }
        self.users.iter().find(|u| u.name == name).map(Cow::Borrowed)
    }
    /// Only users named in `server.admin_users` may change anything through the admin console
    /// (other users who can log in may run its SHOW commands, like PgBouncer's stats_users).
    pub fn is_admin(&self, user: &str) -> bool {
        self.server.admin_users.iter().any(|u| u == user)
    }

    /// Login names that get pools: the configured users, or the upstream user.
    pub fn user_names(&self) -> Vec<String> {
        if self.users.is_empty() {
            vec![self.upstream().user]
        } else {
            self.users.iter().map(|u| u.name.clone()).collect()
        }
    }

    pub fn pool_max_for(&self, user: &str) -> usize {
        self.users.iter().find(|u| u.name == user).and_then(|u| u.pool_size).unwrap_or(self.pool.max_size)
    }
}
