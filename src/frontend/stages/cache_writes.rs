//! Invalidation from the session's point of view: the tables each statement may write are noted
//! when it is sent, and become invalidations only when the server reports the transaction
//! committed (a COMMIT tag, or ReadyForQuery 'I' ending an implicit transaction without error);
//! a rollback invalidates nothing. The invalidation is applied, and Redis told, before the
//! client sees the ReadyForQuery that tells it its commit happened.

use crate::cache::scopes::{self, WriteList, Written};
use crate::protocol::backend::{self as be, tx_status};
use crate::sql::{Analysis, CacheEffect, WriteScope};

/// Tables a group of statements may write (`all`: any table of the database), and whether it
/// opened a snapshot transaction (REPEATABLE READ / SERIALIZABLE: no cache inside).
#[derive(Default, Debug)]
struct Segment {
    tables: WriteList,
    all: bool,
    strict: bool,
}

impl Segment {
    fn is_empty(&self) -> bool {
        self.tables.is_empty() && !self.all && !self.strict
    }

    /// Takes `other`'s writes in (into an empty list they move).
    fn absorb(&mut self, other: Segment) {
        if other.is_empty() {
            return;
        }
        self.all |= other.all;
        self.strict |= other.strict;
        if self.tables.is_empty() {
            self.tables = other.tables;
            return;
        }
        for t in other.tables {
            scopes::add(&mut self.tables, t);
        }
    }
}

/// A group of statements sent (or being built) and not settled: how many of `Writes::pending`'s
/// entries are its, and what it does beyond them. Groups settle oldest first, so the oldest
/// one's writes are always `pending`'s first `len`: a group is a count, not a list of its own
/// (a list moved into the queue and out again cost every write statement ~100 instructions).
#[derive(Default, Debug, Clone, Copy)]
struct Group {
    len: u32,
    all: bool,
    strict: bool,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.len == 0 && !self.all && !self.strict
    }

    /// Takes in the group sent just before it (whose writes precede its own in `pending`).
    fn join(&mut self, older: Group) {
        (self.len, self.all, self.strict) = (older.len + self.len, older.all | self.all, older.strict | self.strict);
    }
}

/// Writes by where they stand. Clients pipeline (tokio-postgres sends the next Query before the
/// last ReadyForQuery arrived), so writes are grouped per Sync/Query and each ReadyForQuery
/// settles the oldest group, never the ones sent after it.
#[derive(Default)]
pub struct Writes {
    /// The writes of the groups in `sent`, oldest first, then of `building`'s (kept in place
    /// until their group settles; the buffer is reused).
    pending: Vec<Written>,
    /// Statements sent since the last Sync/Query.
    building: Group,
    /// Groups sent, each ended by a Sync/Query whose ReadyForQuery has not come back.
    sent: std::collections::VecDeque<Group>,
    /// Groups sent that wrote nothing, all older than those in `sent`: a read-only session
    /// (most of them) counts its groups instead of queueing them.
    quiet: u32,
    /// Acknowledged writes of the open transaction block.
    in_tx: Segment,
    /// Committed, not yet invalidated.
    committed: Segment,
    /// An ErrorResponse in the oldest group's replies.
    error: bool,
    /// The last transaction-ending tag in the oldest group's replies: Some(true) COMMIT.
    ended: Option<bool>,
    /// Something was noted since a ReadyForQuery last found nothing in flight: false means
    /// `building`, `sent` and `in_tx` hold no writes (every write enters through `building`, which
    /// sets it), so a read-only session's `clean` is one test instead of a walk over three lists.
    noted: bool,
}

impl Writes {
    /// Nothing written (or snapshot-isolated) in the open transaction: its reads may use the cache.
    #[inline]
    pub fn clean(&self) -> bool {
        !self.noted || self.clean_walked()
    }

    fn clean_walked(&self) -> bool {
        self.building.is_empty()
            && self.in_tx.is_empty()
            && (self.sent.is_empty() || self.sent.iter().all(Group::is_empty))
    }

