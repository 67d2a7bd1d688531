//! A scripted fake PostgreSQL server for the session's protocol tests (tests/fake_server.rs): the
//! test plays the server message by message, and these helpers build and read what it sends and
//! receives. Everything runs in the test's process: pgpilot's shared state (`App`) is built here,
//! each client is one end of a Unix socket pair handed to pgpilot's own client entry point, and the
//! fake listens on a Unix-domain socket pgpilot connects to as its upstream. No pgpilot process,
//! no TCP, no PostgreSQL: a socket pair rather than `tokio::io::duplex` because the data path
//! relies on what only a socket has (readiness, and the peek that tells whether a returned server
//! connection holds unread bytes). Not running here: what `app::run` starts beside the sessions
//! (pool maintenance, the strategy and statistics tasks, HTTP, Redis, the metrics recorder); the
//! log goes to the test's output at `PGPILOT_LOG` (default warn).

use std::sync::Arc;
use std::time::Duration;

use super::raw::{self, msg, Raw};
use super::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

// (A configured server budget: the fake does not answer the derivation's query; nor the table
// list, which session isolation reads even with the cache off unless told not to.)
pub const CONFIG: &str =
    "[pool]\nmax_size = 1\ncheckout_timeout_ms = 5000\nmax_server_connections = 100\nisolate_attached_code = false\n\
    [cache]\nenabled = false\n\n\
    [[users]]\nname = \"trustuser\"\nauth = \"trust\"\n";

/// The same with the result cache on (its table list is read through the pool, from the fake).
pub const CACHE_CONFIG: &str =
    "[pool]\nmax_size = 1\ncheckout_timeout_ms = 5000\nmax_server_connections = 100\nisolate_attached_code = false\n\n\
    [[users]]\nname = \"trustuser\"\nauth = \"trust\"\n";

/// The upstream's side: the socket pgpilot's server connections arrive on.
pub struct Fake {
    pub listener: UnixListener,
    _dir: Arc<TempDir>,
}

/// pgpilot in the test's process: its shared state, clients connected through its entry point.
#[derive(Clone)]
pub struct InProcess {
    app: Arc<pgpilot::shared::App>,
    _dir: Arc<TempDir>,
}

impl InProcess {
    /// A new client connection (not logged in).
    pub fn connect(&self) -> Raw {
        let (client, proxy_end) = UnixStream::pair().unwrap();
        pgpilot::app::spawn_client(&self.app, pgpilot::net::stream::ClientStream::Unix(proxy_end), None);
        Raw::over(client)
    }

    /// A client logged in as the trust user.
    pub async fn login(&self) -> Raw {
        Raw::login_trust_over(self.connect(), "trustuser", "app").await
    }
}

impl Fake {
    pub async fn start() -> (Fake, InProcess) {
        Self::start_with(CONFIG).await
    }

    /// pgpilot's configuration from `config` (TOML), its upstream this fake.
    pub async fn start_with(config: &str) -> (Fake, InProcess) {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("PGPILOT_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let dir = std::env::temp_dir().join(format!("pgpilot-fake-{}-{}", std::process::id(), next_id()));
        let _ = std::fs::remove_dir_all(&dir); // left by a killed run under the same process id
        std::fs::create_dir_all(&dir).unwrap();
        let dir = Arc::new(TempDir(dir));
        let listener = UnixListener::bind(dir.0.join(".s.PGSQL.5432")).unwrap();
        let path = dir.0.join("pgpilot.toml");
        std::fs::write(&path, config).unwrap();
        let host = pgpilot::config::load::percent_encode(&dir.0.to_string_lossy());
        let upstream = format!("postgres://app:app@/?host={host}&port=5432");
        let cli = <pgpilot::config::Cli as clap::Parser>::parse_from([
            "pgpilot",
            "--config",
            path.to_str().unwrap(),
            "--upstream",
            &upstream,
        ]);
        let config = pgpilot::config::load::load(&cli).expect("a valid test configuration");
        pgpilot::clock::start();
        let app = Arc::new(pgpilot::shared::App::new(cli, config, None).unwrap());
        (Fake { listener, _dir: dir.clone() }, InProcess { app, _dir: dir })
    }

    /// Accepts pgpilot's next server connection and logs it in (trust, a few parameters).
    pub async fn accept(&self) -> Raw {
        let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), self.listener.accept())
            .await
            .expect("pgpilot connects to the server")
            .unwrap();
        let len = s.read_i32().await.unwrap();
        let mut startup = vec![0u8; len as usize - 4];
        s.read_exact(&mut startup).await.unwrap();
        // No SSLRequest: libpq's rule, which pgpilot follows, is no TLS on a Unix-domain socket.
        assert_eq!(startup[..4], 196608i32.to_be_bytes(), "a protocol 3.0 StartupMessage");
        let mut out = msg(b'R', &0i32.to_be_bytes());
        for (k, v) in [("server_version", "16.4"), ("standard_conforming_strings", "on"), ("client_encoding", "UTF8")] {
            out.extend(msg(b'S', format!("{k}\0{v}\0").as_bytes()));
        }
        out.extend(msg(b'K', &[0, 0, 0, 7, 0, 0, 0, 9]));
        out.extend(ready(b'I'));
        s.write_all(&out).await.unwrap();
        Raw::over(s)
    }

    /// A client logging in, and the server connection its login makes pgpilot open.
    pub async fn login(&self, proxy: &InProcess) -> (Raw, Raw) {
        let (client, server) = tokio::join!(proxy.login(), self.accept());
        (client, server)
    }

    /// No further server connection within `wait`.
    pub async fn no_new_connection(&self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.listener.accept()).await.is_err()
    }
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

