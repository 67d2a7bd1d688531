//! The session's protocol logic against a scripted fake server, in the test's process: the test
//! plays PostgreSQL message by message (tests/common/fake.rs), so what pgpilot forwards, holds and
//! releases is seen exactly (when a real server would answer too fast to tell). The real-server suites check the
//! same paths end to end; these pin the order and the boundaries.

mod common;

use std::time::Duration;

use common::fake::*;
use common::raw::{self, msg};

/// Flush gets replies but never ends the client's hold on its server connection; PortalSuspended
/// does not either: only ReadyForQuery after Sync gives the connection back to the pool (another
/// client, waiting for the pool's one connection, gets it then and not before).
#[tokio::test]
async fn only_ready_for_query_after_sync_releases_the_server() {
    let (fake, proxy) = Fake::start().await;
    let (mut a, mut server) = fake.login(&proxy).await;

    let mut batch = raw::parse("", "SELECT v FROM t");
    batch.extend(raw::bind("", ""));
    batch.extend(execute_rows(1));
    batch.extend(msg(b'H', b""));
    a.send(&batch).await;
    assert_eq!(tags(&mut server, 4).await, "PBEH", "forwarded as sent");
    let mut reply = msg(b'1', b"");
    reply.extend(msg(b'2', b""));
    reply.extend(data_row("one"));
    reply.extend(msg(b's', b""));
    server.send(&reply).await;
    assert_eq!(tags(&mut a, 4).await, "12Ds", "Flush's replies reach the client");

    // Another client's query needs the pool's one connection: not yet.
    let mut b = waiting_query(&proxy).await;
    assert!(quiet(&mut server, Duration::from_millis(400)).await, "the connection was released before Sync");

    let mut rest = execute_rows(0);
    rest.extend(raw::sync());
    a.send(&rest).await;
    assert_eq!(tags(&mut server, 2).await, "ES");
    let mut reply = data_row("two");
    reply.extend(done("SELECT 1", b'I'));
    server.send(&reply).await;
    assert_eq!(tags(&mut a, 3).await, "DCZ");

    assert_eq!(tags(&mut server, 1).await, "Q", "released at ReadyForQuery: the other client's query");
    assert!(fake.no_new_connection(Duration::from_millis(200)).await, "the same server connection");
    let mut reply = msg(b'T', b"\0\0");
    reply.extend(done("SELECT 0", b'I'));
    server.send(&reply).await;
    assert_eq!(String::from_utf8_lossy(&b.until_ready().await.unwrap()), "TCZ");
}

/// An error before Sync: the server skips to Sync, and so does pgpilot's reply queue (it waits
/// for no reply to the skipped Bind and Execute); the client sees the error and ReadyForQuery.
#[tokio::test]
async fn an_error_before_sync_skips_to_it() {
    let (fake, proxy) = Fake::start().await;
    let (mut a, mut server) = fake.login(&proxy).await;
    let mut batch = raw::parse("", "SELEC 1");
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    a.send(&batch).await;
    assert_eq!(tags(&mut server, 4).await, "PBES");
    let mut reply = msg(b'E', b"SERROR\0C42601\0Msyntax error at or near \"SELEC\"\0\0");
    reply.extend(ready(b'I'));
    server.send(&reply).await;
    let got = a.messages_until_ready().await;
    let got_tags: String = got.iter().map(|(t, _)| *t as char).collect();
    assert_eq!(got_tags, "EZ");
    assert_eq!(raw::sqlstate(&got[0].1), "42601");
    // The session goes on, on the same connection.
    a.send(&raw::query("SELECT 1")).await;
    assert_eq!(tags(&mut server, 1).await, "Q");
    let reply = done("SELECT 0", b'I');
    server.send(&reply).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "CZ");
}

/// The server connection dies inside a transaction: the client gets 08006 and is closed; the pool
/// does not hand the dead connection out again (the next client gets a new one).
#[tokio::test]
async fn a_server_lost_mid_transaction_ends_that_session_only() {
    let (fake, proxy) = Fake::start().await;
    let (mut a, mut server) = fake.login(&proxy).await;
    // BEGIN and COMMIT of an empty transaction are answered by pgpilot (strategy.defer_begin).
    for (sql, status) in [("BEGIN", "T"), ("COMMIT", "I"), ("BEGIN", "T")] {
        a.send(&raw::query(sql)).await;
        let got = a.messages_until_ready().await;
        assert_eq!(got.iter().map(|(t, _)| *t as char).collect::<String>(), "CZ");
        assert_eq!(got[1].1, status.as_bytes(), "{sql}");
    }
    assert!(quiet(&mut server, Duration::from_millis(100)).await, "nothing sent for an empty transaction");
    a.send(&raw::query("SELECT 1")).await;
    assert_eq!(tags(&mut server, 2).await, "QQ", "the deferred BEGIN, then the statement");
    drop(server);
    assert_eq!(a.error_codes_until_close().await, ["08006"]);

    let mut b = waiting_query(&proxy).await;
    let mut server2 = fake.accept().await;
    assert_eq!(tags(&mut server2, 1).await, "Q", "a new connection for the next client's query");
    server2.send(&done("SELECT 0", b'I')).await;
    assert_eq!(String::from_utf8_lossy(&b.until_ready().await.unwrap()), "CZ");
}

