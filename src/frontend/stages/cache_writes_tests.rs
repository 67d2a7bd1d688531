//! Tests of the write bookkeeping (`cache_writes.rs`): groups, transaction blocks, pipelines,
//! COPY, skipped Queries and lost connections.

use super::*;

fn t(name: &str) -> [Written; 1] {
    [Written::table(std::sync::Arc::from(name))]
}

fn committed(w: &mut Writes) -> Vec<String> {
    std::mem::take(&mut w.committed).tables.iter().map(|w| w.table.to_string()).collect()
}

#[test]
fn a_pipelined_query_is_not_settled_by_the_previous_ready() {
    let mut w = Writes::default();
    w.note(t("a"));
    w.close_group(); // UPDATE a; SELECT 1/0
    w.note(t("b"));
    w.close_group(); // BEGIN; UPDATE b; COMMIT, sent before the first ReadyForQuery
    w.on_tag(b'E', b"");
    assert!(!w.on_ready(b'I'), "the failed implicit transaction commits nothing");
    assert!(!w.clean(), "b is still in flight");
    w.on_tag(b'C', b"BEGIN\0");
    w.on_tag(b'C', b"COMMIT\0");
    assert!(w.on_ready(b'I'));
    assert_eq!(committed(&mut w), ["b"]);
    assert!(w.clean());
}

#[test]
fn clean_stays_false_while_a_write_is_anywhere_and_true_after_it_settled() {
    let mut w = Writes::default();
    assert!(w.clean() && w.clean());
    w.close_group(); // BEGIN
    assert!(!w.on_ready(b'T'));
    w.note(t("a"));
    assert!(!w.clean() && !w.clean(), "being sent");
    w.close_group();
    assert!(!w.clean(), "in flight");
    assert!(!w.on_ready(b'T'));
    assert!(!w.clean() && !w.clean(), "acknowledged in the open block");
    w.close_group(); // COMMIT
    w.on_tag(b'C', b"COMMIT\0");
    assert!(w.on_ready(b'I'));
    assert!(w.clean() && w.clean(), "committed: no longer this transaction's");
    assert!(!w.noted, "a COMMIT sent alone settles the flag too");
    for sql in ["SET LOCAL search_path = x", "SET default_transaction_isolation = 'serializable'"] {
        let mut w = Writes::default();
        let a = crate::sql::parse::analyze(sql, &crate::sql::tokens::shapes(sql)[0].text);
        w.note_statement(&a, None);
        assert!(!w.clean(), "{sql}: a setting the cache must see");
    }
}

#[test]
fn quiet_groups_are_counted_ahead_of_a_write_sent_behind_them() {
    let mut w = Writes::default();
    w.close_group();
    w.close_group(); // two read-only Syncs in flight
    w.note(t("a"));
    w.close_group(); // then a write
    w.close_group(); // and a read behind it
    assert!(!w.on_ready(b'I'), "the first read's ReadyForQuery");
    assert!(!w.clean(), "a is in flight");
    assert!(!w.on_ready(b'I'), "the second read's");
    assert!(w.on_ready(b'I'), "the write's commits a");
    assert_eq!(committed(&mut w), ["a"]);
    assert!(!w.on_ready(b'I'));
    assert!(w.clean());
    w.close_group();
    w.note(t("b"));
    w.close_group();
    w.reopen(1); // the second Sync went into a COPY: b is being built again, after the quiet group
    assert!(!w.on_ready(b'I') && w.committed.is_empty() && !w.clean());
}

#[test]
fn transaction_blocks_savepoints_and_rollbacks() {
    let mut w = Writes::default();
    w.close_group(); // BEGIN
    assert!(!w.on_ready(b'T'));
    w.note(t("a"));
    w.close_group();
    assert!(!w.on_ready(b'T'));
    assert!(!w.clean(), "reads after a write in the block bypass the cache");
    w.close_group(); // ROLLBACK TO SAVEPOINT: tag ROLLBACK, still in the block
    w.on_tag(b'C', b"ROLLBACK\0");
    assert!(!w.on_ready(b'T'));
    w.close_group(); // COMMIT
    w.on_tag(b'C', b"COMMIT\0");
    assert!(w.on_ready(b'I'));
    assert_eq!(committed(&mut w), ["a"]);
    w.note(t("c"));
    w.close_group();
    w.on_tag(b'E', b"");
    assert!(!w.on_ready(b'E'), "the block failed");
    w.close_group();
    w.on_tag(b'C', b"ROLLBACK\0"); // COMMIT of a failed block answers ROLLBACK
    assert!(!w.on_ready(b'I'));
    w.note(t("d"));
    w.close_group(); // BEGIN; UPDATE d; ROLLBACK; UPDATE e in one Query: counted, not lost
    w.on_tag(b'C', b"ROLLBACK\0");
    assert!(w.on_ready(b'I'));
    assert_eq!(committed(&mut w), ["d"]);
    w.note_unknown();
    w.close_group();
    assert!(w.on_ready(b'I'), "an autocommit statement that may write anything");
    assert!(std::mem::take(&mut w.committed).all);
}

