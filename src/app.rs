//! The running proxy: building the shared state, the accept loop, signals (SIGHUP reload,
//! SIGTERM/SIGINT graceful shutdown) and the path of a new client from accept to its session loop.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use tokio::net::TcpListener;

use crate::auth::client::{authenticate, Check};
use crate::config::{Cli, Config};
use crate::frontend::session::{ClientInfo, Flow, Session};
use crate::frontend::session_state::SessionState;
use crate::frontend::startup::{negotiate, Opening};
use crate::net::client_io::fail;
use crate::net::endpoint::PeerName;
use crate::net::listen::UnixSocket;
use crate::net::messages::sqlstate;
use crate::net::stream::ClientStream;
use crate::shared::console::Console;
use crate::shared::App;
use tokio::io::AsyncWriteExt;

/// Decrements the client count however a client task ends.
struct ClientSlot(Arc<App>);
impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.left();
    }
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGPILOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journal gets plain text (greppable as written).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

pub async fn run(cli: Cli, config: Config) -> Result<()> {
    crate::clock::start();
    let prometheus = crate::metrics::install()?;
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    if let Err(e) = crate::net::listen::defer_accept(&listener, config.server.tcp_defer_accept_s) {
        tracing::warn!("server.tcp_defer_accept_s not applied: {e}");
    }
    // After the TCP port: a second pgpilot on the same address stops there, before the socket.
    let unix = match config.server.unix_socket_dir.as_str() {
        "" => None,
        dir => Some(
            UnixSocket::bind(dir, listener.local_addr()?.port())
                .with_context(|| format!("server.unix_socket_dir {dir:?}"))?,
        ),
    };
    let http = std::net::TcpListener::bind(&config.server.http_listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| format!("listening on {}", config.server.http_listen))?;
    let tls = crate::net::tls::acceptor(&config.tls)?;
    crate::net::upstream_tls::for_config(&config.upstream)?;
    let app = Arc::new(App::new(cli, config, tls)?);
    tracing::info!(listen = %app.config.load().server.listen, http = %app.config.load().server.http_listen, "pgpilot started");
    tracing::info!("{}", where_clients_connect(&app.config.load()));
    app.cache.start();
    if app.config.load().cache.invalidation == crate::config::Invalidation::Replication {
        app.cache.start_replication(app.config.clone());
    }
    // On the timer runtime, whose reactor the listener joins there: hyper and axum make timers.
    crate::timers::spawn(crate::http::serve(http, Console::new(app.clone()), prometheus));
    tokio::spawn(crate::pool::maintenance::run(app.pools.clone()));
    tokio::spawn(crate::pool_stats::run(
        app.stats_periods.clone(),
        app.pools.clone(),
        app.query_stats.clone(),
        app.config.clone(),
    ));
    tokio::spawn(crate::strategy::run(app.query_stats.clone(), app.config.clone()));
    tokio::spawn(crate::index_usage::run(app.index_usage.clone(), app.pools.clone(), app.config.clone()));
    warm_up(&app);
    tokio::spawn(reload_on_sighup(app.clone()));
    tokio::spawn(give_memory_back(app.clone()));
    accept_until_signal(&app, listener, unix).await?;
    drain(&app).await;
    Ok(())
}

/// Opens the configured databases' pools at start, so the first clients find min_size ready.
fn warm_up(app: &Arc<App>) {
    let cfg = app.config.load();
    for database in &cfg.pool.warm_databases {
        for user in cfg.user_names() {
            let pool = app.pools.get(database, &user);
            if cfg.cache.enabled && app.cache.relations.begin_load(database) {
                crate::cache::relations::spawn_load(app.cache.clone(), pool.clone(), Arc::from(database.as_str()));
            }
            let min = cfg.pool.min_size;
            tokio::spawn(async move { pool.warm_up(min).await });
        }
    }
}

async fn accept_until_signal(app: &Arc<App>, listener: TcpListener, unix: Option<UnixSocket>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut admin_shutdown = app.shutdown_signal();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    spawn_client(app, ClientStream::Plain(tcp), Some(peer));
                }
                Err(e) => accept_failed(e).await,
            },
            accepted = accept_unix(unix.as_ref()) => match accepted {
                Ok(socket) => spawn_client(app, ClientStream::Unix(socket), None),
                Err(e) => accept_failed(e).await,
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = admin_shutdown.changed() => break, // SHUTDOWN in the admin console
        }
    }
    Ok(())
}

/// Serves one accepted client on its own task (also how tests/fake_server.rs connects its clients,
/// in process, over a socket pair).
pub fn spawn_client(app: &Arc<App>, stream: ClientStream, peer: Option<std::net::SocketAddr>) {
    app.clients.joined();
    let slot = ClientSlot(app.clone());
    // Boxed: the task cell then holds a pointer, not the ~5 KB session future that tokio's spawn
    // and each state change would copy (a new connection per transaction is a common pattern:
    // SQLAlchemy's NullPool, serverless functions).
    tokio::spawn(Box::pin(serve_client(slot, stream, peer)));
}

async fn accept_unix(unix: Option<&UnixSocket>) -> std::io::Result<tokio::net::UnixStream> {
    match unix {
        Some(u) => u.listener.accept().await.map(|(socket, _)| socket),
        None => std::future::pending().await,
    }
}

/// Out of descriptors, most often: a pause instead of a busy loop.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!("accept failed: {e}");
    crate::timers::sleep(Duration::from_millis(50)).await;
}

