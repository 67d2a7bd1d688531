//! Header-only framing: cut a byte stream at message boundaries (type byte + length) without
//! decoding bodies. Messages the proxy must inspect are returned whole; large messages it does not
//! inspect (DataRow, CopyData, Bind) are streamed through in pieces so memory stays bounded by the
//! read buffer, not by the largest row.

use std::sync::Arc;

use bytes::BytesMut;

use super::budget::Budget;

pub const HEADER_LEN: usize = 5;
/// PostgreSQL's own ceiling for a message (MaxAllocSize).
pub const MAX_MESSAGE_LEN: usize = 0x3fff_ffff;
/// Messages up to this size are always delivered whole (one write for many small messages).
pub const STREAM_THRESHOLD: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A complete message: tag, length and body.
    Whole { tag: u8, frame: BytesMut },
    /// Part of a large message being streamed; `first` marks the part holding its header.
    Part { tag: u8, bytes: BytesMut, first: bool },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(i32),
    #[error("message of type {tag:?} is {len} bytes, more than the {max} allowed")]
    TooLarge { tag: char, len: usize, max: usize },
    #[error("message of type {tag:?} is {len} bytes, more than pgpilot can buffer now (server.max_buffered_bytes)")]
    OverBudget { tag: char, len: usize },
}

/// Per-direction framing state: whether a streamed message is in progress.
pub struct Framer {
    /// Largest message that may be buffered whole for inspection.
    max_inspected: usize,
    streaming: Option<(u8, usize)>,
    /// Where a large message buffered whole takes its bytes from (clients' side only).
    budget: Option<Arc<Budget>>,
    /// Bytes taken from it for the message being assembled.
    held: usize,
}

impl Framer {
    pub fn new(max_inspected: usize) -> Self {
        Self { max_inspected, streaming: None, budget: None, held: 0 }
    }

    /// A framer whose large whole messages count against `budget`.
    pub fn with_budget(max_inspected: usize, budget: Arc<Budget>) -> Self {
        Self { budget: Some(budget), ..Self::new(max_inspected) }
    }

    /// A large message is being assembled (its bytes are counted against the budget).
    pub fn assembling(&self) -> bool {
        self.held > 0
    }

    #[inline]
    fn give_back(&mut self) {
        if self.held > 0 {
            if let Some(budget) = &self.budget {
                budget.give_back(self.held);
            }
            self.held = 0;
        }
    }

    /// True while a streamed message has bytes still to come.
    pub fn mid_message(&self) -> bool {
        self.streaming.is_some()
    }

    /// The tag and length of the whole message at the start of `buf`, when one is there and no
    /// streamed message is in progress: the caller reads it in place and advances `buf` past it
    /// (no handle per message). None for anything else, including an invalid length, which
    /// `next` then reports.
    #[inline]
    pub fn whole_at(&self, buf: &[u8]) -> Option<(u8, usize)> {
        if self.streaming.is_some() {
            return None;
        }
        let (tag, len) = header(buf)?;
        let total = usize::try_from(len).ok().filter(|&l| (4..=MAX_MESSAGE_LEN).contains(&l))? + 1;
        (buf.len() >= total).then_some((tag, total))
    }

    /// The whole message at the start of `buf` when `next` would hand it out whole: the caller
    /// reads it in place and advances `buf` past it. None: `next` decides (parts, errors, more
    /// bytes).
    #[inline]
    pub fn whole_in_place(&mut self, buf: &[u8], inspect: impl Fn(u8) -> bool) -> Option<(u8, usize)> {
        let (tag, total) = self.whole_at(buf)?;
        if inspect(tag) && total - 1 > self.max_inspected {
            return None;
        }
        self.give_back();
        Some((tag, total))
    }

    /// The run of whole `tag` messages back to back at the start of `buf` (a result's rows), up
    /// to the first that ends at or past `limit` bytes: their count and total length. Lets the
    /// relay account for and copy a whole run at once instead of message by message.
    #[inline]
    pub fn run_of(&self, tag: u8, buf: &[u8], limit: usize) -> (u64, usize) {
        let (mut n, mut len) = (0, 0);
        while len < limit.max(1) {
            match self.whole_at(&buf[len..]) {
                Some((t, total)) if t == tag => (n, len) = (n + 1, len + total),
                _ => break,
            }
        }
        (n, len)
    }

