//! Hostile and broken input: each case gets an ErrorResponse or a clean close, and the proxy
//! keeps serving everyone else.

mod common;

use std::time::Duration;

use common::raw::{self, startup_packet, Raw};
use common::Proxy;
use tokio::io::AsyncWriteExt;

const TRUST: &str = "[pool]\nmax_size = 2\n\n[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n";

async fn still_serves(proxy: &Proxy) {
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    r.send(&raw::query("SELECT 1")).await;
    assert_eq!(String::from_utf8_lossy(&r.until_ready().await.unwrap()), "TDCZ");
}

#[tokio::test]
async fn garbage_and_bad_lengths_before_startup() {
    let proxy = Proxy::start(TRUST);
    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0x80, 0, 0, 0, 0, 0, 0, 0],          // length 2^31 (negative)
        vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0], // length 2^31 - 1
        vec![0, 0, 0, 4],                         // shorter than a header
        vec![0, 0, 0, 8, 0, 9, 0, 0],             // unknown protocol version
    ];
    for case in cases {
        let mut r = Raw::connect(proxy.port).await;
        r.send(&case).await;
        let codes = r.error_codes_until_close().await;
        assert!(codes.iter().all(|c| c == "08P01"), "{codes:?}");
    }
    still_serves(&proxy).await;
}

#[tokio::test]
async fn truncated_startup_then_close_and_startup_without_user() {
    let proxy = Proxy::start(TRUST);
    let mut r = Raw::connect(proxy.port).await;
    let packet = startup_packet(&[("user", "trustuser")]);
    r.send(&packet[..packet.len() - 3]).await;
    r.s.shutdown().await.unwrap();
    assert!(r.error_codes_until_close().await.is_empty());

    let mut r = Raw::connect(proxy.port).await;
    r.send(&startup_packet(&[("database", "app")])).await;
    assert_eq!(r.error_codes_until_close().await, ["28000"]);
    still_serves(&proxy).await;
}

#[tokio::test]
async fn bad_messages_mid_session() {
    let proxy = Proxy::start(TRUST);
    let bystander = tokio::spawn({
        let port = proxy.port;
        async move {
            let mut r = Raw::login_trust(port, "trustuser", "app").await;
            for _ in 0..50 {
                r.send(&raw::query("SELECT 1")).await;
                assert_eq!(String::from_utf8_lossy(&r.until_ready().await.unwrap()), "TDCZ");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    // An unknown message type.
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    r.send(&raw::msg(b'!', b"boom")).await;
    assert_eq!(r.error_codes_until_close().await, ["08P01"]);
    // A negative length.
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    r.send(&[b'Q', 0x80, 0, 0, 1]).await;
    assert_eq!(r.error_codes_until_close().await, ["08P01"]);
    // A query larger than max_message_bytes (it must not be buffered).
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    r.send(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b'S']).await;
    assert_eq!(r.error_codes_until_close().await, ["54000"]);
    // A message cut off mid-transaction: the server connection must not come back dirty.
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    r.send(&raw::query("BEGIN; SELECT 1")).await;
    r.until_ready().await.unwrap();
    let q = raw::query("SELECT 42");
    r.send(&q[..q.len() - 4]).await;
    drop(r);
    bystander.await.unwrap();
    still_serves(&proxy).await;
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    r.send(&raw::query("SELECT now() = statement_timestamp()")).await;
    let mut saw_true = false;
    while let Some((t, body)) = r.next().await {
        if t == b'D' {
            saw_true = body.ends_with(b"t");
        }
        if t == b'Z' {
            assert_eq!(body, b"I");
            break;
        }
    }
    assert!(saw_true, "a fresh transaction, not a leftover one");
    // A Describe too large to be read whole (streamed on in parts) with no server held: the
    // session takes one and forwards it (its reply kind was once read from the part's body,
    // which a streamed part does not have: the session panicked). PostgreSQL drops a connection
    // that sends a Describe over 10,000 bytes without a word; the client is told it was lost.
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut describe = vec![b'S'];
    describe.extend(std::iter::repeat_n(b'x', 100 * 1024));
    describe.push(0);
    r.send(&[raw::msg(b'D', &describe), raw::sync()].concat()).await;
    assert_eq!(r.error_codes_until_close().await, ["08006"]);
    still_serves(&proxy).await;
}

#[tokio::test]
async fn too_many_clients_get_53300() {
    let proxy = Proxy::start(&format!("[server]\nmax_client_conn = 2\n\n{TRUST}"));
    let _a = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let _b = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let mut c = Raw::connect(proxy.port).await;
    c.send(&startup_packet(&[("user", "trustuser"), ("database", "app")])).await;
    assert_eq!(c.error_codes_until_close().await, ["53300"]);
}

#[tokio::test]
async fn ssl_and_gss_requests_are_declined_without_tls() {
    let proxy = Proxy::start(TRUST);
    let mut r = Raw::connect(proxy.port).await;
    for code in [80877104i32, 80877103] {
        let mut p = 8i32.to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        r.send(&p).await;
        let mut b = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut r.s, &mut b).await.unwrap();
        assert_eq!(&b, b"N");
    }
    r.send(&startup_packet(&[("user", "trustuser"), ("database", "app")])).await;
    assert!(r.until_ready().await.unwrap().contains(&b'K'));
}

/// A slow client: part of a startup packet, then nothing (a connection that sends nothing at all
/// is not even accepted: see the next test).
#[tokio::test]
async fn a_client_that_never_finishes_startup_is_disconnected() {
    let proxy = Proxy::start(&format!("[server]\nstartup_timeout_ms = 300\n\n{TRUST}"));
    let mut idle = Raw::connect(proxy.port).await;
    idle.send(&startup_packet(&[("user", "trustuser")])[..6]).await;
    let started = std::time::Instant::now();
    assert!(idle.error_codes_until_close().await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    still_serves(&proxy).await;
}

/// Startup and authentication share one deadline, `startup_timeout_ms` from acceptance (as
/// PgBouncer's client_login_timeout): a client slow in both is closed when it runs out, not given
/// the whole time again for its password.
#[tokio::test]
async fn startup_and_authentication_share_one_deadline() {
    let proxy =
        Proxy::start("[server]\nstartup_timeout_ms = 1500\nauth_failure_delay_ms = 0\n\n[pool]\nmax_size = 2\n");
    let mut slow = Raw::connect(proxy.port).await;
    let packet = startup_packet(&[("user", "app"), ("database", "app")]);
    slow.send(&packet[..6]).await; // (accepted once bytes arrive: TCP_DEFER_ACCEPT)
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    slow.send(&packet[6..]).await; // startup done; the SASL request is never answered
    assert_eq!(slow.error_codes_until_close().await, ["28P01"]);
    let took = started.elapsed();
    // One deadline closes it at ~1.5 s; a fresh one for authentication would at ~2.5 s.
    assert!(took < Duration::from_millis(2200), "closed after {took:?}");
    assert!(took >= Duration::from_millis(1300), "closed after {took:?}");
    proxy.connect_as("app", "app", "app").await.expect("a prompt client still logs in");
}

/// TCP_DEFER_ACCEPT (server.tcp_defer_accept_s, on by default as in PgBouncer): a connection
/// that has sent nothing stays with the kernel, holding no session and no client slot, and is
/// served as usual once its startup packet arrives.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_connection_that_sends_nothing_holds_no_session() {
    let proxy = Proxy::start(TRUST);
    let clients = |proxy: &Proxy| {
        let (_, m) = proxy.http_get("/metrics");
        common::metric(&m, "pgpilot_clients{state=\"total\"}")
    };
    let mut silent = Raw::connect(proxy.port).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(clients(&proxy), 0.0, "a silent connection was accepted");
    silent.send(&startup_packet(&[("user", "trustuser"), ("database", "app")])).await;
    assert!(silent.until_ready().await.unwrap().contains(&b'K'));
    assert_eq!(clients(&proxy), 1.0);
}

#[tokio::test]
async fn an_upstream_that_never_answers_hits_the_connect_timeout() {
    // The kernel completes the TCP handshake (backlog) but nothing ever answers the startup packet.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let proxy = Proxy::start_with(
        "[upstream]\nconnect_timeout_ms = 300\n",
        &["--upstream", &format!("postgres://app:app@127.0.0.1:{port}")],
    );
    let started = std::time::Instant::now();
    let err = proxy.connect_as("app", "app", "app").await.unwrap_err();
    let db = err.as_db_error().expect("a server-style error");
    assert_eq!(db.code().code(), "08001", "{}", db.message());
    assert!(db.message().contains("timed out"), "{}", db.message());
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);
}

