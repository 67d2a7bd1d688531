//! Insights' slot on a reply-queue entry: the statements an Execute or a simple Query runs, timed
//! and counted from their replies, handed back as `Completed` executions.

use crate::clock::Stamp;
use crate::frontend::reply_queue::Attachment;
use crate::insights::Completed;
use crate::protocol::backend as be;

/// The statements an Execute (one) or a simple Query (one per statement) runs, for insights.
#[derive(Debug)]
pub struct Track {
    pub statements: crate::sql::Analyzed,
    pub next: usize,
    /// DataRows relayed for the running statement (a PortalSuspended reply carries no count).
    pub rows_seen: u64,
    pub sent: Stamp,
    pub received: Stamp,
    pub pipelined: bool,
    /// How the statement it runs reached the server (the server-prepared strategy's timing).
    pub run_via: crate::prepared::adaptive::Served,
}

impl Track {
    fn complete(&mut self, rows: Option<u64>, error: bool) -> Option<Completed> {
        let (analysis, params) = self.statements.get(self.next)?.clone();
        self.next += 1;
        let rows = rows.unwrap_or(self.rows_seen);
        self.rows_seen = 0;
        let done = Stamp::now();
        let c = Completed {
            analysis,
            params,
            sent: self.sent,
            done,
            server_time: done.saturating_duration_since(self.sent),
            client_time: done.saturating_duration_since(self.received),
            rows,
            error,
            pipelined: self.pipelined,
            cached: false,
            run_via: self.run_via,
        };
        // Statements of one simple Query run back to back: the next one starts now.
        self.sent = done;
        Some(c)
    }
}

/// Boxed: most entries carry none, and every entry is moved in and out of the queue.
#[derive(Debug, Default)]
pub struct TrackSlot(pub Option<Box<Track>>);

impl TrackSlot {
    /// A statement it follows has not finished (the next one sent is then pipelined).
    pub fn running(&self) -> bool {
        self.0.is_some()
    }
}

impl Attachment for TrackSlot {
    type Shared = ();
    type Events = Vec<Completed>;

    /// Each statement completes at its CommandComplete (or PortalSuspended); an error ends the
    /// one running and, in a simple Query, the rest are skipped by the server: not counted.
    #[inline(always)]
    fn on_frame(&mut self, _: &mut (), tag: u8, _frame: &[u8], body: &[u8], ev: &mut Vec<Completed>) {
        let Some(track) = self.0.as_mut() else { return };
        match tag {
            be::DATA_ROW => track.rows_seen += 1,
            be::COMMAND_COMPLETE => ev.extend(track.complete(be::command_rows(body), false)),
            be::PORTAL_SUSPENDED => ev.extend(track.complete(None, false)),
            be::ERROR_RESPONSE => {
                ev.extend(track.complete(Some(0), true));
                track.next = track.statements.len();
            }
            _ => {}
        }
    }

    #[inline(always)]
    fn on_rows(&mut self, _run: &[u8], n: u64) {
        if let Some(track) = self.0.as_mut() {
            track.rows_seen += n;
        }
    }

    /// Everything was counted as it came.
    #[inline(always)]
    fn complete(self, _: &mut (), _: Option<&mut Self>, _: &mut Vec<Completed>) {}

    /// Row counts come from the server's tags; a row streamed past unread does not change them.
    fn unreadable(&mut self) {}

    fn unreadable_shared(_: &mut ()) {}

    fn no_events(ev: &Vec<Completed>) -> bool {
        ev.is_empty()
    }
}