    /// Takes the next piece from `buf`, or `None` when more bytes are needed (capacity for the
    /// pending message is then reserved). `inspect(tag)` says which messages must arrive whole.
    pub fn next(&mut self, buf: &mut BytesMut, inspect: impl Fn(u8) -> bool) -> Result<Option<Piece>, FrameError> {
        if let Some((tag, remaining)) = self.streaming {
            if buf.is_empty() {
                return Ok(None);
            }
            let n = remaining.min(buf.len());
            let bytes = buf.split_to(n);
            self.streaming = (remaining > n).then_some((tag, remaining - n));
            return Ok(Some(Piece::Part { tag, bytes, first: false }));
        }
        let Some((tag, len)) = header(buf) else { return Ok(None) };
        if len < 4 {
            return Err(FrameError::BadLength(len));
        }
        let total = len as usize + 1;
        let whole = inspect(tag);
        let max = if whole { self.max_inspected } else { MAX_MESSAGE_LEN };
        if total - 1 > max {
            return Err(FrameError::TooLarge { tag: tag as char, len: total - 1, max });
        }
        if buf.len() >= total {
            self.give_back();
            return Ok(Some(Piece::Whole { tag, frame: buf.split_to(total) }));
        }
        if !whole && total > STREAM_THRESHOLD {
            let bytes = buf.split_to(buf.len());
            self.streaming = Some((tag, total - bytes.len()));
            return Ok(Some(Piece::Part { tag, bytes, first: true }));
        }
        if total > STREAM_THRESHOLD && self.held < total {
            if let Some(budget) = &self.budget {
                if !budget.take(total - self.held) {
                    return Err(FrameError::OverBudget { tag: tag as char, len: total - 1 });
                }
                self.held = total;
            }
        }
        buf.reserve(total - buf.len());
        Ok(None)
    }
}

impl Drop for Framer {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// The tag and declared length at the start of `buf`, once its 5 header bytes are there.
#[inline]
fn header(buf: &[u8]) -> Option<(u8, i32)> {
    let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    Some((h[0], i32::from_be_bytes([h[1], h[2], h[3], h[4]])))
}

/// Body of a whole frame (after tag and length).
pub fn body(frame: &[u8]) -> &[u8] {
    &frame[HEADER_LEN..]
}

/// Reads a NUL-terminated string at the start of a body (the protocol module's reader).
pub use crate::protocol::cstr;

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn whole_at_sees_only_complete_valid_messages() {
        let f = Framer::new(1024);
        let two = [msg(b'D', b"row"), msg(b'C', b"SELECT 1\0")].concat();
        assert_eq!(f.whole_at(&two), Some((b'D', 8)));
        assert_eq!(f.whole_at(&two[8..]), Some((b'C', 14)));
        assert_eq!(f.whole_at(&two[8..20]), None, "incomplete");
        assert_eq!(f.whole_at(&two[..4]), None, "no header yet");
        assert_eq!(f.whole_at(&[b'D', 0, 0, 0, 3]), None, "a length under 4 is next's error to report");
        assert_eq!(f.whole_at(&[b'D', 0xff, 0xff, 0xff, 0xff]), None);
        let mut streaming = Framer::new(1024);
        let mut big = BytesMut::from(&msg(b'D', &vec![0; STREAM_THRESHOLD + 10])[..STREAM_THRESHOLD])[..].into();
        assert!(matches!(streaming.next(&mut big, |_| false), Ok(Some(Piece::Part { first: true, .. }))));
        assert_eq!(streaming.whole_at(&two), None, "mid-message: the rest of the streamed one comes first");
    }

    #[test]
    fn whole_in_place_is_what_next_hands_out_whole() {
        let mut f = Framer::new(12); // (a length counts itself: "select\0" is 11)
        let cases: [(&[u8], bool); 5] = [
            (&msg(b'Q', b"select\0"), true),
            (&msg(b'Q', b"select 1\0"), false), // inspected, over the limit: next's TooLarge
            (&msg(b'd', &[0; 20]), true),       // not inspected: up to MAX_MESSAGE_LEN
            (&msg(b'Q', b"sel")[..6], false),   // incomplete
            (&[b'Q', 0, 0, 0, 3], false),       // a bad length: next's error
        ];
        for (buf, whole) in cases {
            let got = f.whole_in_place(buf, |t| t == b'Q');
            assert_eq!(got.is_some(), whole, "{buf:?}");
            let mut b = BytesMut::from(buf);
            let next = f.next(&mut b, |t| t == b'Q');
            assert_eq!(matches!(next, Ok(Some(Piece::Whole { .. }))), whole, "{buf:?}");
            if let (Some((tag, total)), Ok(Some(Piece::Whole { tag: t, frame }))) = (got, next) {
                assert_eq!((tag, &buf[..total]), (t, &frame[..]));
            }
        }
    }

    #[test]
    fn run_of_counts_whole_messages_of_one_tag() {
        let f = Framer::new(1024);
        let rows = [msg(b'D', b"row"), msg(b'D', b"row2"), msg(b'D', b"r3")].concat();
        let buf = [rows.clone(), msg(b'C', b"SELECT 3\0")].concat();
        assert_eq!(f.run_of(b'D', &buf, usize::MAX), (3, rows.len()), "stops at another tag");
        assert_eq!(f.run_of(b'D', &buf, 1), (1, 8), "at least one, then the limit");
        assert_eq!(f.run_of(b'D', &buf, 9), (2, 17), "the one that crosses the limit is in");
        assert_eq!(f.run_of(b'D', &buf[..20], usize::MAX), (2, 17), "stops at an incomplete one");
        assert_eq!(f.run_of(b'C', &buf, usize::MAX), (0, 0));
        assert_eq!(f.run_of(b'D', &[], usize::MAX), (0, 0));
    }

