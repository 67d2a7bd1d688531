//! What the client's SQL does to its session, as the pooling sees it: each Query/Parse text is
//! scanned once (from its statements' parse-tree analyses), its effects on settings, role, pins and
//! prepared statements applied, and the effects of prepared statements applied again at each Bind.

use std::sync::Arc;

use super::session::Session;
use super::sql_scan::Scan;
use crate::config::PoolMode;
use crate::protocol::frontend::{self as fe, ClientMessage};
use crate::sql::two_phase::Phase;

impl Session {
    /// Scans a Query/Parse text once: what it means for pooling, and its analysis, kept for the
    /// Parse/Query bookkeeping that follows. A text read lately, maybe with other literal values
    /// (drivers re-parse unnamed statements; pgbench's simple protocol sends new literals), reuses
    /// that reading. A statement seen before is answered from the analysis cache inline; a new one
    /// is parsed off the I/O threads, and one over `max_analyzed_bytes` not at all.
    pub(super) async fn inspect_sql(&mut self, sql: &[u8]) -> Arc<Scan> {
        let analyze = self.stages.insights.enabled
            || self.stages.cache.on
            || (self.keeping.isolate_attached_code && !self.stages.cache.known_code_free());
        if !analyze && !super::sql_scan::may_matter(sql) {
            return super::sql_scan::nothing();
        }
        let found = if sql.len() > self.reading.analyzer.shared().max_analyzed() {
            self.skip_analysis(sql)
        } else if let Some(known) = self.known_reading(sql) {
            known
        } else {
            self.analyze(sql).await
        };
        self.note_scan(&found);
        found
    }

    /// The two-phase statements of a text whose scan found some, with their identifiers (read
    /// from the text itself: a scan is shared by texts that differ in literals).
    pub(super) fn two_phase_of(&self, sql: &[u8]) -> Option<Arc<[(Phase, String)]>> {
        let text = std::str::from_utf8(sql).ok()?;
        let found = crate::sql::two_phase::statements(text, self.reading.lexing.backslash_quotes);
        (!found.is_empty()).then(|| found.into())
    }

    /// Two-phase commit, as each statement runs (a Query, or a Bind of a prepared one): DDL a
    /// prepared transaction ran takes effect at its COMMIT PREPARED, remembered by identifier at
    /// the PREPARE for any session's commit.
    pub(super) fn note_two_phase(&mut self, statements: &[(Phase, String)]) {
        for (phase, gid) in statements {
            match phase {
                Phase::Prepare => self.stages.cache.prepared(gid.clone()),
                Phase::Commit => {
                    if self.stages.cache.commit_prepared(gid) {
                        self.handles.registry.ddl_seen();
                    }
                }
            }
        }
    }

    /// The scan of a text read lately, maybe with other literal values (none for an unreadable
    /// text; invalid UTF-8 never matches a remembered text, whose literals are checked).
    fn known_reading(&mut self, sql: &[u8]) -> Option<Arc<Scan>> {
        if self.reading.lexing.unreadable(sql) {
            return None;
        }
        let out = (&mut self.turn.analyzed, &mut self.reading.literals);
        self.reading.known_texts.find(sql, self.reading.lexing.backslash_quotes, &self.reading.analyzer, out)
    }

