//! What the session tells the insights: which statement each portal runs, and each statement's
//! completion. Only Bind, Close, Execute and Query are looked at.

use std::time::Instant;

use super::reply_queue::Track;
use super::session::Session;
use crate::insights::stats::log_if_slow;
use crate::insights::Completed;
use crate::protocol::frontend::{ClientMessage, Target};
use crate::sql::tokens::fnv1a;

impl Session {
    /// Bind and Close of a portal: remember which statement each portal runs (the statement
    /// table already knows each statement's analysis).
    pub(super) fn note_portal(&mut self, msg: &ClientMessage<'_>) {
        if !self.observe.enabled {
            return;
        }
        match *msg {
            ClientMessage::Bind { portal, rest, .. } => {
                let analysis = self.turn.statement.as_ref().and_then(|e| e.analysis.clone());
                self.portals.bind(portal, analysis.map(|a| (a, fnv1a(rest))));
            }
            ClientMessage::Close(Target::Portal(name)) => self.portals.close(name),
            _ => {}
        }
    }

    /// The statements an Execute or a simple Query runs, for its reply-queue entry.
    pub(super) fn track_for(&mut self, msg: &ClientMessage<'_>) -> Option<Box<Track>> {
        if !self.observe.enabled {
            return None;
        }
        let statements = match *msg {
            ClientMessage::Execute { portal, .. } => vec![self.portals.run(portal)?],
            ClientMessage::Query { .. } => std::mem::take(&mut self.turn.analyzed),
            _ => return None,
        };
        Some(Box::new(Track {
            statements,
            next: 0,
            rows_seen: 0,
            sent: Instant::now(),
            received: self.observe.received,
            pipelined: self.pending.running(),
        }))
    }

    pub(super) fn on_completed(&mut self, c: Completed) {
        self.app.query_stats.record(&self.observe.origin, &c);
        if log_if_slow(&self.observe.origin, &c, self.observe.slow) {
            crate::metrics::slow_query();
        }
        self.observe.detector.observe(&c, &self.observe.rules, &self.observe.origin, &self.app.findings);
    }
}

/// The session's insights state.
pub struct Observe {
    pub enabled: bool,
    pub origin: crate::insights::Origin,
    pub rules: crate::insights::nplus1::Rules,
    pub slow: std::time::Duration,
    pub detector: crate::insights::nplus1::Detector,
    /// When the client's latest bytes arrived (client-observed time starts here).
    pub received: Instant,
}

impl Observe {
    pub fn new(cfg: &crate::config::InsightsConfig, origin: crate::insights::Origin) -> Self {
        Self {
            enabled: cfg.enabled,
            origin,
            rules: crate::insights::nplus1::Rules::from_config(cfg),
            slow: std::time::Duration::from_millis(cfg.slow_query_ms),
            detector: Default::default(),
            received: Instant::now(),
        }
    }
}