    #[test]
    fn splits_whole_messages_and_waits_for_partial_ones() {
        let mut f = Framer::new(1024);
        let mut buf = BytesMut::from(&[msg(b'Q', b"select 1\0"), msg(b'S', b"")].concat()[..]);
        buf.extend_from_slice(&msg(b'Q', b"abc\0")[..4]);
        let mut tags = vec![];
        while let Some(Piece::Whole { tag, .. }) = f.next(&mut buf, |_| true).unwrap() {
            tags.push(tag);
        }
        assert_eq!(tags, b"QS");
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn rejects_bad_and_huge_lengths() {
        let mut f = Framer::new(1024);
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 2][..]);
        assert_eq!(f.next(&mut buf, |_| true), Err(FrameError::BadLength(2)));
        let mut buf = BytesMut::from(&[b'Q', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(f.next(&mut buf, |_| true), Err(FrameError::TooLarge { .. })));
        let mut buf = BytesMut::from(&[b'Q', 0x80, 0, 0, 0][..]);
        assert_eq!(f.next(&mut buf, |_| true), Err(FrameError::BadLength(i32::MIN)));
    }

    #[test]
    fn large_whole_messages_take_from_the_budget_until_delivered() {
        let budget = Arc::new(Budget::new(300_000));
        let (mut a, mut b) =
            (Framer::with_budget(1 << 20, budget.clone()), Framer::with_budget(1 << 20, budget.clone()));
        let big = msg(b'Q', &vec![b'x'; 200_000]);
        let mut buf_a = BytesMut::from(&big[..1000]);
        assert_eq!(a.next(&mut buf_a, |_| true), Ok(None));
        assert_eq!(budget.used(), big.len());
        let mut buf_b = BytesMut::from(&big[..1000]);
        assert!(matches!(b.next(&mut buf_b, |_| true), Err(FrameError::OverBudget { tag: 'Q', .. })));
        buf_a.extend_from_slice(&big[1000..]);
        assert!(matches!(a.next(&mut buf_a, |_| true), Ok(Some(Piece::Whole { tag: b'Q', .. }))));
        assert_eq!(budget.used(), 0, "given back once whole");
        assert_eq!(b.next(&mut buf_b, |_| true), Ok(None), "room again");
        drop(b);
        assert_eq!(budget.used(), 0, "a framer dropped mid-message gives its share back");
        let mut small = BytesMut::from(&msg(b'Q', &[b'y'; 1000])[..500]);
        assert_eq!(a.next(&mut small, |_| true), Ok(None));
        assert_eq!(budget.used(), 0, "small messages are not counted");
    }

    #[test]
    fn whole_in_place_gives_the_budget_back() {
        let budget = Arc::new(Budget::new(300_000));
        let mut f = Framer::with_budget(1 << 20, budget.clone());
        let big = msg(b'Q', &vec![b'x'; 200_000]);
        let mut buf = BytesMut::from(&big[..1000]);
        assert_eq!(f.whole_in_place(&buf, |_| true), None, "incomplete: the framer's to wait for");
        assert_eq!(f.next(&mut buf, |_| true), Ok(None));
        assert_eq!(budget.used(), big.len());
        buf.extend_from_slice(&big[1000..]);
        assert_eq!(f.whole_in_place(&buf, |_| true), Some((b'Q', big.len())));
        assert_eq!(budget.used(), 0, "given back once whole, read in place");
    }

    #[test]
    fn streams_large_uninspected_messages() {
        let mut f = Framer::new(1024);
        let big = msg(b'D', &vec![7u8; 200_000]);
        let mut buf = BytesMut::from(&big[..100_000]);
        let Some(Piece::Part { tag: b'D', bytes, first: true }) = f.next(&mut buf, |_| false).unwrap() else {
            panic!("expected the first part")
        };
        assert_eq!(bytes.len(), 100_000);
        assert!(f.mid_message());
        buf.extend_from_slice(&big[100_000..]);
        buf.extend_from_slice(&msg(b'Z', b"I"));
        let Some(Piece::Part { first: false, bytes, .. }) = f.next(&mut buf, |_| false).unwrap() else {
            panic!("expected the rest")
        };
        assert_eq!(bytes.len(), big.len() - 100_000);
        assert!(matches!(f.next(&mut buf, |_| false).unwrap(), Some(Piece::Whole { tag: b'Z', .. })));
    }
}
