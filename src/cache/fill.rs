//! A result being captured on its way to the client (a miss): the reply frames are copied as
//! they are relayed, and handed to the cache once the statement completed with nothing unusual
//! in between (no error, notice or oversized row).
//!
//! A row-limited Execute (asyncpg's `fetchrow`/`fetchval` send a limit of 1) ends in
//! PortalSuspended: the fill is then `suspended` and completes only if pgpilot's own hidden
//! Execute of the same portal (sent before the client's Sync) brings the rest of the rows. The
//! entry must hold the whole result, because a later hit may be executed without a limit; its
//! CommandComplete then counts every row, as the server's would for one unlimited Execute.

use bytes::{Bytes, BytesMut};

use super::FillPlan;
use crate::protocol::backend as be;

#[derive(Debug)]
pub struct Fill {
    pub plan: Box<FillPlan>,
    /// Simple Query: the RowDescription comes in the same reply; extended: from a Describe.
    simple: bool,
    pub row_desc: Option<Bytes>,
    pub body: BytesMut,
    pub rows: u32,
    pub done: bool,
    /// The client's Execute ended in PortalSuspended; the rest comes with pgpilot's continuation.
    pub suspended: bool,
    limit: usize,
}

impl Fill {
    pub fn new(mut plan: Box<FillPlan>, simple: bool, limit: usize) -> Box<Self> {
        plan.sent();
        Box::new(Self {
            plan,
            simple,
            row_desc: None,
            body: BytesMut::new(),
            rows: 0,
            done: false,
            suspended: false,
            limit,
        })
    }

    /// Takes one reply frame of the statement; false when the result cannot be cached after all.
    pub fn on_frame(&mut self, tag: u8, frame: &[u8]) -> bool {
        if self.done {
            return tag == be::READY_FOR_QUERY;
        }
        match tag {
            be::ROW_DESCRIPTION if self.simple && self.row_desc.is_none() => {
                self.row_desc = Some(Bytes::copy_from_slice(frame))
            }
            be::DATA_ROW if self.row_desc.is_some() || !self.simple => {
                self.body.extend_from_slice(frame);
                self.rows += 1;
            }
            be::COMMAND_COMPLETE if self.suspended => {
                // The continuation's tag counts only its own rows: the entry's counts them all.
                let Some(whole) = counted(frame, self.rows) else { return false };
                self.body.extend_from_slice(&whole);
                self.done = true;
            }
            be::COMMAND_COMPLETE if self.row_desc.is_some() || !self.simple => {
                self.body.extend_from_slice(frame);
                self.done = true;
            }
            be::PORTAL_SUSPENDED if !self.simple && !self.suspended => self.suspended = true,
            _ => return self.abandoned(),
        }
        if self.body.len() > self.limit {
            super::CacheStats::bump(&self.plan.stats.too_large);
            return self.abandoned();
        }
        true
    }

    /// A run of `n` whole DataRows back to back: what `on_frame` does for each (the limit
    /// checked before the copy: the same outcome, without holding the run past it).
    pub fn on_rows(&mut self, run: &[u8], n: u64) -> bool {
        if self.done || (self.simple && self.row_desc.is_none()) {
            return self.on_frame(be::DATA_ROW, run);
        }
        if self.body.len() + run.len() > self.limit {
            super::CacheStats::bump(&self.plan.stats.too_large);
            return self.abandoned();
        }
        self.body.extend_from_slice(run);
        self.rows = self.rows.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        true
    }

