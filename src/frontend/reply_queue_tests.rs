//! Unit tests of the reply queue: local replies in order, suppression, errors skipping to Sync.
use super::*;

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

fn track() -> Box<Track> {
    let a = std::sync::Arc::new(crate::sql::parse::opaque("SELECT 1"));
    let now = crate::clock::Stamp::now();
    Box::new(Track {
        statements: smallvec::smallvec![(a, 0)],
        next: 0,
        rows_seen: 0,
        sent: now,
        received: now,
        pipelined: false,
        run_via: Default::default(),
    })
}

#[test]
fn what_a_stage_attaches_goes_to_the_entry_just_pushed_or_nowhere() {
    let mut p = Pending::default();
    p.push(Kind::Execute, Action::Forward);
    p.begin_message(); // a message that gets no entry of its own (Flush)
    p.attach_track(track());
    let mut out = BytesMut::new();
    let mut r = Replies::default();
    p.on_server(b'C', b"C\0\0\0\x0bSELECT 1\0", &mut out, &mut r);
    assert!(r.completed.is_empty(), "not attached to an earlier message's entry");

    p.begin_message();
    p.push(Kind::Execute, Action::Forward);
    p.attach_track(track());
    p.on_server(b'C', b"C\0\0\0\x0bSELECT 1\0", &mut out, &mut r);
    assert_eq!(r.completed.len(), 1);
    assert_eq!(r.completed[0].rows, 1);
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

/// Every entry is moved into the queue and out of it once per message: kept small (the rare
/// Describe wait and replacement error are boxed) so the moves stay a few vector stores.
#[test]
fn a_queue_entry_stays_small() {
    assert!(std::mem::size_of::<super::Expect>() <= 96, "{}", std::mem::size_of::<super::Expect>());
}

/// A run of rows taken at once is what its rows one by one would be: counted for insights,
/// shown unless the entry hides its replies, and the entry still open for its completion.
#[test]
fn a_run_of_rows_counts_and_shows_as_its_rows_would() {
    let run: Vec<u8> = [*b"D\0\0\0\x04", *b"D\0\0\0\x04", *b"D\0\0\0\x04"].concat();
    let (mut out, mut r) = (BytesMut::new(), Replies::default());
    let mut p = Pending::default();
    p.push(Kind::Execute, Action::Forward);
    p.attach_track(track());
    assert!(p.on_rows(&run, 3, &mut out, &mut r), "the client's rows");
    assert!(p.on_rows(&run[..5], 1, &mut out, &mut r));
    p.on_server(b'C', b"C\0\0\0\x0bSELECT\0", &mut out, &mut r);
    assert_eq!(r.completed.len(), 1, "the rows did not complete the entry; the CommandComplete did");
    assert_eq!(r.completed[0].rows, 4, "a tag without a count: the rows seen");
    assert!(p.is_empty());

    p.push(Kind::Query, Action::Suppress); // pgpilot's own Query: its rows are not the client's
    assert!(!p.on_rows(&run, 3, &mut out, &mut r));
    assert!(out.is_empty());
    assert!(Pending::default().on_rows(&run, 3, &mut out, &mut r), "nothing expected: relayed as on_server does");
}

/// `on_rows` against `on_server` row by row, for each kind of entry a row may reach: the same
/// bytes for the client (local replies ahead included), the same completion.
#[test]
fn a_run_of_rows_is_what_its_rows_one_by_one_are() {
    type Setup = fn(&mut Pending);
    let setups: [(&str, Setup); 5] = [
        ("forwarded", |p| p.push(Kind::Execute, Action::Forward)),
        ("tracked", |p| {
            p.push(Kind::Execute, Action::Forward);
            p.attach_track(track());
        }),
        ("a local reply ahead", |p| {
            p.push_local(crate::net::messages::parse_complete());
            p.push(Kind::Execute, Action::Forward);
        }),
        ("pgpilot's own Query", |p| p.push(Kind::Query, Action::Suppress)),
        ("a fill's continuation", |p| {
            p.push(Kind::Execute, Action::Forward);
            p.continue_fill();
        }),
    ];
    let run: Vec<u8> = [*b"D\0\0\0\x06ab", *b"D\0\0\0\x06cd", *b"D\0\0\0\x06ef"].concat();
    let done = b"C\0\0\0\x0bSELECT\0";
    for (name, setup) in setups {
        let ways = [true, false].map(|by_run| {
            let (mut p, mut out, mut r) = (Pending::default(), BytesMut::new(), Replies::default());
            setup(&mut p);
            if by_run {
                if p.on_rows(&run, 3, &mut out, &mut r) {
                    out.extend_from_slice(&run);
                }
            } else {
                for frame in run.chunks(7) {
                    if p.on_server(b'D', frame, &mut out, &mut r) {
                        out.extend_from_slice(frame);
                    }
                }
            }
            p.emit_local(&mut out);
            if p.on_server(b'C', done, &mut out, &mut r) {
                out.extend_from_slice(done);
            }
            let rows: Vec<u64> = r.completed.iter().map(|c| c.rows).collect();
            (out, rows, p.is_empty())
        });
        assert_eq!(ways[0], ways[1], "{name}");
    }
}
