//! Shared by the integration tests: the throwaway PostgreSQL from tests/harness.sh and a pgpilot
//! process per test on free ports (tests/fake_server.rs: pgpilot in the test's process, `fake`).
#![allow(dead_code)]

pub mod cache;
pub mod fake;
pub mod raw;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn pg_port() -> u16 {
    std::env::var("TEST_PG_PORT")
        .expect("TEST_PG_PORT is not set: run the suite through tests/run.sh (it starts PostgreSQL)")
        .parse()
        .expect("TEST_PG_PORT must be a port number")
}

pub fn pg_bin(tool: &str) -> String {
    match std::env::var("PG_BIN") {
        Ok(dir) => format!("{dir}/{tool}"),
        Err(_) => tool.to_string(),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Proxy {
    pub child: Child,
    pub port: u16,
    pub http_port: u16,
    pub config_path: std::path::PathBuf,
    _dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Proxy {
    /// Starts pgpilot against the test cluster with `toml` appended to a minimal config.
    pub fn start(toml: &str) -> Proxy {
        Self::start_with(toml, &[])
    }

    /// A free port can be taken by another process between probing and binding: a start that
    /// exits at once is tried again on new ports (twice at most).
    pub fn start_with(toml: &str, extra_args: &[&str]) -> Proxy {
        Self::start_logging(toml, extra_args, None)
    }

    /// As `start_with`, with the log at `level` written to `log` instead of the test's stderr.
    pub fn start_logging(toml: &str, extra_args: &[&str], log: Option<(&std::path::Path, &str)>) -> Proxy {
        for _ in 0..2 {
            if let Some(proxy) = Self::try_start(toml, extra_args, log) {
                return proxy;
            }
        }
        Self::try_start(toml, extra_args, log).expect("pgpilot exited during start")
    }

    fn try_start(toml: &str, extra_args: &[&str], log: Option<(&std::path::Path, &str)>) -> Option<Proxy> {
        let dir = std::env::temp_dir().join(format!("pgpilot-it-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("pgpilot.toml");
        std::fs::write(&config_path, toml).unwrap();
        let (port, http_port) = (free_port(), free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgpilot"));
        cmd.args(["--config", config_path.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")]);
        if !extra_args.contains(&"--upstream") {
            cmd.args(["--upstream", &format!("postgres://app:app@127.0.0.1:{}", pg_port())]);
        }
        let (level, stderr) = match log {
            Some((path, level)) => (level.to_string(), Stdio::from(std::fs::File::create(path).unwrap())),
            None => (std::env::var("PGPILOT_LOG").unwrap_or_else(|_| "warn".into()), Stdio::inherit()),
        };
        let child = cmd
            .args(extra_args)
            .env("PGPILOT_LOG", level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting pgpilot");
        let mut proxy = Proxy { child, port, http_port, config_path, _dir: TempDir(dir) };
        proxy.wait_listening().then_some(proxy)
    }

    /// True once listening; false when it exited during start.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                eprintln!("pgpilot exited during start: {status}");
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Another test's process may hold the port (free_port probes, then releases it):
                // this pgpilot then fails to bind and exits at once. Seen once as a login that got
                // no PostgreSQL error at all.
                std::thread::sleep(Duration::from_millis(100));
                if let Some(status) = self.child.try_wait().unwrap() {
                    eprintln!("pgpilot exited during start (port taken?): {status}");
                    return false;
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pgpilot did not start listening within 20 s");
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        let password = if password.is_empty() { String::new() } else { format!(" password={password}") };
        format!("host=127.0.0.1 port={} user={user}{password} dbname={db} connect_timeout=10", self.port)
    }

    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        self.connect_as("app", "app", db).await.expect("connecting through pgpilot")
    }

    pub async fn connect_as(
        &self,
        user: &str,
        pw: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.url(user, pw, db), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn rewrite_config(&self, toml: &str) {
        let mut f = std::fs::File::create(&self.config_path).unwrap();
        f.write_all(toml.as_bytes()).unwrap();
    }

    /// GET on the HTTP listener: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (code, body)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A direct connection to the test cluster as superuser (for checks behind the proxy's back).
pub async fn direct(db: &str) -> tokio_postgres::Client {
    let url = format!("host=127.0.0.1 port={} user=postgres dbname={db}", pg_port());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("direct connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

pub fn pool_toml(max_size: usize, extra: &str) -> String {
    format!("[pool]\nmax_size = {max_size}\ncheckout_timeout_ms = 5000\n{extra}\n")
}

/// The value of the series `name` (with its labels, if any) in a /metrics text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// The rows of a simple query's reply, every value as text (NULL as "NULL").
pub fn rows(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<String>> {
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect())
            }
            _ => None,
        })
        .collect()
}

/// The first value of every row of a simple query's reply.
pub fn first_column(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Vec<String> {
    rows(msgs).into_iter().map(|mut r| r.swap_remove(0)).collect()
}
