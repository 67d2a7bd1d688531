//! A result being captured on its way to the client (a miss): the reply frames are copied as
//! they are relayed, and handed to the cache once the statement completed with nothing unusual
//! in between (no error, notice, partial fetch or oversized row).

use bytes::{Bytes, BytesMut};

use super::FillPlan;

#[derive(Debug)]
pub struct Fill {
    pub plan: Box<FillPlan>,
    /// Simple Query: the RowDescription comes in the same reply; extended: from a Describe.
    simple: bool,
    pub row_desc: Option<Bytes>,
    pub body: BytesMut,
    pub rows: u32,
    pub done: bool,
    limit: usize,
}

impl Fill {
    pub fn new(mut plan: Box<FillPlan>, simple: bool, limit: usize) -> Box<Self> {
        plan.sent();
        Box::new(Self { plan, simple, row_desc: None, body: BytesMut::new(), rows: 0, done: false, limit })
    }

    /// Takes one reply frame of the statement; false when the result cannot be cached after all.
    pub fn on_frame(&mut self, tag: u8, frame: &[u8]) -> bool {
        if self.done {
            return tag == b'Z';
        }
        match tag {
            b'T' if self.simple && self.row_desc.is_none() => self.row_desc = Some(Bytes::copy_from_slice(frame)),
            b'D' if self.row_desc.is_some() || !self.simple => {
                self.body.extend_from_slice(frame);
                self.rows += 1;
            }
            b'C' if self.row_desc.is_some() || !self.simple => {
                self.body.extend_from_slice(frame);
                self.done = true;
            }
            _ => return false,
        }
        if self.body.len() > self.limit {
            super::CacheStats::bump(&self.plan.stats.too_large);
            return false;
        }
        true
    }
}
