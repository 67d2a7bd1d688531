//! The cache's slot on a reply-queue entry: a miss's result copied as it is relayed (`Fill`), the
//! RowDescription of the portal it executes, and the hand-over of a row-limited Execute's fill
//! to pgpilot's own Execute that brings the rest of its rows.

use bytes::Bytes;

use crate::cache::fill::Fill;
use crate::frontend::reply_queue::Attachment;
use crate::protocol::backend as be;

#[derive(Debug, Default)]
pub struct FillSlot {
    /// A result cache miss being captured (Execute or simple Query).
    pub fill: Option<Box<Fill>>,
    /// A Describe of the portal a fill executes: its RowDescription/NoData is kept for the fill.
    pub capture: bool,
    /// pgpilot's own Execute of a portal whose fill the entry before it left suspended: the fill
    /// moves here and takes the rest of the rows.
    pub continues: bool,
}

impl Attachment for FillSlot {
    /// The RowDescription/NoData captured for the next fill (a Describe's entry is not the
    /// Execute's).
    type Shared = Option<Bytes>;
    /// Fills that completed, for the cache stage to store.
    type Events = Vec<Fill>;

    #[inline(always)]
    fn on_frame(&mut self, described: &mut Option<Bytes>, tag: u8, frame: &[u8], _body: &[u8], _: &mut Vec<Fill>) {
        if self.fill.as_mut().is_some_and(|fill| !fill.on_frame(tag, frame)) {
            self.fill = None;
        }
        if self.capture && matches!(tag, be::ROW_DESCRIPTION | be::NO_DATA) {
            *described = Some(Bytes::copy_from_slice(frame));
        }
    }

    #[inline(always)]
    fn on_rows(&mut self, run: &[u8], n: u64) {
        if self.fill.as_mut().is_some_and(|fill| !fill.on_rows(run, n)) {
            self.fill = None;
        }
    }

    /// A suspended fill goes on to the Execute that continues it (or is lost); a finished one
    /// goes to the cache with the RowDescription captured for it.
    #[inline(always)]
    fn complete(self, described: &mut Option<Bytes>, next: Option<&mut Self>, filled: &mut Vec<Fill>) {
        let Some(mut fill) = self.fill else { return };
        if fill.suspended && !fill.done {
            if let Some(next) = next.filter(|e| e.continues) {
                next.fill = Some(fill);
            }
            return;
        }
        if fill.done {
            if fill.row_desc.is_none() {
                fill.row_desc = described.take();
            }
            if fill.row_desc.is_some() {
                filled.push(*fill);
            }
        }
    }

    /// It may be a row of this result or the RowDescription another will take.
    fn unreadable(&mut self) {
        self.fill = None;
    }

    fn unreadable_shared(described: &mut Option<Bytes>) {
        *described = None;
    }

    fn no_events(filled: &Vec<Fill>) -> bool {
        filled.is_empty()
    }
}