/// Stops accepting (the listener is already dropped), lets sessions finish their transactions,
/// and gives up after the shutdown timeout.
async fn drain(app: &Arc<App>) {
    let timeout = Duration::from_millis(app.config.load().server.shutdown_timeout_ms);
    tracing::info!(clients = app.clients.total(), "shutting down: waiting for transactions to finish");
    app.begin_shutdown();
    let deadline = tokio::time::Instant::now() + timeout;
    while app.clients.total() > 0 && tokio::time::Instant::now() < deadline {
        crate::timers::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(remaining = app.clients.total(), "shutdown complete");
}

/// Every 10 s: idle sessions drop their buffers (`nudge_idle`), and when many clients left since
/// the last time, glibc is asked to return its free pages: Rust's allocations go to mimalloc,
/// which returns its own, but libpg_query's parse trees are glibc's, kept in its arenas otherwise.
async fn give_memory_back(app: Arc<App>) {
    const EVERY: Duration = Duration::from_secs(10);
    let (mut peak, mut idle_at_trim) = (0usize, 0usize);
    loop {
        crate::timers::sleep(EVERY).await;
        let clients = app.clients.total().max(0) as usize;
        let idle = app.cancels.nudge_idle();
        peak = peak.max(clients);
        // Many clients gone, or many more gone idle (their buffers released), since the last trim.
        if peak >= clients + 500 || idle >= idle_at_trim + 1000 {
            crate::timers::sleep(Duration::from_millis(200)).await; // the nudged sessions run first
            trim_heap();
            (peak, idle_at_trim) = (clients, idle);
        }
    }
}

fn trim_heap() {
    // SAFETY: mi_collect only frees and returns pages of mimalloc's own heap (this thread's: the
    // data runtime's, where sessions allocate) and its abandoned segments.
    unsafe { libmimalloc_sys::mi_collect(true) };
    glibc_trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_trim() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_trim() {}

async fn reload_on_sighup(app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        if let Err(e) = app.reload() {
            tracing::error!("configuration reload failed, keeping the old one: {e:#}");
        }
    }
}

/// `peer`: None for a client on the Unix-domain socket.
async fn serve_client(slot: ClientSlot, stream: ClientStream, peer: Option<std::net::SocketAddr>) {
    let app = slot.0.clone();
    let cfg = app.config.load_full();
    tracing::debug!(peer = %PeerName(peer), "client connected");
    // One deadline for startup and authentication together (`startup_timeout_ms`, as PgBouncer's
    // client_login_timeout). The start-up's futures boxed: moved whole into each timeout wrapper
    // and into this future, their kilobytes were copied several times per connection.
    let deadline = tokio::time::Instant::now() + cfg.startup_timeout();
    let opened = crate::timers::timeout_at(deadline, Box::pin(negotiate(stream, app.tls()))).await;
    let (mut stream, params) = match opened {
        Ok(Opening::Startup { stream, params }) => (stream, params),
        Ok(Opening::Cancel { pid, secret, stream }) => {
            app.cancels.cancel((pid, secret)).await;
            drop(stream); // closed only now: the client knows its cancel has been processed
            return;
        }
        Ok(Opening::Closed) | Err(_) => return,
    };
    if app.clients.total() as usize > cfg.server.max_client_conn {
        let msg = format!("too many client connections (max_client_conn {})", cfg.server.max_client_conn);
        return fail(&mut stream, sqlstate::TOO_MANY_CONNECTIONS, &msg).await;
    }
    let user = params.get("user").cloned().unwrap_or_default();
    let database = params.get("database").filter(|d| !d.is_empty()).cloned().unwrap_or_else(|| user.clone());
    let mut rbuf = BytesMut::with_capacity(8 * 1024);
    let check =
        Check::for_user(cfg.find_user(&user).as_deref(), |u| app.scram_verifier(u), || app.fake_verifier(&user));
    let authed = crate::timers::timeout_at(deadline, Box::pin(authenticate(&mut stream, &mut rbuf, check))).await;
    let Ok(Ok(greeting)) = authed else {
        tracing::info!(peer = %PeerName(peer), %user, "authentication failed");
        crate::timers::sleep(std::time::Duration::from_millis(cfg.server.auth_failure_delay_ms)).await;
        return fail(
            &mut stream,
            sqlstate::INVALID_PASSWORD,
            &format!("password authentication failed for user \"{user}\""),
        )
        .await;
    };
    if crate::admin::is_admin_database(&database) {
        if stream.write_all(&greeting).await.is_err() {
            return;
        }
        let admin = cfg.is_admin(&user);
        return crate::admin::serve(Console::new(app), stream, rbuf, admin).await;
    }
    let info = ClientInfo {
        application_name: params.get("application_name").map_or("", String::as_str).into(),
        user: user.into(),
        database: database.into(),
        peer,
    };
    let state = SessionState::from_startup(&params);
    let mut session = Session::new(&app, stream, rbuf, info, state);
    if session.start(greeting).await == Flow::Continue {
        session.run().await;
    }
    session.finish().await;
    tracing::debug!(peer = %PeerName(session.info.peer), "client disconnected");
}

/// The start-up line a new user reads: where clients connect, and as whom.
fn where_clients_connect(cfg: &crate::config::Config) -> String {
    let up = cfg.upstream();
    let who = match (cfg.users.is_empty(), up.password.is_some()) {
        (true, true) => format!("as {} with the upstream URL's password", up.user),
        (true, false) => format!("as {}: no password in the upstream URL, so no client can log in", up.user),
        (false, _) => format!("as one of the {} configured [[users]]", cfg.users.len()),
    };
    let user = if cfg.users.is_empty() { up.user.as_str() } else { "USER" };
    format!(
        "clients connect to postgres://{user}:PASSWORD@{}/DATABASE {who} (upstream {}:{})",
        cfg.server.listen, up.host, up.port
    )
}