/// COPY FROM STDIN: the server connection stays with the client through the copy (CopyData and
/// CopyDone are not boundaries) and goes back to the pool only at the ReadyForQuery after it.
#[tokio::test]
async fn copy_in_holds_the_server_until_its_ready_for_query() {
    let (fake, proxy) = Fake::start().await;
    let (mut a, mut server) = fake.login(&proxy).await;
    a.send(&raw::query("COPY t FROM STDIN")).await;
    assert_eq!(tags(&mut server, 1).await, "Q");
    server.send(&msg(b'G', &[0, 0, 1, 0, 0])).await;
    assert_eq!(tags(&mut a, 1).await, "G");

    let mut b = waiting_query(&proxy).await;
    let mut data = msg(b'd', b"1\n");
    data.extend(msg(b'd', b"2\n"));
    a.send(&data).await;
    assert_eq!(tags(&mut server, 2).await, "dd", "CopyData forwarded as sent");
    assert!(quiet(&mut server, Duration::from_millis(200)).await, "released in the middle of COPY");
    a.send(&msg(b'c', b"")).await;
    assert_eq!(tags(&mut server, 1).await, "c");
    assert!(quiet(&mut server, Duration::from_millis(200)).await, "released at CopyDone, before the server's reply");
    let reply = done("COPY 2", b'I');
    server.send(&reply).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "CZ");
    assert_eq!(tags(&mut server, 1).await, "Q", "released at ReadyForQuery: the other client's query");
    assert!(fake.no_new_connection(Duration::from_millis(200)).await, "the same server connection");
    server.send(&done("SELECT 0", b'I')).await;
    assert_eq!(String::from_utf8_lossy(&b.until_ready().await.unwrap()), "CZ");
}

/// A result cache hit inside a transaction, pipelined behind a statement the server has not
/// answered yet: the hit's replies (BindComplete, rows, CommandComplete) are given in their turn,
/// after the server's replies to everything sent before them, never ahead.
#[tokio::test]
async fn a_cache_hit_waits_behind_pending_server_replies() {
    let (fake, proxy) = Fake::start_with(CACHE_CONFIG).await;
    let (mut a, mut server) = fake.login(&proxy).await;
    let read = "SELECT v FROM t";
    let mut answer = msg(b'1', b"");
    answer.extend(msg(b'2', b""));
    answer.extend(data_row("cached"));
    answer.extend(done("SELECT 1", b'I'));

    // The login started loading the table list, on the pool's one connection.
    answer_table_list(&mut server).await;

    // First run: a miss, captured (pgpilot describes the portal itself, hidden from the client).
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.send(&extended(read, true)).await;
    assert_eq!(tags(&mut server, 5).await, "PBDES");
    let mut miss = msg(b'1', b"");
    miss.extend(msg(b'2', b""));
    miss.extend(row_description(&["v"]));
    miss.extend(answer[10..].iter());
    server.send(&miss).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "12DCZ");

    a.send(&raw::query("BEGIN")).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "CZ", "answered by pgpilot");

    // A slow statement, then the cached read, in one pipeline (behind the deferred BEGIN).
    let mut batch = extended("SELECT pg_sleep(1)", false);
    batch.extend(extended(read, true));
    a.send(&batch).await;
    assert_eq!(tags(&mut server, 6).await, "QPBEPS", "the cached read's Bind and Execute are answered here");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a.next()).await.is_err(),
        "nothing reaches the client before the server answers what came first"
    );
    let mut slow = done("BEGIN", b'T'); // kept from the client, who was answered already
    slow.extend(msg(b'1', b""));
    slow.extend(msg(b'2', b""));
    slow.extend(data_row(""));
    slow.extend(msg(b'C', b"SELECT 1\0"));
    slow.extend(msg(b'1', b""));
    slow.extend(ready(b'T'));
    server.send(&slow).await;
    let got = a.messages_until_ready().await;
    let order: String = got.iter().map(|(t, _)| *t as char).collect();
    assert_eq!(order, "12DC12DCZ", "the hit's replies come after the server's, before ReadyForQuery");
    assert!(String::from_utf8_lossy(&got[6].1).contains("cached"), "the rows from the cache");
}