/// CommandComplete with `tag`, then ReadyForQuery with `status`: the end of a statement's replies.
pub fn done(tag: &str, status: u8) -> Vec<u8> {
    let mut b = msg(b'C', format!("{tag}\0").as_bytes());
    b.extend(ready(status));
    b
}

pub fn data_row(v: &str) -> Vec<u8> {
    let mut b = 1i16.to_be_bytes().to_vec();
    b.extend((v.len() as i32).to_be_bytes());
    b.extend(v.as_bytes());
    msg(b'D', &b)
}

pub fn execute_rows(n: i32) -> Vec<u8> {
    let mut b = vec![0];
    b.extend(n.to_be_bytes());
    msg(b'E', &b)
}

/// The tags of the next `n` messages on `r` (the fake server's side or a client's).
pub async fn tags(server: &mut Raw, n: usize) -> String {
    let mut t = String::new();
    for _ in 0..n {
        t.push(server.next().await.expect("a message from pgpilot").0 as char);
    }
    t
}

/// Another client, logged in (a login needs no server connection once the pool knows what to
/// tell it), whose query needs the pool's one connection.
pub async fn waiting_query(proxy: &InProcess) -> Raw {
    let mut b = proxy.login().await;
    b.send(&raw::query("SELECT 2")).await;
    b
}

/// Nothing reaches the server for `wait`.
pub async fn quiet(server: &mut Raw, wait: Duration) -> bool {
    tokio::time::timeout(wait, server.next()).await.is_err()
}

pub fn row_description(columns: &[&str]) -> Vec<u8> {
    let mut b = (columns.len() as i16).to_be_bytes().to_vec();
    for c in columns {
        b.extend(c.as_bytes());
        b.push(0);
        b.extend(0i32.to_be_bytes()); // table oid
        b.extend(0i16.to_be_bytes()); // column
        b.extend(25i32.to_be_bytes()); // text
        b.extend((-1i16).to_be_bytes());
        b.extend((-1i32).to_be_bytes());
        b.extend(0i16.to_be_bytes());
    }
    msg(b'T', &b)
}

pub fn text_row(values: &[&str]) -> Vec<u8> {
    let mut b = (values.len() as i16).to_be_bytes().to_vec();
    for v in values {
        b.extend((v.len() as i32).to_be_bytes());
        b.extend(v.as_bytes());
    }
    msg(b'D', &b)
}

/// The catalog query the result cache sends to learn which names are ordinary tables: `t` is one.
pub async fn answer_table_list(server: &mut Raw) {
    let (tag, body) = server.next().await.expect("the cache's table list query");
    assert_eq!(tag, b'Q', "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("pg_class"), "the table list query");
    let mut reply = row_description(&["relname", "relkind", "other"]);
    reply.extend(text_row(&["t", "r", ""]));
    reply.extend(text_row(&["read committed", "isolation", ""]));
    reply.extend(done("SELECT 2", b'I'));
    server.send(&reply).await;
}

pub fn extended(sql: &str, sync: bool) -> Vec<u8> {
    let mut b = raw::parse("", sql);
    b.extend(raw::bind("", ""));
    b.extend(raw::execute(""));
    if sync {
        b.extend(raw::sync());
    }
    b
}

pub fn param_description() -> Vec<u8> {
    msg(b't', &0i16.to_be_bytes())
}

/// (tag, statement name) of the next `n` messages pgpilot sends the server (Parse, Bind, Close and
/// Describe name a statement; the rest an empty string).
pub async fn named(server: &mut Raw, n: usize) -> Vec<(char, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (tag, body) = server.next().await.expect("a message from pgpilot");
        let name = match tag {
            b'P' => body.split(|&b| b == 0).next().unwrap_or_default().to_vec(),
            b'B' => body.split(|&b| b == 0).nth(1).unwrap_or_default().to_vec(),
            b'C' | b'D' => body[1..].split(|&b| b == 0).next().unwrap_or_default().to_vec(),
            _ => Vec::new(),
        };
        out.push((tag as char, String::from_utf8(name).unwrap()));
    }
    out
}