    async fn analyze(&mut self, sql: &[u8]) -> Arc<Scan> {
        // Valid UTF-8 (nearly always) is borrowed after the fast check; only invalid text pays
        // for the lossy copy.
        let text = match std::str::from_utf8(sql) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(sql),
        };
        let opaque = self.reading.lexing.unreadable(sql) || matches!(text, std::borrow::Cow::Owned(_));
        let shapes = crate::sql::tokens::shapes_with(&text, self.reading.lexing.backslash_quotes);
        if let ([one], false) = (shapes.as_slice(), opaque) {
            self.reading.literals = one.literals;
        }
        let cached = if opaque { None } else { self.reading.analyzer.cached_shapes(&text, &shapes) };
        // Kept only when answered from the analysis cache: a fresh parse (or the worst-case
        // analysis a parser panic leaves, which the shared cache never holds) is not.
        let keep = !opaque && cached.is_some();
        self.turn.analyzed = match cached {
            Some(analyzed) => analyzed,
            None if opaque => self.reading.analyzer.shared().analyze_shapes(&text, &shapes, true),
            // Boxed: the wait's state lives on the heap only while it runs, not in every
            // message's future. (The copies are the parser's to own; a parse costs far more.)
            None => {
                Box::pin(
                    self.reading.analyzer.shared().analyze_off_thread(text.as_ref().into(), shapes.as_slice().into()),
                )
                .await
            }
        };
        let found = Arc::new(super::sql_scan::from_analyses(&text, &shapes, &self.turn.analyzed));
        if keep {
            let read = (&self.turn.analyzed, &found);
            self.reading.known_texts.remember(
                &text,
                &shapes,
                read,
                self.reading.lexing.backslash_quotes,
                &self.reading.analyzer,
            );
        }
        found
    }

    /// A text over the analysis cap: one unknown statement.
    fn skip_analysis(&mut self, sql: &[u8]) -> Arc<Scan> {
        let a = crate::sql::parse::unanalyzed(sql);
        let found = super::sql_scan::unanalyzed(sql, a.kind);
        crate::metrics::unanalyzed();
        self.turn.analyzed = smallvec::smallvec![(Arc::new(a), crate::sql::tokens::params_hash(sql))];
        Arc::new(found)
    }

    /// A forwarded Query or Bind whose statements touch a relation that runs user code (a
    /// trigger, a view's function...), or a FunctionCall (a function named by OID, `set_config`
    /// as well as any other): what that code did to the session is not seen, so the connection
    /// is reset before it serves another client (`release`). Pinned or unknown sessions are reset
    /// at their end anyway. (The session calls it for those messages only, while isolating and
    /// not resetting already.)
    pub(super) fn note_attached_code(&mut self, msg: &ClientMessage<'_>, frame: &[u8]) {
        self.keeping.reset_on_release = match msg {
            ClientMessage::Query { .. } | ClientMessage::Bind { .. } if self.stages.cache.known_code_free() => return,
            // (No analysis: skipped while the database looked code-free; it may not be now.)
            ClientMessage::Query { .. } if self.turn.analyzed.is_empty() => true,
            ClientMessage::Query { .. } => self.turn.analyzed.iter().any(|(a, _)| touched(&mut self.stages.cache, a)),
            ClientMessage::Bind { .. } => match self.turn.statement.as_ref().and_then(|s| s.analysis.as_ref()) {
                Some(a) => touched(&mut self.stages.cache, a),
                None => true, // parsed unanalysed while the database looked code-free
            },
            ClientMessage::FunctionCall => !large_object_call(crate::net::frame::body(frame)),
            _ => false,
        };
    }

    /// The first part of a FunctionCall too large to read whole: as `note_attached_code` (its
    /// OID is in the first bytes).
    pub(super) fn note_streamed_call(&mut self, tag: u8, first: &[u8]) {
        if tag == fe::FUNCTION_CALL && self.keeping.isolate_attached_code {
            self.keeping.reset_on_release |=
                !large_object_call(first.get(crate::net::frame::HEADER_LEN..).unwrap_or(&[]));
        }
    }

    /// What a scanned text does to the session's pooling state.
    pub(super) fn note_scan(&mut self, found: &Scan) {
        self.keeping.state_dirty |= found.changes_session;
        self.reading.lexing.unsure |=
            found.changes_session || found.unknown_after.is_some() || found.restores || !found.resets.is_empty();
        if found.ddl {
            self.handles.registry.ddl_seen();
            // No statement trusts the list until it is read again after the transaction ends
            // (then the other replicas are told too).
            self.stages.cache.list_outdated();
            // A trigger or default made now runs in this same transaction: reset.
            self.keeping.reset_on_release |= self.keeping.isolate_attached_code;
        }
        if found.restores || !found.resets.is_empty() {
            self.reported.restore(self.state.startup_values(found.restores, &found.resets));
        }
        self.state.track(&found.names);
        match found.unknown_after {
            Some(true) if !self.keeping.state_unknown => {
                tracing::info!(user = %self.info.user, database = %self.info.database,
                    "client pinned to its server connection: session state pgpilot cannot read back");
                self.keeping.state_unknown = true;
            }
            Some(false) if self.keeping.state_unknown => {
                self.keeping.state_unknown = false;
                self.keeping.state_dirty = true;
            }
            _ => {}
        }
        if self.mode == PoolMode::Session
            && (found.changes_session || found.pin.is_some() || self.keeping.state_unknown)
        {
            // Session mode keeps no settings signature: stop caching rather than guess.
            self.stages.cache.stop();
        }
        if let (Some(reason), None, PoolMode::Transaction) = (found.pin, self.keeping.pin, self.mode) {
            tracing::info!(user = %self.info.user, database = %self.info.database, "client pinned to its server connection: {reason}");
            self.keeping.pin = Some(reason);
        }
    }
}

/// The built-in large-object functions (pg_proc.dat's fixed OIDs), what drivers call by
/// FunctionCall (libpq's lo_*, JDBC's LargeObject): they change nothing of the session that
/// outlives the transaction (a descriptor ends with it).
const LARGE_OBJECT_FUNCTIONS: [u32; 20] =
    [715, 764, 765, 767, 952, 953, 954, 955, 956, 957, 958, 964, 1004, 3170, 3171, 3172, 3457, 3458, 3459, 3460];

/// A FunctionCall body (function OID first) calling a large-object function.
fn large_object_call(body: &[u8]) -> bool {
    body.first_chunk::<4>().is_some_and(|oid| LARGE_OBJECT_FUNCTIONS.contains(&u32::from_be_bytes(*oid)))
}

/// Whether statement `a` touches a relation that runs code attached to it (the table list's
/// answer); a text the parser rejected (a newer server's syntax) names no tables it can trust.
fn touched(stage: &mut crate::frontend::stages::cache::CacheStage, a: &crate::sql::Analysis) -> bool {
    !a.parsed || stage.runs_attached_code(&a.read_names, &a.written_names)
}
