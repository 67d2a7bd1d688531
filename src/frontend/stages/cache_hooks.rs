//! The cache stage's hooks (`Stage` for `CacheStage`): a child module of `cache`, which it
//! shares the stage's fields with.

use super::*;
use crate::protocol::backend::tx_status;

impl Stage for CacheStage {
    type Event = Fill;

    async fn before_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>) {
        if let Some(planned) = self.plan(cx, msg) {
            self.look_up(cx, planned).await;
        }
    }

    /// Just before a message is forwarded: pgpilot's own Describe or Execute of a filling
    /// portal may go ahead of it (`Portal::on_send`).
    fn on_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>) {
        let clean = self.writes.clean();
        self.portal.on_send(cx, msg, clean);
    }

    /// After a message was forwarded: attach captures to its reply-queue entry.
    fn after_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>, _in_copy: bool) {
        match msg {
            ClientMessage::Query { .. } => {
                if let Some(plan) = self.query_fill.take() {
                    let fill = Fill::new(plan, true, self.cache.max_entry_bytes());
                    cx.pending.attach(|a| a.fill.fill = Some(fill));
                }
            }
            ClientMessage::Describe(Target::Portal(b"")) => {
                if let Portal::Fill { described, .. } = &mut self.portal {
                    *described = true;
                    cx.pending.attach(|a| a.fill.capture = true);
                }
            }
            ClientMessage::Execute { portal: b"", max_rows } => {
                if let Portal::Fill { plan, continuable, .. } = std::mem::take(&mut self.portal) {
                    let fill = Fill::new(plan, false, self.cache.max_entry_bytes());
                    cx.pending.attach(|a| a.fill.fill = Some(fill));
                    if *max_rows > 0 && continuable {
                        self.portal = Portal::Suspended;
                    }
                }
            }
            _ => {}
        }
    }

    /// What was sent since the last boundary is one group of writes (a Sync sent into COPY IN
    /// is ignored by the server: its group stays open).
    fn at_boundary(&mut self, msg: &ClientMessage<'_>, in_copy: bool) {
        if !(in_copy && matches!(msg, ClientMessage::Sync)) {
            self.writes.close_group();
        }
    }

    /// With the cache on, CommandComplete and ErrorResponse settle the oldest group of writes;
    /// CopyInResponse reopens the groups whose Syncs went into the COPY.
    ///
    /// A COMMIT tag while DDL is pending marks its commit (under COMMIT AND CHAIN the status
    /// stays 'T': without the tag, the commit would be seen only when the chain ends).
    fn on_server_message(&mut self, cx: &mut Cx<'_>, tag: u8, body: &[u8]) {
        if tag == be::COMMAND_COMPLETE && self.ddl_pending && body.starts_with(b"COMMIT") {
            // Out of date here at once (the group's later statements may run long); the other
            // replicas are told at its ReadyForQuery.
            self.cache.relations.mark_stale(&self.database);
            self.ddl_committed = true;
        }
        if !self.on {
            return;
        }
        match tag {
            be::COMMAND_COMPLETE | be::ERROR_RESPONSE => self.writes.on_tag(tag, body),
            be::COPY_IN_RESPONSE => self.on_copy_in(cx),
            _ => {}
        }
    }

    /// ReadyForQuery, before it is passed on: committed writes invalidate now, and DDL that may
    /// have committed is announced (`list_outdated`), also at a COMMIT AND CHAIN (the DDL stays
    /// pending until the chain ends: DDL sent after the commit in the same group is its
    /// successor's).
    async fn at_ready(&mut self, status: u8) {
        let committed = self.on && self.writes.on_ready(status);
        // (`|`: the flag is taken whenever DDL is pending, the only time it can be set; no store
        // at every ReadyForQuery otherwise.)
        let ddl = self.ddl_pending && (std::mem::take(&mut self.ddl_committed) | (status == tx_status::IDLE));
        if committed || ddl {
            self.settle(committed, ddl).await;
        }
    }

    fn on_reply(&mut self, _cx: &mut Cx<'_>, fill: Fill) {
        let row_desc = fill.row_desc.unwrap_or_default();
        self.cache.store(*fill.plan, row_desc, fill.body.freeze(), fill.rows);
    }

    /// A commit may have happened on the lost connection: what was written is invalid, and DDL
    /// sent on it may have committed.
    async fn on_server_lost(&mut self) {
        if self.on {
            self.writes.lost();
        }
        self.settle(self.on, self.ddl_pending).await;
    }
}