/// The description the fake gives `SELECT 1` (its ParameterDescription and one column).
fn one_column() -> Vec<u8> {
    let mut d = param_description();
    d.extend(row_description(&["one"]));
    d
}

/// A client's s1, prepared on the server under pgpilot's name and described (once hidden, once
/// for the client), then closed there when s2 takes the server's one slot. Returns the fake and
/// the proxy (kept alive), the client, the server, and s1's and s2's server names.
async fn s1_evicted_by_s2() -> (Fake, InProcess, raw::Raw, raw::Raw, String, String) {
    let config =
        "[pool]\nmax_size = 1\ncheckout_timeout_ms = 5000\nmax_server_connections = 100\nisolate_attached_code = false\n[cache]\nenabled = false\n\
        [prepared]\nserver_cache_size = 1\n\n[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n";
    let (fake, proxy) = Fake::start_with(config).await;
    let (mut a, mut server) = fake.login(&proxy).await;
    let mut batch = raw::parse("s1", "SELECT 1");
    batch.extend(msg(b'D', b"Ss1\0"));
    batch.extend(raw::sync());
    a.send(&batch).await;
    let sent = named(&mut server, 4).await;
    let tags: String = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, "PDDS");
    let s1 = sent[0].1.clone();
    assert!(s1.starts_with("pgpilot_"), "the registry's name, not the client's: {s1}");
    let mut reply = msg(b'1', b"");
    reply.extend(one_column());
    reply.extend(one_column());
    reply.extend(ready(b'I'));
    server.send(&reply).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "1tTZ");

    let mut batch = raw::parse("s2", "SELECT 2");
    batch.extend(raw::sync());
    a.send(&batch).await;
    let sent = named(&mut server, 4).await;
    assert_eq!(sent[0], ('C', s1.clone()), "the least recently used statement is closed");
    assert_eq!(sent.iter().map(|(t, _)| *t).collect::<String>(), "CPDS");
    let s2 = sent[1].1.clone();
    let mut reply = msg(b'3', b"");
    reply.extend(msg(b'1', b""));
    reply.extend(one_column());
    reply.extend(ready(b'I'));
    server.send(&reply).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "1Z");
    (fake, proxy, a, server, s1, s2)
}

/// The client binds s1 again and runs it (Bind, Execute, Sync): what pgpilot sends first (Close of
/// s2, Parse and Describe of s1, Flush; the rest waits for the description).
async fn bind_s1_again(a: &mut raw::Raw, server: &mut raw::Raw) -> Vec<(char, String)> {
    let mut batch = raw::bind("", "s1");
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    a.send(&batch).await;
    let sent = named(server, 4).await;
    assert_eq!(sent.iter().map(|(t, _)| *t).collect::<String>(), "CPDH");
    sent
}

/// Binding s1 again, which the client holds described: prepared again (s2 evicted) and described,
/// with a Flush; the client's Bind waits for that description, compared with the client's
/// (`reply_hold.rs`), then goes out; the client sees its own replies only.
#[tokio::test]
async fn a_statement_evicted_from_the_server_is_prepared_again_unseen() {
    let (_fake, _proxy, mut a, mut server, s1, s2) = s1_evicted_by_s2().await;
    let sent = bind_s1_again(&mut a, &mut server).await;
    assert_eq!(sent[0].1, s2);
    assert_eq!((sent[1].1.as_str(), sent[2].1.as_str()), (s1.as_str(), s1.as_str()), "s1 again, under its server name");
    assert!(quiet(&mut server, Duration::from_millis(300)).await, "the Bind waits for the description");
    let mut reply = msg(b'3', b"");
    reply.extend(msg(b'1', b""));
    reply.extend(one_column());
    server.send(&reply).await;
    let sent = named(&mut server, 3).await;
    assert_eq!(sent.iter().map(|(t, _)| *t).collect::<String>(), "BES");
    assert_eq!(sent[0].1, s1);
    let mut reply = msg(b'2', b"");
    reply.extend(data_row("1"));
    reply.extend(done("SELECT 1", b'I'));
    server.send(&reply).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "2DCZ");
}

