//! Unit tests of the reply queue alone (no attachment): local replies in order, suppression,
//! errors skipping to Sync, a run sent again. What stages attach: stages/attached_tests.rs.
use super::*;

type Pending = super::Pending<()>;
type Replies = super::Replies<()>;

fn replies(p: &mut Pending, tags: &[u8]) -> (String, BytesMut) {
    let mut out = BytesMut::new();
    let mut ev = Replies::default();
    let mut seen = String::new();
    for &t in tags {
        if p.on_server(t, &[t, 0, 0, 0, 4], &mut out, &mut ev) {
            seen.push(t as char);
        }
    }
    (seen, out)
}

#[test]
fn local_replies_keep_their_place() {
    let mut p = Pending::default();
    p.push(Kind::Bind, Action::Forward);
    p.push_local(crate::net::messages::parse_complete());
    p.push(Kind::Execute, Action::Forward);
    p.push(Kind::Sync, Action::Forward);
    let mut out = BytesMut::new();
    p.emit_local(&mut out);
    assert!(out.is_empty(), "the Bind reply comes first");
    let (seen, mut out) = replies(&mut p, b"2");
    assert_eq!(seen, "2");
    assert!(out.is_empty(), "emitted only after the Bind reply is passed on");
    p.emit_local(&mut out);
    assert_eq!(&out[..], b"1\0\0\0\x04");
    assert_eq!(replies(&mut p, b"DCZ").0, "DCZ");
    assert!(p.is_empty());
}

/// A local reply waits for the client's ReadyForQuery from the server only when one is owed:
/// pgpilot's own Sync (suppressed) or none at all means it must go out now.
#[test]
fn a_ready_for_query_is_owed_only_for_a_forwarded_sync_or_query() {
    let mut p = Pending::default();
    p.push_local(crate::net::messages::parse_complete());
    assert!(!p.client_ready_owed(), "nothing will come from the server");
    p.push(Kind::Bind, Action::Forward);
    p.push(Kind::Sync, Action::Suppress);
    assert!(!p.client_ready_owed(), "pgpilot's own Sync: its ReadyForQuery is not relayed");
    p.push(Kind::Sync, Action::Forward);
    assert!(p.client_ready_owed());
    let mut out = BytesMut::new();
    p.emit_local(&mut out);
    assert_eq!(replies(&mut p, b"2ZZ").0, "2Z");
    assert!(!p.client_ready_owed(), "its ReadyForQuery came");
    p.push(Kind::Query, Action::Forward);
    assert!(p.client_ready_owed());
    // A run answered here (a cache hit's ReadyForQuery) goes out at once, whatever follows it.
    let mut p = Pending::default();
    p.push_local(bytes::Bytes::from_static(b"C\0\0\0\x0dSELECT 1\0Z\0\0\0\x05I"));
    p.push(Kind::Query, Action::Forward);
    p.emit_local(&mut out);
    assert!(!p.client_ready_owed(), "the client may be waiting for the run it sent first");
    assert!(p.client_ready_owed(), "asked once per emission");
}

#[test]
fn suppressed_replies_are_dropped_and_errors_skip_to_sync() {
    let mut p = Pending::default();
    p.push(Kind::Parse, Action::Suppress);
    p.push(Kind::Bind, Action::Forward);
    p.push(Kind::Execute, Action::Forward);
    p.push_local(crate::net::messages::close_complete());
    p.push(Kind::Sync, Action::Forward);
    assert_eq!(replies(&mut p, b"12").0, "2");
    let (seen, out) = replies(&mut p, b"EZ");
    assert_eq!(seen, "EZ");
    assert!(out.is_empty(), "the local CloseComplete is skipped after the error");
    assert!(p.is_empty());
}

#[test]
fn describe_statement_spans_two_replies_and_queries_end_at_ready() {
    let mut p = Pending::default();
    p.push(Kind::DescribeStatement, Action::Forward);
    p.push(Kind::Sync, Action::Forward);
    p.push(Kind::Query, Action::Forward);
    assert_eq!(replies(&mut p, b"tTZ").0, "tTZ");
    assert_eq!(replies(&mut p, b"TDCETZ").0, "TDCETZ");
    assert!(p.is_empty());
}

/// A Bind of a copy that proved stale, queued as the session queues it; returns the server buffer.
fn stale_copy_run(p: &mut Pending, stmt: &std::sync::Arc<Statement>, before: Option<Kind>) -> BytesMut {
    let mut sout = BytesMut::new();
    if let Some(kind) = before {
        p.push(kind, Action::Forward);
        sout.extend_from_slice(b"x\0\0\0\x04");
    }
    p.push_local(crate::net::messages::parse_complete()); // the client's Parse, answered here
    let at = sout.len();
    crate::net::messages::bind(&mut sout, b"", &stmt.server_name, b"\0\0\0\0\0\0");
    p.push(Kind::Bind, Action::Bind { stmt: stmt.clone() });
    p.arm_retry(at, Bytes::new());
    sout.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
    p.push(Kind::Execute, Action::Forward);
    sout.extend_from_slice(b"S\0\0\0\x04");
    p.push(Kind::Sync, Action::Forward);
    p.sync_sent(&sout);
    sout
}