#[test]
fn groups_in_place_merge_bound_and_count_when_the_connection_is_lost() {
    let key = |n: u32| Written::key(&std::sync::Arc::from("k"), scopes::WriteKind::Update, &n.to_be_bytes());
    let mut w = Writes::default();
    w.close_group(); // BEGIN
    assert!(!w.on_ready(b'T'));
    for sql in ["a", "a", "b", "a"] {
        w.note(t(sql)); // one statement per Query in the block
        w.close_group();
        assert!(!w.on_ready(b'T'));
    }
    w.note((0..3 * scopes::MAX_KEYS as u32).map(key)); // one statement writing many keys of k
    w.note(t("c"));
    w.close_group();
    assert_eq!(w.pending.len(), 2, "past MAX_KEYS a group's keys become their table");
    assert!(!w.on_ready(b'T'));
    w.close_group(); // COMMIT
    w.on_tag(b'C', b"COMMIT\0");
    assert!(w.on_ready(b'I'));
    assert_eq!(committed(&mut w), ["a", "b", "k", "c"], "each table once");
    assert!(w.pending.is_empty() && w.clean());
    w.note(t("d"));
    w.close_group();
    w.note(t("e"));
    w.close_group();
    w.note(t("f")); // sent, no Sync yet
    w.lost();
    let mut lost = committed(&mut w);
    lost.sort();
    assert_eq!(lost, ["d", "e", "f"], "a commit may have happened: all of it counts");
    assert!(w.pending.is_empty() && w.sent.is_empty());
}

#[test]
fn a_skipped_query_joins_its_group_to_the_next_and_keeps_later_ones_in_step() {
    let mut w = Writes::default();
    w.note(t("x")); // Bind/Execute of a write that fails
    w.note(t("y"));
    w.close_group(); // a Query (UPDATE y) the server will skip
    w.close_group(); // the Sync
    w.on_tag(b'E', b"");
    w.join_oldest_to_next();
    assert!(!w.on_ready(b'I'), "one ReadyForQuery for both: the batch failed, nothing committed");
    w.note(t("z"));
    w.close_group();
    assert!(w.on_ready(b'I'), "z's own ReadyForQuery commits z");
    assert_eq!(committed(&mut w), ["z"]);
    assert!(w.pending.is_empty() && w.sent.is_empty() && w.clean());
    w.close_group(); // a read, then a write sent behind it (pipelined)
    w.note(t("a"));
    w.close_group();
    w.on_tag(b'E', b"");
    w.join_oldest_to_next(); // the read's Query was skipped: the quiet group goes away
    assert!(!w.on_ready(b'I'), "the failed run takes the write's group with it");
    assert!(w.sent.is_empty() && w.pending.is_empty() && w.quiet == 0);
}

#[test]
fn reopened_groups_and_a_commit_with_two_groups_in_flight() {
    let mut w = Writes::default();
    w.note(t("a"));
    w.close_group();
    w.note(t("b"));
    w.close_group(); // its Sync went into a COPY
    w.reopen(1);
    w.note(t("c"));
    w.close_group(); // the Sync after CopyDone
    assert!(w.on_ready(b'I'));
    assert_eq!(committed(&mut w), ["a"]);
    assert!(w.on_ready(b'I'));
    assert_eq!(committed(&mut w), ["b", "c"]);
    w.close_group(); // BEGIN
    assert!(!w.on_ready(b'T'));
    w.note(t("d"));
    w.close_group(); // UPDATE d; COMMIT in one Query
    w.note(t("e"));
    w.close_group(); // a write pipelined behind it
    w.on_tag(b'C', b"COMMIT\0");
    assert_eq!(committed(&mut w), ["d"], "the COMMIT takes its own group only");
    assert!(w.on_ready(b'I'));
    assert_eq!(committed(&mut w), ["d"], "counted again at its ReadyForQuery (a second miss, no harm)");
    assert!(w.on_ready(b'I'));
    assert_eq!(committed(&mut w), ["e"]);
    w.close_group(); // a read in flight
    w.close_group(); // BEGIN
    w.note(t("f"));
    w.close_group();
    assert!(!w.on_ready(b'I') && !w.on_ready(b'T') && !w.on_ready(b'T'));
    w.close_group(); // a quiet group in flight, f acknowledged in the open block
    w.lost();
    assert_eq!(committed(&mut w), ["f"], "the block may have committed");
}