/// As above, but the server describes s1 with another shape (DDL since the client's Describe): the
/// client gets 0A000 in its Bind's place, and its Bind and Execute reach the server only behind a
/// Bind the server fails, so they are skipped up to the Sync (a write there would never run).
#[tokio::test]
async fn a_statement_that_changed_shape_fails_before_the_clients_run() {
    let (_fake, _proxy, mut a, mut server, s1, _) = s1_evicted_by_s2().await;
    bind_s1_again(&mut a, &mut server).await;
    let mut reply = msg(b'3', b"");
    reply.extend(msg(b'1', b""));
    reply.extend(param_description());
    reply.extend(row_description(&["one", "two"]));
    server.send(&reply).await;
    let sent = named(&mut server, 4).await;
    assert_eq!(sent.iter().map(|(t, _)| *t).collect::<String>(), "BBES");
    assert_eq!((sent[0].1.as_str(), sent[1].1.as_str()), ("pgpilot_shape_changed", s1.as_str()));
    let mut reply = msg(b'E', b"SERROR\0C26000\0Mprepared statement \"pgpilot_shape_changed\" does not exist\0\0");
    reply.extend(ready(b'I'));
    server.send(&reply).await;
    let (tag, body) = a.next().await.expect("the client's error");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(tag, b'E', "{text}");
    assert!(text.contains("C0A000\0Mcached plan must not change result type"), "{text}");
    let (tag, _) = a.next().await.expect("the Sync's ReadyForQuery");
    assert_eq!(tag, b'Z', "pgpilot's own Bind's error (26000) is not the client's");
}

/// A pool growing fast opens at most `pool.max_parallel_connects` server connections at once: with
/// two connects pending (the fake holds their logins), a third client's checkout does not start a
/// third until one of them completes.
#[tokio::test]
async fn connects_are_bounded_by_max_parallel_connects() {
    let config = "[pool]\nmax_size = 10\ncheckout_timeout_ms = 5000\nmax_server_connections = 100\n\
        max_parallel_connects = 2\nisolate_attached_code = false\n[cache]\nenabled = false\n\n[[users]]\nname = \"trustuser\"\nauth = \"trust\"\n";
    let (fake, proxy) = Fake::start_with(config).await;
    let (mut a, mut server_a) = fake.login(&proxy).await;
    a.send(&raw::query("SELECT 1")).await; // holds the one connection (never answered here)
    assert_eq!(tags(&mut server_a, 1).await, "Q");
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let proxy = proxy.clone();
        waiting.push(tokio::spawn(async move { waiting_query(&proxy).await }));
    }
    // Two connects start; their logins are held unanswered.
    let mut pending = Vec::new();
    for _ in 0..2 {
        let (s, _) = tokio::time::timeout(Duration::from_secs(10), fake.listener.accept()).await.unwrap().unwrap();
        pending.push(s);
    }
    assert!(fake.no_new_connection(Duration::from_millis(400)).await, "a third connect while two are pending");
    drop(pending.pop()); // one fails (the server closed it): its permit is free again
    let third = tokio::time::timeout(Duration::from_secs(5), fake.listener.accept()).await;
    assert!(third.is_ok(), "the next connect starts once one has ended");
}