    /// The oldest group sent and not settled, as a list of its own (a copy).
    fn oldest(&self) -> Segment {
        match self.sent.front() {
            Some(g) if self.quiet == 0 => {
                Segment { tables: self.pending[..g.len as usize].iter().cloned().collect(), all: g.all, strict: false }
            }
            _ => Segment::default(),
        }
    }

    pub fn note_unknown(&mut self) {
        self.building.all = true;
        self.noted = true;
    }

    /// Tables (or keys of them) a statement being sent may write (no duplicates within the
    /// group; past `scopes::MAX_KEYS`, `scopes::add`'s rule on the group's list).
    fn note(&mut self, written: impl IntoIterator<Item = Written>) {
        self.noted = true;
        for w in written {
            let start = self.pending.len() - self.building.len as usize;
            if self.building.len as usize >= scopes::MAX_KEYS {
                let mut group: WriteList = self.pending.drain(start..).collect();
                scopes::add(&mut group, w);
                self.building.len = group.len() as u32;
                self.pending.extend(group);
            } else if !self.pending[start..].iter().any(|n| n.covers(&w)) {
                self.pending.push(w);
                self.building.len += 1;
            }
        }
    }

    /// A Sync or Query was forwarded: what was sent so far is settled by its ReadyForQuery.
    #[inline]
    pub fn close_group(&mut self) {
        if self.sent.is_empty() && self.building.is_empty() {
            self.quiet += 1;
        } else {
            self.sent.push_back(std::mem::take(&mut self.building));
        }
    }

    /// The server started COPY IN: the last `syncs` Syncs were sent into it and are ignored, so
    /// their groups are still open (the Sync after CopyDone settles them; their writes are just
    /// before the group being built's, and join it).
    pub fn reopen(&mut self, syncs: u32) {
        for _ in 0..syncs {
            match self.sent.pop_back() {
                Some(g) => self.building.join(g),
                None if self.quiet > 0 => self.quiet -= 1,
                None => break,
            }
        }
    }

    /// The oldest group's end got no ReadyForQuery (the server skipped the Query that ended
    /// it): it becomes part of the group after it (whose writes follow its own in `pending`).
    pub fn join_oldest_to_next(&mut self) {
        if self.quiet > 0 {
            self.quiet -= 1; // (an empty group joins by going away)
            return;
        }
        let Some(g) = self.sent.pop_front() else { return };
        self.sent.front_mut().unwrap_or(&mut self.building).join(g);
    }

    pub fn on_tag(&mut self, tag: u8, body: &[u8]) {
        match tag {
            be::ERROR_RESPONSE => self.error = true,
            be::COMMAND_COMPLETE if !ends_transaction(body) => {}
            be::COMMAND_COMPLETE if body.starts_with(b"COMMIT") || body.starts_with(b"PREPARE TRANSACTION") => {
                self.ended = Some(true);
                // The group's writes before the COMMIT are in it; later ones are counted again
                // when their own transaction ends (a second invalidation costs only a miss).
                let group = self.oldest();
                self.commit(group);
            }
            be::COMMAND_COMPLETE if body.starts_with(b"ROLLBACK") => self.ended = Some(false),
            _ => {}
        }
    }

    /// A ReadyForQuery settles the oldest group: status 'I' ends the transaction (committed
    /// unless it failed or rolled back). True when committed writes await invalidation.
    pub fn on_ready(&mut self, status: u8) -> bool {
        if self.quiet > 0 && status == tx_status::IDLE && (!self.noted || self.in_tx.is_empty()) {
            // A read-only group outside a transaction block settles nothing (the common case;
            // or a COMMIT sent alone, whose tag emptied `in_tx`: nothing may be left in flight).
            self.quiet -= 1;
            self.error = false;
            self.ended = None;
            if self.noted {
                self.noted = !self.clean_walked();
            }
            return !self.committed.is_empty();
        }
        let group = if self.quiet > 0 {
            self.quiet -= 1;
            Group::default()
        } else {
            self.sent.pop_front().unwrap_or_else(|| std::mem::take(&mut self.building))
        };
        if status == tx_status::IDLE {
            if self.ended == Some(false) {
                self.in_tx = Segment::default(); // the block was rolled back
            }
            // Without an error the group's own statements committed, except what a ROLLBACK in
            // it undid; pgpilot does not know their order, so it counts them all. (A read-only
            // group in no transaction block commits nothing: the common case skips the merge.)
            let wrote = !group.is_empty() || !self.in_tx.is_empty();
            if !self.error && wrote {
                self.commit_oldest(group);
            } else {
                self.pending.drain(..group.len as usize);
            }
            self.in_tx = Segment::default();
        } else {
            Self::move_oldest(&mut self.pending, group, &mut self.in_tx);
        }
        self.error = false;
        self.ended = None;
        if self.noted {
            self.noted = !self.clean_walked();
        }
        !self.committed.is_empty()
    }