#[test]
fn a_run_on_a_stale_copy_is_sent_again_unseen() {
    let registry = crate::prepared::Registry::new(10);
    let stmt = registry.get_or_insert(b"SELECT 1", b"\0\0", 0).unwrap();
    let mut p = Pending::default();
    let sout = stale_copy_run(&mut p, &stmt, None);
    let mut out = BytesMut::new();
    p.emit_local(&mut out);
    assert_eq!(&out[..], b"1\0\0\0\x04", "the ParseComplete answered here went out");
    out.clear();
    let mut r = Replies::default();
    let err = crate::net::messages::stale_plan_error();
    assert!(!p.on_server(b'E', &err, &mut out, &mut r), "the 0A000 is not the client's");
    assert!(matches!(r.statements.as_slice(), [Event::Retried { .. }]), "{:?}", r.statements);
    let resend = p.take_resend().expect("the run is sent again");
    assert!(resend.starts_with(b"C") && resend.ends_with(&sout), "Close, Parse, Describe, then the run as sent");
    assert!(p.swallows_ready(), "the failed run's ReadyForQuery is not the client's");
    assert!(!p.swallows_ready());
    // The second run: CloseComplete, ParseComplete, the Describe's two replies hidden.
    let (seen, out) = replies(&mut p, b"31tT2DCZ");
    assert_eq!(seen, "2DCZ");
    assert!(out.is_empty() && p.is_empty());
}

/// A client's SQL `DEALLOCATE pgpilot_1` reaches the server (no client owns that name): the next
/// run on that copy meets 26000. A run that parsed is sent again behind a new Parse; one that did
/// not gets the error and the copy is forgotten. Either way only this copy is gone (`Gone`): the
/// statement's description, shared by every connection, stays.
#[test]
fn a_run_on_a_deallocated_copy_is_prepared_again() {
    let registry = crate::prepared::Registry::new(10);
    let stmt = registry.get_or_insert(b"SELECT 1", b"\0\0", 0).unwrap();
    let mut err = BytesMut::new();
    let msg = format!("prepared statement \"{}\" does not exist", stmt.server_name);
    crate::net::messages::error(&mut err, "ERROR", "26000", &msg);
    let mut p = Pending::default();
    stale_copy_run(&mut p, &stmt, None);
    p.emit_local(&mut BytesMut::new());
    let mut r = Replies::default();
    assert!(!p.on_server(b'E', &err, &mut BytesMut::new(), &mut r), "the 26000 is not the client's");
    assert!(matches!(r.statements.as_slice(), [Event::Retried { why: Stale::Gone, .. }]), "{:?}", r.statements);
    assert!(p.take_resend().is_some_and(|b| b.starts_with(b"C")), "Close, Parse, Describe, then the run");
    // A run that is not sent again (an Execute went before its Bind): the client sees the
    // error, the copy is dropped.
    let mut p = Pending::default();
    stale_copy_run(&mut p, &stmt, Some(Kind::Execute));
    assert_eq!(replies(&mut p, b"C").0, "C");
    let mut r = Replies::default();
    assert!(p.on_server(b'E', &err, &mut BytesMut::new(), &mut r));
    assert!(p.take_resend().is_none());
    assert!(matches!(r.statements.as_slice(), [Event::PlanStale { why: Stale::Gone, .. }]), "{:?}", r.statements);
    // A Bind of the client's own statement name passed through: its 26000 is the client's alone.
    let mut p = Pending::default();
    p.push(Kind::Bind, Action::Forward);
    p.push(Kind::Sync, Action::Forward);
    let mut r = Replies::default();
    assert!(p.on_server(b'E', &err, &mut BytesMut::new(), &mut r));
    assert!(r.statements.is_empty() && p.take_resend().is_none());
}