/// A large FunctionCall (streamed through in parts) that pgpilot skips after a local error
/// before Sync never reaches a server, so it gets no ReadyForQuery: it must not open a group of
/// writes the cache waits for. (It did: the next read bypassed the cache, and every later group
/// was settled by the ReadyForQuery before its own, so invalidations came one round trip late.)
#[tokio::test]
async fn a_skipped_streamed_function_call_leaves_the_cache_usable() {
    let (fake, proxy) = Fake::start_with(CACHE_CONFIG).await;
    let (mut a, mut server) = fake.login(&proxy).await;
    answer_table_list(&mut server).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut prepare = raw::parse("s1", "SELECT 1");
    prepare.extend(raw::sync());
    a.send(&prepare).await;
    assert_eq!(tags(&mut server, 3).await, "PDS", "pgpilot describes the statement for its registry");
    let mut reply = msg(b'1', b"");
    reply.extend(param_description());
    reply.extend(row_description(&["one"]));
    reply.extend(ready(b'I'));
    server.send(&reply).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "1Z");

    // The same name again fails here (42P05); the FunctionCall after it, past the streaming
    // threshold, is skipped up to the Sync.
    let mut batch = raw::parse("s1", "SELECT 1");
    let mut call = 1i32.to_be_bytes().to_vec(); // function oid
    call.extend(0i16.to_be_bytes()); // argument formats
    call.extend(1i16.to_be_bytes()); // one argument
                                     // Past the threshold above which pgpilot streams a message instead of reading it whole.
    let size = pgpilot::net::frame::STREAM_THRESHOLD + 4096;
    call.extend((size as i32).to_be_bytes());
    call.extend(vec![b'x'; size]);
    call.extend(0i16.to_be_bytes()); // result format
    batch.extend(msg(b'F', &call));
    batch.extend(raw::sync());
    a.send(&batch).await;
    let got = a.messages_until_ready().await;
    assert_eq!(got.iter().map(|(t, _)| *t as char).collect::<String>(), "EZ");
    assert_eq!(raw::sqlstate(&got[0].1), "42P05");
    assert!(quiet(&mut server, Duration::from_millis(200)).await, "nothing of it reached the server");

    // A cacheable read: the first run is a miss captured for the cache, the second a hit.
    let read = "SELECT v FROM t";
    a.send(&extended(read, true)).await;
    // pgpilot's own Describe ahead of the Execute: the result is captured (a read that
    // bypasses the cache goes out as PBES).
    assert_eq!(tags(&mut server, 4).await, "PBDE", "the first run is captured for the cache");
    assert_eq!(tags(&mut server, 1).await, "S");
    let mut miss = msg(b'1', b"");
    miss.extend(msg(b'2', b""));
    miss.extend(row_description(&["v"]));
    miss.extend(data_row("cached"));
    miss.extend(done("SELECT 1", b'I'));
    server.send(&miss).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "12DCZ");
    a.send(&extended(read, true)).await;
    // A hit: only the Parse (and the Sync after it) reach the server; Bind and Execute do not.
    assert_eq!(tags(&mut server, 2).await, "PS", "the second run's Bind and Execute are answered here");
    let mut parsed = msg(b'1', b"");
    parsed.extend(ready(b'I'));
    server.send(&parsed).await;
    let got = a.messages_until_ready().await;
    assert_eq!(got.iter().map(|(t, _)| *t as char).collect::<String>(), "12DCZ");
    assert!(String::from_utf8_lossy(&got[2].1).contains("cached"), "the rows from the cache");
}

/// A cancel the server never confirms (its cancel connection stays open past pgpilot's 5 s wait)
/// may still be signalled later, to whatever that backend then runs: the connection is closed,
/// and the next client's query goes to a new one.
#[tokio::test]
async fn a_connection_whose_cancel_was_never_confirmed_is_not_reused() {
    // The next client waits out the 5 s: a checkout timeout well past it.
    let config = CONFIG.replace("checkout_timeout_ms = 5000", "checkout_timeout_ms = 20000");
    let (fake, proxy) = Fake::start_with(&config).await;
    let mut c = proxy.connect();
    let login = tokio::spawn(async move {
        c.send(&raw::startup_packet(&[("user", "trustuser"), ("database", "app")])).await;
        let key = c.messages_until_ready().await.into_iter().find(|(t, _)| *t == b'K').expect("BackendKeyData").1;
        (c, key)
    });
    let mut server = fake.accept().await;
    let (mut a, key) = login.await.unwrap();
    a.send(&raw::query("SELECT pg_sleep(60)")).await;
    assert_eq!(tags(&mut server, 1).await, "Q");

    let mut cancel = proxy.connect();
    let mut request = 16i32.to_be_bytes().to_vec();
    request.extend(80877102i32.to_be_bytes());
    request.extend(&key);
    cancel.send(&request).await;
    let (mut forwarded, _) =
        tokio::time::timeout(Duration::from_secs(5), fake.listener.accept()).await.unwrap().unwrap();
    let mut got = [0u8; 16];
    tokio::io::AsyncReadExt::read_exact(&mut forwarded, &mut got).await.unwrap();
    assert_eq!(got[..8], [0, 0, 0, 16, 4, 210, 22, 46], "a CancelRequest");
    assert_eq!(got[8..], [0, 0, 0, 7, 0, 0, 0, 9], "with the server's own key");
    // The fake neither signals nor closes `forwarded`; the query ends on its own.
    server.send(&done("SELECT 1", b'I')).await;
    assert_eq!(String::from_utf8_lossy(&a.until_ready().await.unwrap()), "CZ");

    let mut b = waiting_query(&proxy).await;
    let mut server2 = tokio::time::timeout(Duration::from_secs(8), fake.accept()).await.expect("a new connection");
    assert_eq!(tags(&mut server2, 1).await, "Q", "the next client's query on the new connection");
    server2.send(&done("SELECT 0", b'I')).await;
    assert_eq!(String::from_utf8_lossy(&b.until_ready().await.unwrap()), "CZ");
    assert!(server.next().await.is_none(), "the doubtful connection was closed");
    drop(forwarded);
}