/// SCRAM with malformed messages: a wrong mechanism, a SASLInitialResponse cut short, garbage as the
/// client-first message, a client-final message with a forged or missing proof, a password message
/// where SCRAM is expected: each gets 28P01 (or a clean close), never a panic, and the proxy serves on.
#[tokio::test]
async fn malformed_scram_messages() {
    let proxy = Proxy::start("[pool]\nmax_size = 2\n");
    let first = b"n,,n=app,r=abcdefghijklmnopqrstuvwx".to_vec();
    let initial = |mech: &str, data: &[u8], declared: i32| {
        let mut b = mech.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(&declared.to_be_bytes());
        b.extend_from_slice(data);
        raw::msg(b'p', &b)
    };
    // (what, SASLInitialResponse or another first message, client-final message to send after SASLContinue)
    type Case = (&'static str, Vec<u8>, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        ("wrong mechanism", initial("SCRAM-SHA-1", &first, first.len() as i32), None),
        ("cut short", raw::msg(b'p', b"SCRAM-SHA-256\0\0\0"), None),
        ("garbage first", initial("SCRAM-SHA-256", b"\xff\xfe=,,", 5), None),
        ("no nonce", initial("SCRAM-SHA-256", b"n,,n=app", 8), None),
        ("plain password", raw::msg(b'p', b"app\0"), None),
        ("forged proof", initial("SCRAM-SHA-256", &first, first.len() as i32), Some(b"c=biws,r=x,p=AAAA".to_vec())),
        ("garbage final", initial("SCRAM-SHA-256", &first, first.len() as i32), Some(vec![0xff; 300])),
    ];
    for (what, m1, m2) in cases {
        let mut r = Raw::connect(proxy.port).await;
        r.send(&startup_packet(&[("user", "app"), ("database", "app")])).await;
        let (tag, _) = r.next().await.expect("an authentication request");
        assert_eq!(tag, b'R', "{what}");
        r.send(&m1).await;
        if let Some(m2) = m2 {
            match r.next().await {
                Some((b'R', _)) => r.send(&raw::msg(b'p', &m2)).await, // SASLContinue: now the final message
                other => panic!("{what}: expected SASLContinue, got {other:?}"),
            }
        }
        let codes = r.error_codes_until_close().await;
        assert!(codes.iter().all(|c| c == "28P01") && codes.len() <= 1, "{what}: {codes:?}");
    }
    let client = proxy.connect("app").await; // a real login still works
    assert_eq!(client.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
}