    /// The result cannot be stored after all; a row-limited one counts against its shape.
    fn abandoned(&self) -> bool {
        if self.suspended {
            self.plan.key.learned.cut_short.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        false
    }
}

/// The CommandComplete `frame` ("SELECT 0") with its row count replaced by `rows`.
fn counted(frame: &[u8], rows: u32) -> Option<bytes::Bytes> {
    let tag = crate::protocol::backend::command_tag(frame.get(5..)?)?;
    let verb = std::str::from_utf8(tag).ok()?.trim_end_matches(|c: char| c.is_ascii_digit());
    (verb.len() < tag.len() && verb.ends_with(' '))
        .then(|| crate::net::messages::command_complete_frame(&format!("{verb}{rows}")))
}

/// A miss's plan from an empty cache, for tests of what captures a result.
#[cfg(test)]
pub(crate) async fn plan_for_tests() -> Box<FillPlan> {
    use crate::cache::{Key, KeyParts, Lookup, ResultCache};
    let cache = ResultCache::new(&crate::config::CacheConfig::default(), &Default::default()).expect("cache");
    let sql = "SELECT id FROM t WHERE k = $1";
    let a = crate::sql::parse::analyze(sql, &crate::sql::tokens::shapes(sql)[0].text);
    let db = std::sync::Arc::from("db");
    let parts = KeyParts { proto: b'E', db: &db, user: "u", settings: 0, statement: b"s", variant: 0, args: b"" };
    match cache.lookup(Key::new(parts, &a, std::time::Duration::from_secs(5)), Default::default()).await {
        Lookup::Miss(plan) => plan,
        _ => panic!("an empty cache misses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    async fn plan() -> Box<FillPlan> {
        plan_for_tests().await
    }

    #[tokio::test]
    async fn a_suspended_fill_takes_the_continuation_and_counts_every_row() {
        let mut fill = Fill::new(plan().await, false, 1 << 20);
        let row = |v: u8| frame(b'D', &[0, 1, 0, 0, 0, 1, v]);
        assert!(fill.on_frame(b'D', &row(1)));
        assert!(fill.on_frame(b's', &frame(b's', b"")));
        assert!(fill.suspended && !fill.done);
        for v in 2..=3 {
            assert!(fill.on_frame(b'D', &row(v)));
        }
        assert!(fill.on_frame(b'C', &frame(b'C', b"SELECT 2\0")));
        assert!(fill.done);
        let mut want: Vec<u8> = [row(1), row(2), row(3)].concat();
        want.extend_from_slice(&frame(b'C', b"SELECT 3\0"));
        assert_eq!(&fill.body[..], &want[..], "one unlimited Execute's reply");
        assert_eq!(fill.rows, 3);
    }

    #[tokio::test]
    async fn a_run_of_rows_is_taken_as_its_rows_one_by_one() {
        let row = |v: u8| frame(b'D', &[0, 1, 0, 0, 0, 1, v]);
        let run: Vec<u8> = [row(1), row(2), row(3)].concat();
        let (mut by_run, mut by_row) =
            (Fill::new(plan().await, false, 1 << 20), Fill::new(plan().await, false, 1 << 20));
        assert!(by_run.on_rows(&run, 3));
        for v in 1..=3 {
            assert!(by_row.on_frame(b'D', &row(v)));
        }
        assert_eq!((&by_run.body[..], by_run.rows), (&by_row.body[..], by_row.rows));
        let mut small = Fill::new(plan().await, false, run.len() - 1);
        assert!(!small.on_rows(&run, 3), "over the entry limit: not cached");
        assert!(small.body.is_empty(), "nothing copied past the limit");
        let mut simple = Fill::new(plan().await, true, 1 << 20);
        assert!(!simple.on_rows(&run, 3), "rows before a simple Query's RowDescription");
        let mut done = Fill::new(plan().await, false, 1 << 20);
        done.done = true;
        assert!(!done.on_rows(&run, 3), "rows after the completion");
    }

    #[tokio::test]
    async fn a_continuation_that_suspends_again_is_not_stored() {
        let plan = plan().await;
        let learned = plan.key.learned.clone();
        let mut fill = Fill::new(plan, false, 1 << 20);
        assert!(fill.on_frame(b'D', &frame(b'D', &[0, 0])));
        assert!(fill.on_frame(b's', &frame(b's', b"")));
        assert!(fill.on_frame(b'D', &frame(b'D', &[0, 0])));
        assert!(!fill.on_frame(b's', &frame(b's', b"")), "more rows than the continuation fetched");
        assert_eq!(learned.cut_short.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
