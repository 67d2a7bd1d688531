//! Unit tests of what the stages attach to reply-queue entries, through the session's queue:
//! insights' counts and errors, the cache's capture and its hand-over to a continuation.
use super::*;
use crate::frontend::reply_queue::{Action, Kind};
use bytes::BytesMut;

fn track() -> Box<Track> {
    track_of(&["SELECT 1"])
}

/// A track of a simple Query of these statements.
fn track_of(sqls: &[&str]) -> Box<Track> {
    let now = crate::clock::Stamp::now();
    let statements = sqls.iter().map(|s| (std::sync::Arc::new(crate::sql::parse::opaque(s)), 0)).collect();
    Box::new(Track {
        statements,
        next: 0,
        rows_seen: 0,
        sent: now,
        received: now,
        pipelined: false,
        run_via: Default::default(),
    })
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// Feeds the server's replies; returns the tags the client sees.
fn replies(p: &mut Queue, r: &mut Events, frames: &[Vec<u8>]) -> String {
    let mut out = BytesMut::new();
    let mut seen = String::new();
    for f in frames {
        if p.on_server(f[0], f, &mut out, r) {
            seen.push(f[0] as char);
        }
    }
    seen
}

#[test]
fn what_a_stage_attaches_goes_to_the_entry_just_pushed_or_nowhere() {
    let mut p = Queue::default();
    p.push(Kind::Execute, Action::Forward);
    p.begin_message(); // a message that gets no entry of its own (Flush)
    p.attach(|a| a.track = TrackSlot(Some(track())));
    let mut r = Events::default();
    replies(&mut p, &mut r, &[frame(b'C', b"SELECT 1\0")]);
    assert!(r.attached.completed.is_empty(), "not attached to an earlier message's entry");

    p.begin_message();
    p.push(Kind::Execute, Action::Forward);
    p.attach(|a| a.track = TrackSlot(Some(track())));
    assert!(p.any(|a| a.track.running()));
    replies(&mut p, &mut r, &[frame(b'C', b"SELECT 1\0")]);
    assert_eq!(r.attached.completed.len(), 1);
    assert_eq!(r.attached.completed[0].rows, 1);
    assert!(!p.any(|a| a.track.running()));
}

/// An error inside a simple Query ends the statement running (counted, as an error) and the
/// server skips the rest: they are not counted. An error to an Execute ends its statement and
/// the entries up to Sync are skipped without a count.
#[test]
fn an_error_counts_the_failed_statement_and_not_the_skipped_ones() {
    let (mut p, mut r) = (Queue::default(), Events::default());
    p.push(Kind::Query, Action::Forward);
    p.attach(|a| a.track = TrackSlot(Some(track_of(&["SELECT 1", "SELECT 2", "SELECT 3"]))));
    let err = crate::net::messages::stale_plan_error().to_vec();
    let seen = replies(&mut p, &mut r, &[frame(b'C', b"SELECT 1\0"), err.clone(), frame(b'Z', b"I")]);
    assert_eq!(seen, "CEZ");
    let got: Vec<(u64, bool)> = r.attached.completed.iter().map(|c| (c.rows, c.error)).collect();
    assert_eq!(got, [(1, false), (0, true)]);
    assert!(p.is_empty());

    let mut r = Events::default();
    for _ in 0..2 {
        p.push(Kind::Execute, Action::Forward);
        p.attach(|a| a.track = TrackSlot(Some(track())));
    }
    p.push(Kind::Sync, Action::Forward);
    assert_eq!(replies(&mut p, &mut r, &[err, frame(b'Z', b"I")]), "EZ");
    let got: Vec<(u64, bool)> = r.attached.completed.iter().map(|c| (c.rows, c.error)).collect();
    assert_eq!(got, [(0, true)], "the second Execute was skipped by the server");
    assert!(p.is_empty());
}

async fn plan() -> Box<crate::cache::FillPlan> {
    crate::cache::fill::plan_for_tests().await
}

/// fetchrow's run: pgpilot's Describe of the portal (hidden; its RowDescription captured), the
/// client's Execute with a limit of 1 (suspended), pgpilot's own Execute bringing the rest
/// (hidden), Sync. The fill moves to the continuation and completes there, with the captured
/// description; the client sees only its own replies.
#[tokio::test]
async fn a_suspended_fill_moves_to_its_continuation_and_completes_with_the_captured_description() {
    let (mut p, mut r) = (Queue::default(), Events::default());
    p.push(Kind::DescribePortal, Action::Suppress);
    p.attach(|a| a.fill.capture = true);
    p.push(Kind::Execute, Action::Forward);
    let fill = crate::cache::fill::Fill::new(plan().await, false, 1 << 20);
    p.attach(|a| a.fill.fill = Some(fill));
    p.push(Kind::Execute, Action::Suppress);
    p.hide_replies();
    p.attach(|a| a.fill.continues = true);
    p.push(Kind::Sync, Action::Forward);
    let row = |v: u8| frame(b'D', &[0, 1, 0, 0, 0, 1, v]);
    let desc = frame(b'T', b"\0\x01id\0\0\0\0\0\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0");
    let seen = replies(&mut p, &mut r, &[desc.clone(), row(1), frame(b's', b""), row(2), frame(b'C', b"SELECT 1\0")]);
    assert_eq!(seen, "Ds", "the hidden Describe's and continuation's replies are not the client's");
    assert_eq!(replies(&mut p, &mut r, &[frame(b'Z', b"I")]), "Z");
    assert!(p.is_empty());
    let [fill] = r.attached.filled.as_slice() else { panic!("one fill: {}", r.attached.filled.len()) };
    assert_eq!(fill.rows, 2);
    assert_eq!(fill.row_desc.as_deref(), Some(&desc[..]), "the Describe's capture");
}

/// A reply too large to read streams past: no fill in flight is stored (it may have missed a
/// row), nor is a description captured before it used for a fill behind it (it may be another's).
#[tokio::test]
async fn an_unreadable_reply_drops_the_fills_in_flight_and_the_captured_description() {
    let desc = frame(b'T', b"\0\x01id\0\0\0\0\0\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0");
    let (mut p, mut r) = (Queue::default(), Events::default());
    p.push(Kind::Query, Action::Forward);
    let fill = crate::cache::fill::Fill::new(plan().await, true, 1 << 20);
    p.attach(|a| a.fill.fill = Some(fill));
    replies(&mut p, &mut r, &[desc.clone(), frame(b'D', &[0, 1, 0, 0, 0, 1, 7])]);
    p.reply_unreadable();
    replies(&mut p, &mut r, &[frame(b'C', b"SELECT 1\0"), frame(b'Z', b"I")]);
    assert!(r.attached.filled.is_empty() && p.is_empty());

    // The extended way: the Describe's RowDescription is captured (Describe, Flush), then a
    // reply streams past unread before the Execute comes: the capture may not be the portal's.
    for unreadable in [false, true] {
        let (mut p, mut r) = (Queue::default(), Events::default());
        p.push(Kind::DescribePortal, Action::Forward);
        p.attach(|a| a.fill.capture = true);
        replies(&mut p, &mut r, std::slice::from_ref(&desc));
        if unreadable {
            p.reply_unreadable();
        }
        p.push(Kind::Execute, Action::Forward);
        let fill = crate::cache::fill::Fill::new(plan().await, false, 1 << 20);
        p.attach(|a| a.fill.fill = Some(fill));
        p.push(Kind::Sync, Action::Forward);
        replies(&mut p, &mut r, &[frame(b'C', b"SELECT 0\0"), frame(b'Z', b"I")]);
        assert_eq!(r.attached.filled.len(), usize::from(!unreadable), "unreadable: {unreadable}");
    }
}

/// A run sent again unseen after its Bind met a stale copy (reply_retry.rs): the swallowed
/// error is not the attachment's (the client never sees that execution); the second run's
/// replies are.
#[test]
fn an_error_swallowed_for_a_retry_is_not_seen_by_the_attachment() {
    let registry = crate::prepared::Registry::new(10);
    let stmt = registry.get_or_insert(b"SELECT 1", b"\0\0", 0).unwrap();
    let (mut p, mut r) = (Queue::default(), Events::default());
    let mut sout = BytesMut::new();
    crate::net::messages::bind(&mut sout, b"", &stmt.server_name, b"\0\0\0\0\0\0");
    p.push(Kind::Bind, Action::Bind { stmt: stmt.clone() });
    p.attach(|a| a.track = TrackSlot(Some(track())));
    p.arm_retry(0, bytes::Bytes::new());
    sout.extend_from_slice(b"S\0\0\0\x04");
    p.push(Kind::Sync, Action::Forward);
    p.sync_sent(&sout);
    let err = crate::net::messages::stale_plan_error().to_vec();
    assert_eq!(replies(&mut p, &mut r, &[err]), "", "swallowed");
    assert!(p.take_resend().is_some() && p.swallows_ready());
    assert!(r.attached.completed.is_empty(), "the failed run is not counted");
    assert!(p.any(|a| a.track.running()), "the Bind's entry waits for the second run");
}

/// Every entry is moved into the queue and out of it once per message: kept small with the
/// session's attachment on it.
#[test]
fn a_queue_entry_stays_small() {
    let size = crate::frontend::reply_queue::entry_size::<Attached>();
    assert!(size <= 96, "{size}");
}

/// A run of rows taken at once is what its rows one by one would be: counted for insights,
/// shown unless the entry hides its replies, and the entry still open for its completion.
#[test]
fn a_run_of_rows_counts_and_shows_as_its_rows_would() {
    let run: Vec<u8> = [*b"D\0\0\0\x04", *b"D\0\0\0\x04", *b"D\0\0\0\x04"].concat();
    let (mut out, mut r) = (BytesMut::new(), Events::default());
    let mut p = Queue::default();
    p.push(Kind::Execute, Action::Forward);
    p.attach(|a| a.track = TrackSlot(Some(track())));
    assert!(p.on_rows(&run, 3, &mut out, &mut r), "the client's rows");
    assert!(p.on_rows(&run[..5], 1, &mut out, &mut r));
    p.on_server(b'C', b"C\0\0\0\x0bSELECT\0", &mut out, &mut r);
    assert_eq!(r.attached.completed.len(), 1, "the rows did not complete the entry; the CommandComplete did");
    assert_eq!(r.attached.completed[0].rows, 4, "a tag without a count: the rows seen");
    assert!(p.is_empty());

    p.push(Kind::Query, Action::Suppress); // pgpilot's own Query: its rows are not the client's
    assert!(!p.on_rows(&run, 3, &mut out, &mut r));
    assert!(out.is_empty());
    assert!(Queue::default().on_rows(&run, 3, &mut out, &mut r), "nothing expected: relayed as on_server does");
}

/// `on_rows` against `on_server` row by row, for each kind of entry a row may reach: the same
/// bytes for the client (local replies ahead included), the same completion.
#[test]
fn a_run_of_rows_is_what_its_rows_one_by_one_are() {
    type Setup = fn(&mut Queue);
    let setups: [(&str, Setup); 5] = [
        ("forwarded", |p| p.push(Kind::Execute, Action::Forward)),
        ("tracked", |p| {
            p.push(Kind::Execute, Action::Forward);
            p.attach(|a| a.track = TrackSlot(Some(track())));
        }),
        ("a local reply ahead", |p| {
            p.push_local(crate::net::messages::parse_complete());
            p.push(Kind::Execute, Action::Forward);
        }),
        ("pgpilot's own Query", |p| p.push(Kind::Query, Action::Suppress)),
        ("a fill's continuation", |p| {
            p.push(Kind::Execute, Action::Forward);
            p.hide_replies();
            p.attach(|a| a.fill.continues = true);
        }),
    ];
    let run: Vec<u8> = [*b"D\0\0\0\x06ab", *b"D\0\0\0\x06cd", *b"D\0\0\0\x06ef"].concat();
    let done = b"C\0\0\0\x0bSELECT\0";
    for (name, setup) in setups {
        let ways = [true, false].map(|by_run| {
            let (mut p, mut out, mut r) = (Queue::default(), BytesMut::new(), Events::default());
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
            let rows: Vec<u64> = r.attached.completed.iter().map(|c| c.rows).collect();
            (out, rows, p.is_empty())
        });
        assert_eq!(ways[0], ways[1], "{name}");
    }
}