#[test]
fn no_retry_after_a_statement_ran_in_the_run_or_when_the_run_was_written_out_in_parts() {
    let registry = crate::prepared::Registry::new(10);
    let stmt = registry.get_or_insert(b"SELECT 1", b"\0\0", 0).unwrap();
    let err = crate::net::messages::stale_plan_error();
    // An Execute before it in the same run: its replies reached the client and would come twice.
    let mut p = Pending::default();
    stale_copy_run(&mut p, &stmt, Some(Kind::Execute));
    assert_eq!(replies(&mut p, b"C").0, "C");
    let mut r = Replies::default();
    assert!(p.on_server(b'E', &err, &mut BytesMut::new(), &mut r), "PostgreSQL's 0A000 reaches the client");
    assert!(p.take_resend().is_none() && matches!(r.statements.as_slice(), [Event::PlanStale { .. }]));
    assert_eq!(replies(&mut p, b"Z").0, "Z");
    // The Bind went out before its Sync arrived: its bytes were not kept.
    let mut p = Pending::default();
    p.push_local(crate::net::messages::parse_complete());
    p.push(Kind::Bind, Action::Bind { stmt: stmt.clone() });
    p.arm_retry(0, Bytes::new());
    p.server_flushed();
    p.push(Kind::Sync, Action::Forward);
    p.sync_sent(b"S\0\0\0\x04");
    p.emit_local(&mut BytesMut::new());
    assert!(p.on_server(b'E', &err, &mut BytesMut::new(), &mut Replies::default()));
    assert!(p.take_resend().is_none());
}

/// A Query the server skips after an error before Sync ends no run: the queue counts those queued
/// before the error came, and makes no entry for one pushed after.
#[test]
fn queries_skipped_after_an_error_are_counted_and_not_queued() {
    let mut p = Pending::default();
    p.push(Kind::Bind, Action::Forward);
    p.push(Kind::Query, Action::Forward);
    p.push(Kind::Query, Action::Suppress); // pgpilot's own (never skipped in fact: counted alike)
    p.push(Kind::Execute, Action::Forward);
    p.push(Kind::Sync, Action::Forward);
    assert_eq!(replies(&mut p, b"E").0, "E");
    assert_eq!(p.take_skipped_boundaries(), 2, "the Queries, not the Execute");
    assert_eq!(p.take_skipped_boundaries(), 0, "taken");
    assert_eq!(replies(&mut p, b"Z").0, "Z");
    assert!(p.is_empty(), "one ReadyForQuery for the Sync ends the run");
    let mut p = Pending::default();
    p.push(Kind::Execute, Action::Forward);
    assert_eq!(replies(&mut p, b"E").0, "E");
    p.begin_message();
    p.push(Kind::Query, Action::Forward);
    assert!(!p.queued(), "pushed after the error: the server skips it, no entry");
    p.push(Kind::Sync, Action::Forward);
    assert!(p.queued());
}

/// The skip to Sync ends at any ReadyForQuery (one for a Sync the queue dropped into a COPY), and a
/// connection released while it lasts must not be reused.
#[test]
fn a_ready_for_query_ends_the_skip_and_a_release_reports_it() {
    let mut p = Pending::default();
    p.push(Kind::Execute, Action::Forward);
    assert_eq!(replies(&mut p, b"E").0, "E");
    assert!(p.skipping());
    assert!(p.released(), "still skipping: close it");
    assert!(!p.skipping() && !p.released());
    p.push(Kind::Execute, Action::Forward);
    assert_eq!(replies(&mut p, b"E").0, "E");
    replies(&mut p, b"Z"); // the ReadyForQuery of a Sync sent into COPY IN (no entry)
    assert!(!p.skipping(), "the server answered a Sync: it skips no more");
    p.begin_message();
    p.push(Kind::Query, Action::Forward);
    assert!(p.queued());
}

/// `SELECT 1` registered and described, as a client holds it; with its version.
fn described_statement() -> (std::sync::Arc<Statement>, u64) {
    let registry = crate::prepared::Registry::new(10);
    let stmt = registry.get_or_insert(b"SELECT 1", b"\0\0", 0).unwrap();
    let held = stmt.described(Bytes::from_static(b"t\0\0\0\x04T\0\0\0\x04"), 0);
    (stmt, held)
}

/// A Describe compared with the description the client holds, behind a fresh Parse, with the
/// client's run (Bind, Execute, Sync) written after it as the session writes them; returns the
/// server buffer and where the held run starts in it.
fn held_run(p: &mut Pending, stmt: &std::sync::Arc<Statement>, held: u64) -> (BytesMut, usize) {
    use crate::net::messages;
    let mut sout = BytesMut::new();
    messages::parse(&mut sout, &stmt.server_name, &stmt.query, &stmt.types);
    p.push(Kind::Parse, Action::Parse { stmt: stmt.clone(), client_name: None, suppress: true });
    messages::describe_statement(&mut sout, &stmt.server_name);
    p.push(Kind::DescribeStatement, Action::describe(stmt.clone(), Check::Compare(held), true, Bytes::new()));
    messages::flush(&mut sout);
    p.hold(sout.len());
    let at = sout.len();
    messages::bind(&mut sout, b"", &stmt.server_name, b"\0\0\0\0\0\0");
    p.push(Kind::Bind, Action::Bind { stmt: stmt.clone() });
    messages::execute(&mut sout, b"", 0);
    p.push(Kind::Execute, Action::Forward);
    sout.extend_from_slice(b"S\0\0\0\x04");
    p.push(Kind::Sync, Action::Forward);
    (sout, at)
}

