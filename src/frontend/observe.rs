//! What the session tells the insights: which statement each name and portal runs, and each
//! statement's completion. Only Parse, Bind, Close, Execute and Query are looked at.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::reply_queue::Track;
use super::session::Session;
use crate::insights::stats::log_if_slow;
use crate::insights::Completed;
use crate::protocol::frontend::{ClientMessage, Target};
use crate::sql::tokens::fnv1a;

impl Session {
    /// Parse, Bind and Close: remember which statement each name and portal runs.
    pub(super) fn note_statement(&mut self, msg: &ClientMessage<'_>) {
        if !self.observe.enabled {
            return;
        }
        let o = &mut self.observe;
        match *msg {
            ClientMessage::Parse { name, .. } => {
                let analysis = o.analyzed.first().map(|(a, _)| a.clone());
                if name.is_empty() {
                    o.unnamed_statement = analysis;
                } else if let Some(a) = analysis {
                    if o.statements.len() < self.app.config.load().prepared.client_max {
                        o.statements.insert(Bytes::copy_from_slice(name), a);
                    }
                }
            }
            ClientMessage::Bind { portal, statement: stmt, rest } => {
                let a = if stmt.is_empty() { o.unnamed_statement.clone() } else { o.statements.get(stmt).cloned() };
                let entry = a.map(|a| (a, fnv1a(rest)));
                if portal.is_empty() {
                    o.unnamed_portal = entry;
                } else if let Some(e) = entry {
                    o.portals.insert(Bytes::copy_from_slice(portal), e);
                }
            }
            ClientMessage::Close(Target::Statement(name)) => {
                o.statements.remove(name);
            }
            ClientMessage::Close(Target::Portal(name)) => {
                o.portals.remove(name);
            }
            _ => {}
        }
    }

    /// The statements an Execute or a simple Query runs, for its reply-queue entry.
    pub(super) fn track_for(&mut self, msg: &ClientMessage<'_>) -> Option<Box<Track>> {
        if !self.observe.enabled {
            return None;
        }
        let statements = match *msg {
            ClientMessage::Execute { portal: b"", .. } => vec![self.observe.unnamed_portal.clone()?],
            ClientMessage::Execute { portal, .. } => vec![self.observe.portals.get(portal).cloned()?],
            ClientMessage::Query { .. } => std::mem::take(&mut self.observe.analyzed),
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
    /// Analyses of the Query/Parse text just inspected.
    pub analyzed: crate::sql::Analyzed,
    statements: foldhash::HashMap<Bytes, Arc<crate::sql::Analysis>>,
    unnamed_statement: Option<Arc<crate::sql::Analysis>>,
    portals: foldhash::HashMap<Bytes, (Arc<crate::sql::Analysis>, u64)>,
    unnamed_portal: Option<(Arc<crate::sql::Analysis>, u64)>,
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
            analyzed: Vec::new(),
            statements: Default::default(),
            unnamed_statement: None,
            portals: Default::default(),
            unnamed_portal: None,
        }
    }
}