    /// Moves the oldest group's writes (the first of `pending`) into `into`.
    fn move_oldest(pending: &mut Vec<Written>, group: Group, into: &mut Segment) {
        into.all |= group.all;
        into.strict |= group.strict;
        let writes = pending.drain(..group.len as usize);
        if into.tables.is_empty() && group.len as usize <= scopes::MAX_KEYS {
            // (A group `note` built holds no duplicates and at most MAX_KEYS; one joined from
            // several, by `reopen`, `join_oldest_to_next` or `lost`, goes through `add` below.)
            into.tables.extend(writes);
            return;
        }
        for w in writes {
            scopes::add(&mut into.tables, w);
        }
    }

    /// `commit` for the oldest group, its writes taken from `pending`.
    fn commit_oldest(&mut self, group: Group) {
        let in_tx = std::mem::take(&mut self.in_tx);
        self.committed.absorb(in_tx);
        Self::move_oldest(&mut self.pending, group, &mut self.committed);
        self.committed.strict = false;
    }

    fn commit(&mut self, group: Segment) {
        let in_tx = std::mem::take(&mut self.in_tx);
        self.committed.absorb(in_tx);
        self.committed.absorb(group);
        self.committed.strict = false;
    }
}

/// A CommandComplete tag that ends a transaction block (or a savepoint's part of one): the
/// only ones `on_tag` reads.
#[inline]
pub fn ends_transaction(tag: &[u8]) -> bool {
    // Every CommandComplete is asked: one byte rules out SELECT, INSERT, UPDATE...
    matches!(tag.first(), Some(b'C' | b'R' | b'P'))
        && (tag.starts_with(b"COMMIT") || tag.starts_with(b"ROLLBACK") || tag.starts_with(b"PREPARE TRANSACTION"))
}

impl Writes {
    /// A statement is being sent: note what it may write and what it does to later reads.
    /// True when it changes how the whole session reads (caching must stop for it).
    /// `keys`: the keys of its one table it writes, when known (then only they are invalidated).
    pub fn note_statement(&mut self, a: &Analysis, keys: Option<WriteList>) -> bool {
        match (a.writes, keys) {
            (WriteScope::Nothing, _) => {}
            (WriteScope::Unknown, _) => self.note_unknown(),
            (WriteScope::Tables, Some(keys)) => self.note(keys),
            (WriteScope::Tables, None) => self.note(a.written_names.iter().cloned().map(Written::table)),
        }
        match a.cache_effect {
            CacheEffect::None => false,
            CacheEffect::Transaction => {
                self.building.strict = true;
                self.noted = true;
                false
            }
            CacheEffect::Session => {
                self.building.strict = true;
                self.noted = true;
                true
            }
        }
    }

    /// The server connection was lost: a commit may have happened, so what was sent counts as
    /// committed.
    pub fn lost(&mut self) {
        let mut all = std::mem::take(&mut self.building);
        self.quiet = 0;
        for g in std::mem::take(&mut self.sent).into_iter().rev() {
            all.join(g);
        }
        self.commit_oldest(all);
    }

    /// Committed writes awaiting invalidation: (any table of the database, the tables).
    pub fn take_committed(&mut self) -> Option<(bool, WriteList)> {
        if self.committed.is_empty() {
            return None;
        }
        let done = std::mem::take(&mut self.committed);
        Some((done.all, done.tables))
    }
}

#[cfg(test)]
#[path = "cache_writes_tests.rs"]
mod tests;
