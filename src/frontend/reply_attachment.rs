//! What a stage registers on a reply-queue entry, behind one interface the queue knows.
//!
//! The queue decides which replies complete which entry and what the client sees; what a stage
//! wants of those replies (insights' row counts and timings, the cache's copy of a result) rides
//! on the entry as an attachment and comes back as the stage's own events. The queue names no
//! stage: the session's attachment (`stages::Attached`) holds one slot per stage that uses one,
//! so a new stage adds a slot there, not a field and a branch here.

/// One stage's part of a reply-queue entry (or all of them together, for the session).
/// Attachments of entries the server never answers (skipped after an error, answered here) are
/// dropped without a word, as the statements they watched never ran.
pub trait Attachment: Default + std::fmt::Debug {
    /// Kept by the queue across entries (the cache's RowDescription, captured by one entry for
    /// the fill of another).
    type Shared: Default + std::fmt::Debug;
    /// What completed attachments hand back to their stage.
    type Events: Default + std::fmt::Debug;

    /// One reply to the entry: every message while it is open, and the ErrorResponse that ends
    /// it (not one the queue swallows to send the run again, `reply_retry.rs`). `body` is the
    /// frame past its header.
    fn on_frame(&mut self, shared: &mut Self::Shared, tag: u8, frame: &[u8], body: &[u8], ev: &mut Self::Events);

    /// `n` whole DataRows back to back (`run`): what `on_frame` does for each of them, at once.
    fn on_rows(&mut self, run: &[u8], n: u64);

    /// The entry got its last reply (not an error); `next` is the entry behind it, which may
    /// take over what this one started.
    fn complete(self, shared: &mut Self::Shared, next: Option<&mut Self>, ev: &mut Self::Events);

    /// A reply too large to inspect streams through: nothing may rely on having seen it.
    fn unreadable(&mut self);

    /// `unreadable` for what the queue keeps across entries.
    fn unreadable_shared(shared: &mut Self::Shared);

    /// No events wait for delivery.
    fn no_events(ev: &Self::Events) -> bool;
}

/// No attachment: the queue alone (its own tests).
impl Attachment for () {
    type Shared = ();
    type Events = ();
    #[inline]
    fn on_frame(&mut self, _: &mut (), _: u8, _: &[u8], _: &[u8], _: &mut ()) {}
    #[inline]
    fn on_rows(&mut self, _: &[u8], _: u64) {}
    #[inline]
    fn complete(self, _: &mut (), _: Option<&mut ()>, _: &mut ()) {}
    fn unreadable(&mut self) {}
    fn unreadable_shared(_: &mut ()) {}
    fn no_events(_: &()) -> bool {
        true
    }
}
