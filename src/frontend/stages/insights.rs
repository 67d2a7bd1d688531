//! The insights stage: which statement each portal runs, each execution's completion (from the
//! reply queue) and the cache's answers, recorded as per-fingerprint statistics, slow-query log
//! lines and N+1 findings.

use std::sync::Arc;

use super::insights_track::{Track, TrackSlot};
use super::{Cx, Stage};
use crate::frontend::statements::Portals;
use crate::insights::nplus1::{Detector, Findings, Rules};
use crate::insights::stats::{log_if_slow, QueryStats};
use crate::insights::{Completed, Origin};
use crate::protocol::frontend::{ClientMessage, Target};
use crate::sql::tokens::params_hash;

pub struct InsightsStage {
    pub enabled: bool,
    origin: Origin,
    rules: Rules,
    slow: std::time::Duration,
    detector: Detector,
    /// Which statement each portal runs (named ones bounded like statements).
    portals: Portals,
    stats: Arc<QueryStats>,
    findings: Arc<Findings>,
}

impl InsightsStage {
    pub fn new(
        cfg: &crate::config::InsightsConfig,
        origin: Origin,
        max_portals: usize,
        (stats, findings): (Arc<QueryStats>, Arc<Findings>),
    ) -> Self {
        Self {
            enabled: cfg.enabled,
            origin,
            rules: Rules::from_config(cfg),
            slow: std::time::Duration::from_millis(cfg.slow_query_ms),
            detector: Detector::default(),
            portals: Portals::new(max_portals),
            stats,
            findings,
        }
    }

    /// The statements an Execute or a simple Query runs, for its reply-queue entry.
    fn track_for(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>) -> Option<Box<Track>> {
        let statements = match *msg {
            ClientMessage::Execute { portal, .. } => smallvec::smallvec![self.portals.run(portal)?],
            ClientMessage::Query { .. } => std::mem::take(&mut cx.turn.analyzed),
            _ => return None,
        };
        Some(Box::new(Track {
            statements,
            next: 0,
            rows_seen: 0,
            sent: crate::clock::Stamp::now(),
            received: cx.received,
            pipelined: cx.pending.any(|a| a.track.running()),
            run_via: cx.turn.run_via,
        }))
    }
}

impl Stage for InsightsStage {
    type Event = Completed;

    /// Bind and Close of a portal: remember which statement each portal runs (the statement
    /// table knows each statement's analysis); an answer from the cache counts as a call.
    async fn before_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>) {
        if !self.enabled {
            return;
        }
        match *msg {
            ClientMessage::Bind { portal, rest, .. } => {
                let analysis = cx.turn.statement.as_ref().and_then(|e| e.analysis.clone());
                self.portals.bind(portal, analysis.map(|a| (a, params_hash(rest))));
            }
            ClientMessage::Close(Target::Portal(name)) => self.portals.close(name),
            _ => {}
        }
        if let Some(done) = cx.turn.served.take() {
            self.on_reply(cx, done);
        }
    }

    fn after_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>, _in_copy: bool) {
        if !self.enabled || !matches!(msg, ClientMessage::Execute { .. } | ClientMessage::Query { .. }) {
            return;
        }
        if let Some(track) = self.track_for(cx, msg) {
            cx.pending.attach(|a| a.track = TrackSlot(Some(track)));
        }
    }

    fn on_reply(&mut self, _cx: &mut Cx<'_>, c: Completed) {
        self.stats.record(&self.origin, &c);
        // The server-prepared strategy times the unnamed shapes' lone runs (a pipelined run's
        // time includes the statements before it).
        let learned = &c.analysis.learned;
        if !c.cached && !c.error && !c.pipelined && learned.unnamed.load(std::sync::atomic::Ordering::Relaxed) {
            let us = c.server_time.as_micros().min(u64::MAX as u128) as u64;
            crate::prepared::adaptive::note_run(learned, us, c.run_via, crate::clock::wall_ms);
        }
        if log_if_slow(&self.origin, &c, self.slow) {
            crate::metrics::slow_query();
        }
        self.detector.observe(&c, &self.rules, &self.origin, &self.findings);
    }

    fn at_end(&mut self) {
        self.detector.finish(&self.rules, &self.origin, &self.findings);
    }
}