/// What a flush writes of the server buffer now (holds released first, as `flush_server` does).
fn written_from(p: &mut Pending, sout: &mut BytesMut) -> BytesMut {
    let n = p.writable(sout);
    let written = sout.split_to(n);
    p.written(n);
    written
}

#[test]
fn a_run_behind_a_compared_describe_waits_for_its_answer() {
    let (stmt, held) = described_statement();
    let mut p = Pending::default();
    let (mut sout, at) = held_run(&mut p, &stmt, held);
    let run = sout[at..].to_vec();
    assert!(p.holding());
    assert_eq!(written_from(&mut p, &mut sout).len(), at, "Parse, Describe and Flush go out; the run waits");
    assert_eq!(written_from(&mut p, &mut sout).len(), 0, "still waiting: no answer yet");
    // The same description: the run goes out as the client sent it.
    let (seen, out) = replies(&mut p, b"1tT");
    assert!(seen.is_empty() && out.is_empty(), "pgpilot's own Parse and Describe are not the client's");
    assert_eq!(&written_from(&mut p, &mut sout)[..], &run[..]);
    assert!(!p.holding() && sout.is_empty());
    assert_eq!(replies(&mut p, b"2DCZ").0, "2DCZ");
    assert!(p.is_empty());
}

#[test]
fn a_changed_statement_fails_on_the_server_before_the_held_run() {
    let (stmt, held) = described_statement();
    let mut p = Pending::default();
    let (mut sout, at) = held_run(&mut p, &stmt, held);
    let run = sout[at..].to_vec();
    written_from(&mut p, &mut sout);
    let mut out = BytesMut::new();
    let mut r = Replies::default();
    let changed = b"T\0\0\0\x06\0\x01"; // another row description: a column more
    for frame in [&b"1\0\0\0\x04"[..], b"t\0\0\0\x04", changed] {
        assert!(!p.on_server(frame[0], frame, &mut out, &mut r));
    }
    assert_eq!(&out[..], &crate::net::messages::stale_plan_error()[..], "the client's 0A000, in its Bind's place");
    let sent = written_from(&mut p, &mut sout);
    assert!(sent.starts_with(b"B") && sent.ends_with(&run), "a Bind the server fails, then the run it skips");
    assert!(std::str::from_utf8(&sent[..sent.len() - run.len()]).unwrap().contains("pgpilot_shape_changed"));
    // The server: 26000 for that Bind (shown to no one), the run skipped, the Sync's ReadyForQuery.
    let (seen, _) = replies(&mut p, b"EZ");
    assert_eq!(seen, "Z");
    assert!(p.is_empty() && !p.holding());
}

#[test]
fn a_hold_whose_describe_the_server_skipped_is_released_as_it_is() {
    let (stmt, held) = described_statement();
    let mut p = Pending::default();
    p.push(Kind::Execute, Action::Forward); // an earlier statement, which fails
    let (mut sout, at) = held_run(&mut p, &stmt, held);
    let run = sout[at..].to_vec();
    written_from(&mut p, &mut sout);
    assert_eq!(replies(&mut p, b"E").0, "E", "the error is the client's; the rest is skipped up to Sync");
    assert_eq!(&written_from(&mut p, &mut sout)[..], &run[..], "the run goes as sent: the server skips it");
    assert_eq!(replies(&mut p, b"Z").0, "Z");
    // A connection lost or given back holds nothing.
    let (mut sout, _) = held_run(&mut p, &stmt, held);
    let all = sout.len();
    p.clear();
    assert!(!p.holding());
    assert_eq!(written_from(&mut p, &mut sout).len(), all);
}

/// The client's own compared Describe ends the buffer (nothing behind it yet): the buffer is empty
/// once written, and its answer must still release the hold (else the client is never read again).
#[test]
fn a_hold_at_the_end_of_an_empty_buffer_is_released() {
    let (stmt, held) = described_statement();
    let mut p = Pending::default();
    let mut sout = BytesMut::new();
    crate::net::messages::describe_statement(&mut sout, &stmt.server_name);
    p.push(Kind::DescribeStatement, Action::describe(stmt.clone(), Check::Compare(held), false, Bytes::new()));
    crate::net::messages::flush(&mut sout);
    p.hold(sout.len());
    written_from(&mut p, &mut sout);
    assert!(sout.is_empty() && p.holding());
    assert_eq!(replies(&mut p, b"tT").0, "tT", "the same description is the client's");
    assert_eq!(p.writable(&mut sout), 0);
    assert!(!p.holding(), "released though nothing was held behind it");
}
