//! The session's attachment on each reply-queue entry: one slot per stage that expects something
//! back from the server beyond what the client sees (the cache's capture, insights' track). A
//! stage that needs one adds its slot and its events here; the queue itself stays unaware.

use bytes::Bytes;

use super::cache_capture::FillSlot;
use super::insights_track::TrackSlot;
use crate::cache::fill::Fill;
use crate::frontend::reply_queue::{Attachment, Pending, Replies};
use crate::insights::Completed;

#[derive(Debug, Default)]
pub struct Attached {
    pub fill: FillSlot,
    pub track: TrackSlot,
}

/// The reply queue of a session, and the events it hands back.
pub type Queue = Pending<Attached>;
pub type Events = Replies<Attached>;

/// Each slot's events, for its stage.
#[derive(Debug, Default)]
pub struct SlotEvents {
    /// Result cache fills that completed.
    pub filled: Vec<Fill>,
    /// Tracked statements that finished (insights).
    pub completed: Vec<Completed>,
}

impl Attachment for Attached {
    type Shared = Option<Bytes>;
    type Events = SlotEvents;

    #[inline(always)]
    fn on_frame(&mut self, shared: &mut Option<Bytes>, tag: u8, frame: &[u8], body: &[u8], ev: &mut SlotEvents) {
        self.track.on_frame(&mut (), tag, frame, body, &mut ev.completed);
        self.fill.on_frame(shared, tag, frame, body, &mut ev.filled);
    }

    #[inline(always)]
    fn on_rows(&mut self, run: &[u8], n: u64) {
        self.track.on_rows(run, n);
        self.fill.on_rows(run, n);
    }

    #[inline(always)]
    fn complete(self, shared: &mut Option<Bytes>, mut next: Option<&mut Self>, ev: &mut SlotEvents) {
        self.track.complete(&mut (), next.as_deref_mut().map(|n| &mut n.track), &mut ev.completed);
        self.fill.complete(shared, next.map(|n| &mut n.fill), &mut ev.filled);
    }

    fn unreadable(&mut self) {
        self.track.unreadable();
        self.fill.unreadable();
    }

    fn unreadable_shared(shared: &mut Option<Bytes>) {
        FillSlot::unreadable_shared(shared);
    }

    #[inline]
    fn no_events(ev: &SlotEvents) -> bool {
        ev.filled.is_empty() && ev.completed.is_empty()
    }
}

#[cfg(test)]
#[path = "attached_tests.rs"]
mod tests;
