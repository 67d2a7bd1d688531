//! The unnamed portal as the result cache sees it: answered from an entry (Describe, Execute
//! with its row limit, Close), or being captured, with the messages pgpilot puts ahead of the
//! client's for a capture (a Describe it needs for the entry, and the Execute that fetches what
//! a row limit left).

use std::sync::Arc;

use bytes::BytesMut;

use super::Cx;
use crate::cache::{Entry, FillPlan};
use crate::frontend::reply_queue::{Action, Kind};
use crate::net::messages;
use crate::protocol::frontend::{self as fe, ClientMessage, Target};

/// What the unnamed portal holds, as far as the cache is concerned.
#[derive(Default)]
pub enum Portal {
    #[default]
    Unknown,
    /// Answered from this entry; `at` is the byte offset of the next DataRow to send.
    Hit { entry: Arc<Entry>, at: usize },
    /// Forwarded; its result is captured when it is executed. `continuable`: nothing before it in
    /// this Sync's group ran or wrote, so a hidden Execute may fetch what a row limit leaves.
    Fill { plan: Box<FillPlan>, described: bool, continuable: bool },
    /// A row-limited Execute of a fill was sent: if the client's Sync comes next, pgpilot's own
    /// Execute fetches the rest of the result for the fill first.
    Suspended,
}

/// The most rows pgpilot's own Execute fetches after a row-limited one, for the cache: a
/// `fetchrow` of a read that returns many rows costs the server at most this many more.
const CONTINUATION_ROWS: u32 = 1000;

impl Portal {
    pub fn describe(&self, cx: &mut Cx<'_>) {
        if let Portal::Hit { entry, .. } = self {
            cx.answer(entry.row_desc.clone());
        }
    }

    /// Execute of a portal answered from the cache, honouring the row limit (PortalSuspended).
    pub fn execute(&mut self, cx: &mut Cx<'_>, max_rows: usize) {
        let Portal::Hit { entry, at } = self else { return };
        let (end, rows, more) = entry.split_rows(*at, max_rows);
        let mut reply = BytesMut::from(&entry.body[*at..end]);
        if more {
            reply.extend_from_slice(&messages::portal_suspended());
        } else if *at == 0 {
            reply.extend_from_slice(&entry.body[end..]);
        } else {
            // After a PortalSuspended, the server's tag counts the rows of this Execute only.
            reply.extend_from_slice(&messages::command_complete_frame(&format!("SELECT {rows}")));
        }
        *at = end;
        cx.answer(reply.freeze());
    }

    pub fn close(&mut self, cx: &mut Cx<'_>, target: Target<'_>) {
        if target == Target::Portal(b"") && matches!(self, Portal::Hit { .. }) {
            *self = Portal::Unknown;
            cx.answer(messages::close_complete());
        }
    }

    /// Just before `msg` is forwarded. An Execute of a filling portal the client did not
    /// describe gets pgpilot's own Describe ahead of it (its reply hidden), so the entry can
    /// answer a later Describe. A Sync right after a row-limited Execute of a fill gets pgpilot's
    /// own Execute of the portal ahead of it, bringing the rows the limit left (hidden from the
    /// client; if it fails, only the fill is lost: nothing in the group wrote (`clean`), and the
    /// Sync ends the implicit transaction either way).
    pub fn on_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>, clean: bool) {
        match (&*self, msg) {
            (Portal::Suspended, _) => {
                *self = Portal::Unknown;
                if matches!(msg, ClientMessage::Sync) && clean {
                    messages::execute(cx.sout, b"", CONTINUATION_ROWS);
                    cx.pending.push(Kind::Execute, Action::Suppress);
                    cx.pending.hide_replies();
                    cx.pending.attach(|a| a.fill.continues = true);
                    cx.tx.on_client(fe::EXECUTE);
                }
            }
            (Portal::Fill { described: false, .. }, ClientMessage::Execute { portal: b"", .. }) => {
                messages::describe_portal(cx.sout, b"");
                cx.pending.push(Kind::DescribePortal, Action::Suppress);
                cx.pending.attach(|a| a.fill.capture = true);
                cx.tx.on_client(fe::DESCRIBE);
            }
            _ => {}
        }
    }
}
