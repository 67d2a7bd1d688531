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
    p.push_local(crate::prepared::messages::parse_complete());
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

#[test]
fn suppressed_replies_are_dropped_and_errors_skip_to_sync() {
    let mut p = Pending::default();
    p.push(Kind::Parse, Action::Suppress);
    p.push(Kind::Bind, Action::Forward);
    p.push(Kind::Execute, Action::Forward);
    p.push_local(crate::prepared::messages::close_complete());
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
    let now = Instant::now();
    Box::new(Track { statements: vec![(a, 0)], next: 0, rows_seen: 0, sent: now, received: now, pipelined: false })
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
