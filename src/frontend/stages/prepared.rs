//! The prepared-statement stage (transaction mode): client statement names are mapped to the
//! global registry and rewritten to the server's names; Parse, Describe and Close are answered
//! here whenever the registry already knows the answer (no server needed); a Parse is injected
//! before a Bind/Describe on a server that lacks the statement. Its reply-queue events (a Parse
//! rejected or skipped, a fresh description, a stale plan) keep the client's table, the server's
//! copies and the registry in step.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};

use super::prepared_copies::{
    close_later, described, ensure_prepared, hold_for_answer, inject_describe, plan_stale, prepare_on_server, retried,
    Named,
};
use super::{Cx, Stage};
use crate::config::{Config, PoolMode};
use crate::frontend::reply_queue::{Action, Check, Event, Kind};
use crate::frontend::statements::{Opened, ADOPTING};
use crate::net::messages::{self, sqlstate};
use crate::prepared::adaptive::{self, Served};
use crate::prepared::{bump, Registry, Statement, STATS};
use crate::protocol::backend::tx_status;
use crate::protocol::frontend::{self as fe, ClientMessage, Target};

pub struct PreparedStage {
    registry: Arc<Registry>,
    config: Arc<ArcSwap<Config>>,
    /// Hash of (database, user): part of the registry key (descriptions name table OIDs).
    pool_scope: u64,
    /// The client's last unnamed Parse forwarded, with its token (see `track_unnamed`).
    unnamed_parse: Option<(u64, Bytes)>,
    /// The unnamed statement / portal is a `DEALLOCATE name` answered here (psycopg pipelines).
    local_stmt: bool,
    local_portal: bool,
    /// The client's last Parse, answered here from a copy the server already had, whose
    /// description the client was not given since: its Bind may be retried if that copy proves
    /// stale (`frontend/reply_retry.rs`). (client name, registry id)
    parsed_here: Option<(Bytes, u64)>,
    /// The registry entry of the last unnamed Parse mapped to it: a client repeating one text
    /// (an ORM's lookup, pgbench -M extended) finds it again without the registry's lock, hash
    /// and key copies (~500 instructions a Parse under callgrind).
    last_unnamed: Option<Arc<Statement>>,
    /// How the unnamed portal's statement reached the server (a server-prepared copy with its
    /// runs, this Bind's included): handed to insights at Execute for the strategy's timing.
    unnamed_portal: Served,
    /// This session's side of the server-prepared strategy's alternation (`adaptive`).
    measure_side: bool,
}

/// A simple Query (or FunctionCall) destroys the unnamed statement on a real server.
pub fn replaces_unnamed(tag: u8) -> bool {
    tag == fe::QUERY || tag == fe::FUNCTION_CALL
}

/// Answers here and reports the message handled.
fn answer(cx: &mut Cx<'_>, reply: Bytes) -> bool {
    cx.answer(reply);
    true
}

impl PreparedStage {
    pub fn new(registry: Arc<Registry>, config: Arc<ArcSwap<Config>>, pool_scope: u64) -> Self {
        Self {
            registry,
            config,
            pool_scope,
            unnamed_parse: None,
            local_stmt: false,
            local_portal: false,
            parsed_here: None,
            last_unnamed: None,
            unnamed_portal: Served::Untimed,
            measure_side: false,
        }
    }

    /// Which registry entries this client may share: same settings, and the same pool.
    fn scope(&self, cx: &Cx<'_>) -> u64 {
        cx.settings ^ self.pool_scope
    }

    /// The client's unnamed statement lives on past its Sync on a real server (asyncpg parses,
    /// syncs, introspects types, then binds it), but here the server connection may change hands
    /// or run pgpilot's own queries in between: remember the Parse, and send it again in front of
    /// a Bind/Describe that names the unnamed statement on a server that no longer holds it.
    fn track_unnamed(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>, frame: &[u8]) {
        let Some(server) = cx.server.as_deref_mut() else { return };
        match *msg {
            ClientMessage::Parse { name: b"", .. } => {
                let token = crate::backend::next_unnamed_token();
                server.unnamed = token;
                self.unnamed_parse = Some((token, Bytes::copy_from_slice(frame)));
            }
            ClientMessage::Bind { .. } | ClientMessage::Describe(_) => {
                let names_unnamed = matches!(
                    msg,
                    ClientMessage::Bind { statement: b"", .. } | ClientMessage::Describe(Target::Statement(b""))
                );
                let Some((token, parse)) = self.unnamed_parse.as_ref() else {
                    if names_unnamed && server.unnamed != 0 {
                        // Another client's unnamed statement is there: this client has none (26000).
                        server.unnamed = 0;
                        messages::close_statement(cx.sout, "");
                        cx.pending.push(Kind::Close, Action::Suppress);
                        cx.tx.on_client(fe::CLOSE);
                    }
                    return;
                };
                if names_unnamed && server.unnamed != *token {
                    server.unnamed = *token;
                    cx.sout.extend_from_slice(parse);
                    cx.pending.push(Kind::Parse, Action::Suppress);
                    cx.tx.on_client(fe::PARSE);
                }
            }
            _ => {}
        }
    }

    /// Parse/Describe/Close/DEALLOCATE that need no server (transaction mode, none held).
    fn answer_without_server(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>) -> bool {
        match *msg {
            ClientMessage::Close(target) => self.close(cx, target),
            ClientMessage::Bind { portal: b"", statement: b"", rest } if self.local_stmt => {
                self.bind(cx, b"", b"", rest)
            }
            ClientMessage::Execute { portal, .. } => self.execute_local(cx, portal),
            ClientMessage::Describe(t @ (Target::Statement(b"") | Target::Portal(b""))) if self.local_stmt => {
                self.describe(cx, t)
            }
            ClientMessage::Parse { name, query, types } => {
                if self.deallocated_name(cx, query).is_some() {
                    return self.parse(cx, name, query, types);
                }
                if name.is_empty() {
                    return false;
                }
                let known = self.registry.get_or_insert(query, types, self.scope(cx)).ok();
                known.as_ref().is_some_and(|s| s.is_validated()) && self.parse(cx, name, query, types)
            }
            // Only a description this client was given by a server in this session is answered
            // here: one from another client's server may predate a DDL.
            ClientMessage::Describe(Target::Statement(name)) => {
                cx.statements.registry(name).is_some_and(|s| cx.statements.description_held(name, &s).is_some())
                    && self.describe(cx, Target::Statement(name))
            }
            _ => false,
        }
    }

    /// `DEALLOCATE name` of one of the client's statements sent as Parse (psycopg in pipelines):
    /// the unnamed statement becomes a local one answered here through Execute.
    fn deallocated_name(&self, cx: &Cx<'_>, query: &[u8]) -> Option<String> {
        let starts = query.trim_ascii_start().get(..10).is_some_and(|p| p.eq_ignore_ascii_case(b"deallocate"));
        if !starts || !cx.statements.has_named() {
            return None;
        }
        crate::frontend::sql_scan::deallocate_of(&String::from_utf8_lossy(query))
            .filter(|n| cx.statements.contains(n.as_bytes()))
    }

    /// Execute of the unnamed portal bound to a local DEALLOCATE.
    fn execute_local(&mut self, cx: &mut Cx<'_>, portal: &[u8]) -> bool {
        portal.is_empty() && self.local_portal && answer(cx, messages::command_complete_frame("DEALLOCATE"))
    }

    fn parse(&mut self, cx: &mut Cx<'_>, name: &[u8], query: &[u8], types: &[u8]) -> bool {
        if name.is_empty() {
            self.local_stmt = false;
            self.unnamed_parse = None;
            if let Some(name) = self.deallocated_name(cx, query) {
                cx.statements.close(name.as_bytes());
                self.local_stmt = true;
                return answer(cx, messages::parse_complete());
            }
            return self.unnamed_parse(cx, query, types);
        }
        match cx.turn.opened {
            Opened::Fresh => {}
            Opened::Duplicate => {
                let name_text = String::from_utf8_lossy(name);
                local_error(cx, "42P05", &format!("prepared statement \"{name_text}\" already exists"));
                return true;
            }
            Opened::Full => {
                let max = cx.statements.max();
                let msg = format!("pgpilot: more than {max} prepared statements open on this connection; close some");
                local_error(cx, sqlstate::PROGRAM_LIMIT, &msg);
                return true;
            }
        }
        let stmt = match self.registry.get_or_insert(query, types, self.scope(cx)) {
            Ok(stmt) => stmt,
            Err(e) => {
                cx.statements.forget(name);
                local_error(cx, sqlstate::PROGRAM_LIMIT, &e.to_string());
                return true;
            }
        };
        if let Some(e) = cx.statements.get_mut(name) {
            e.registry = Some(stmt.clone());
        }
        self.parse_registered(cx, &stmt, Some(Bytes::copy_from_slice(name)));
        true
    }

    /// The client's Parse of a registry statement: answered here when this client holds its
    /// current version and the server a current copy, or when no server is held and a server
    /// accepted it before (its first Describe or Bind here then prepares it afresh). Otherwise
    /// prepared afresh and described, so a client never gets a description older than a DDL.
    fn parse_registered(&mut self, cx: &mut Cx<'_>, stmt: &Arc<Statement>, client_name: Option<Bytes>) {
        let epoch = self.registry.epoch();
        let key = client_name.clone().unwrap_or_default();
        let holds = cx.statements.held_version(&key, stmt).is_some();
        self.parsed_here = None;
        let Some(server) = cx.server.as_deref_mut() else {
            bump(&STATS.hits);
            cx.cout.extend_from_slice(&messages::parse_complete());
            self.parsed_here = Some((key, stmt.id));
            return;
        };
        if holds && server.prepared.get(&stmt.id).is_some_and(|c| c.current(epoch)) {
            bump(&STATS.hits);
            self.parsed_here = Some((key.clone(), stmt.id));
            match client_name {
                Some(client_name) => {
                    cx.pending.push(Kind::Local, Action::LocalParse { stmt: stmt.clone(), client_name })
                }
                None => cx.pending.push_local(messages::parse_complete()),
            }
            return;
        }
        bump(&STATS.misses);
        prepare_on_server(server, cx.sout, cx.pending, stmt, (client_name, true), epoch);
        cx.tx.on_client(fe::PARSE);
        inject_describe(cx, stmt, Check::Adopt, key.clone());
        cx.statements.set_version(&key, Some((stmt.id, ADOPTING)));
    }

    /// Unnamed Parse: passed through, or mapped to a registry statement (with `reuse_unnamed`,
    /// or where the server-prepared strategy measured it no slower, or is trying it).
    fn unnamed_parse(&mut self, cx: &mut Cx<'_>, query: &[u8], types: &[u8]) -> bool {
        if !cx.held() {
            return false;
        }
        let cfg = self.config.load();
        let learned = cx.turn.analyzed.first().map(|(a, _)| &a.learned);
        if let Some(l) = learned.filter(|_| cfg.strategy.enabled && cfg.strategy.server_prepared) {
            if !l.unnamed.load(std::sync::atomic::Ordering::Relaxed) {
                l.unnamed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let adaptive = cfg.strategy.enabled
            && cfg.strategy.server_prepared
            && learned.is_some_and(|l| adaptive::wants_server_prepared(l, self.measure_side, crate::clock::wall_ms));
        if !cfg.prepared.reuse_unnamed && !adaptive {
            return false;
        }
        let scope = self.scope(cx);
        let stmt = match self.last_unnamed.as_ref().filter(|s| s.is_entry_for(query, types, scope)) {
            Some(stmt) => stmt.clone(),
            None => {
                let Ok(stmt) = self.registry.get_or_insert(query, types, scope) else { return false };
                self.last_unnamed = Some(stmt.clone());
                stmt
            }
        };
        self.parse_registered(cx, &stmt, None);
        if let Some(u) = cx.statements.get_mut(b"") {
            u.registry = Some(stmt);
        }
        true
    }

    fn bind(&mut self, cx: &mut Cx<'_>, portal: &[u8], name: &[u8], rest: &[u8]) -> bool {
        if portal.is_empty() {
            self.unnamed_portal = Served::Untimed;
            self.local_portal = name.is_empty() && self.local_stmt;
            if self.local_portal {
                return answer(cx, messages::bind_complete());
            }
        }
        // Unknown names go through unchanged: the server's 26000 names the client's statement.
        // The client's entry as the session read it for this Bind (`look_up_statement`; nothing
        // changes the table in between): its registry statement and the version it holds.
        let entry = cx.turn.statement.as_ref().and_then(|e| Some((e.registry.clone()?, e.version)));
        let Some((stmt, held)) = entry else {
            if portal.is_empty() && name.is_empty() {
                self.unnamed_portal = Served::AsSent; // the unnamed statement passed through
            }
            return false;
        };
        let runs = ensure_prepared(cx, self.registry.epoch(), Named { name, held }, &stmt, true);
        if let Some(runs) = runs.filter(|_| portal.is_empty() && name.is_empty()) {
            self.unnamed_portal = Served::Prepared(runs);
        }
        let at = cx.sout.len();
        messages::bind(cx.sout, portal, &stmt.server_name, rest);
        let parsed = self.parsed_here.take().filter(|(n, id)| *id == stmt.id && same_name(n, name));
        cx.pending.push(Kind::Bind, Action::Bind { stmt });
        if let Some((client, _)) = parsed.filter(|_| cx.tx.status == tx_status::IDLE) {
            cx.pending.arm_retry(at, client);
        }
        cx.tx.on_client(fe::BIND);
        true
    }

    fn describe(&mut self, cx: &mut Cx<'_>, target: Target<'_>) -> bool {
        match target {
            Target::Portal(b"") if self.local_portal => return answer(cx, messages::no_data()),
            Target::Statement(b"") if self.local_stmt => {
                let mut reply = BytesMut::from(&messages::no_parameters()[..]);
                reply.extend_from_slice(&messages::no_data());
                return answer(cx, reply.freeze());
            }
            _ => {}
        }
        let Target::Statement(name) = target else { return false };
        let Some(stmt) = cx.statements.registry(name) else { return false };
        if self.parsed_here.as_ref().is_some_and(|(n, _)| same_name(n, name)) {
            self.parsed_here = None; // the client is given a description: a Bind is its own
        }
        if let Some(description) = cx.statements.description_held(name, &stmt) {
            return answer(cx, description);
        }
        if !cx.held() {
            return false; // another session changed the description meanwhile: ask a server
        }
        let held = cx.statements.version(name);
        ensure_prepared(cx, self.registry.epoch(), Named { name, held }, &stmt, false);
        let check = cx.statements.describe_check(name, &stmt);
        messages::describe_statement(cx.sout, &stmt.server_name);
        let client = Bytes::copy_from_slice(name);
        let action = Action::describe(stmt, check, false, client);
        cx.pending.push(Kind::DescribeStatement, action);
        cx.tx.on_client(fe::DESCRIBE);
        hold_for_answer(cx, check);
        true
    }

    /// Close of a named statement (or of an unnamed one mapped to the registry): the client's
    /// entry is gone already (the session took it out), the server copy stays for others (LRU).
    fn close(&mut self, cx: &mut Cx<'_>, target: Target<'_>) -> bool {
        let Target::Statement(name) = target else { return false };
        if name.is_empty() && cx.turn.statement.as_ref().is_none_or(|e| e.registry.is_none()) {
            return false;
        }
        answer(cx, messages::close_complete())
    }

    /// The statement is not prepared on the held server after all, nor under the client's name.
    fn unprepare(cx: &mut Cx<'_>, stmt: &Arc<Statement>, client_name: Option<Bytes>, on_server: bool) {
        let key = client_name.clone().unwrap_or_default();
        if cx.statements.adopting(&key, stmt) {
            cx.statements.set_version(&key, None);
        }
        if cx.statements.registry(b"").is_some_and(|u| Arc::ptr_eq(&u, stmt)) {
            cx.statements.forget(b""); // its cache identity and analysis went with the Parse
        }
        if on_server {
            if let Some(server) = cx.server.as_deref_mut() {
                server.prepared.pop(&stmt.id);
            }
        }
        if let Some(name) = client_name {
            if cx.statements.registry(&name).is_some_and(|s| Arc::ptr_eq(&s, stmt)) {
                cx.statements.forget(&name);
            }
        }
    }
}

/// Statement names compared without a call for the common unnamed one.
#[inline]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// An error pgpilot raises in the extended protocol: it takes the place of the message's reply
/// and, as on the server, the rest up to Sync is skipped.
fn local_error(cx: &mut Cx<'_>, code: &str, msg: &str) {
    cx.answer(messages::error_frame("ERROR", code, msg).freeze());
    cx.turn.skip_to_sync = true;
}

impl Stage for PreparedStage {
    type Event = Event;

    /// Transaction mode with no server held: what the registry can answer is answered here.
    /// A cache answer for the unnamed portal ends its local DEALLOCATE binding.
    async fn before_send(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>) {
        if cx.turn.answered {
            if let ClientMessage::Bind { portal: b"", .. } = msg {
                self.local_portal = false;
            }
            return;
        }
        if cx.mode == PoolMode::Transaction && !cx.held() && self.answer_without_server(cx, msg) {
            cx.turn.answered = true;
        }
    }

    /// Transaction mode: Parse/Bind/Describe/Close/Execute rewritten to the registry's names, or
    /// answered here; a simple Query's replacement of the unnamed statement tracked.
    fn rewrite(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>, frame: &[u8]) -> bool {
        if cx.mode != PoolMode::Transaction {
            return false;
        }
        let handled = match *msg {
            ClientMessage::Parse { name, query, types } => self.parse(cx, name, query, types),
            ClientMessage::Bind { portal, statement, rest } => self.bind(cx, portal, statement, rest),
            ClientMessage::Describe(target) => self.describe(cx, target),
            ClientMessage::Close(target) => self.close(cx, target),
            ClientMessage::Execute { portal, .. } => {
                cx.turn.run_via = if portal.is_empty() { self.unnamed_portal } else { Served::Untimed };
                self.measure_side ^= cx.turn.run_via != Served::Untimed;
                self.execute_local(cx, portal)
            }
            _ => false,
        };
        if handled {
            return true;
        }
        if replaces_unnamed(frame[0]) {
            self.unnamed_parse = None;
            self.unnamed_portal = Served::Untimed;
            self.local_stmt = false;
            self.local_portal = false;
            if let Some(server) = cx.server.as_deref_mut() {
                server.unnamed = 0;
            }
        }
        self.track_unnamed(cx, msg, frame);
        false
    }

    /// DISCARD ALL / DEALLOCATE ALL went to the server: it no longer has any statement.
    fn after_send(&mut self, cx: &mut Cx<'_>, _msg: &ClientMessage<'_>, _in_copy: bool) {
        if cx.turn.drops_statements {
            cx.statements.drop_all();
            if let Some(server) = cx.server.as_deref_mut() {
                server.prepared.clear();
                server.stale.clear();
            }
        }
    }

    /// Applies what the reply stream revealed about statements.
    fn on_reply(&mut self, cx: &mut Cx<'_>, event: Event) {
        match event {
            Event::ParseFailed { stmt, client_name } => {
                self.registry.remove(&stmt);
                if self.last_unnamed.as_ref().is_some_and(|s| Arc::ptr_eq(s, &stmt)) {
                    self.last_unnamed = None;
                }
                Self::unprepare(cx, &stmt, client_name, true);
            }
            Event::ParseSkipped { stmt, client_name, on_server } => {
                if let Some(server) = cx.server.as_deref_mut().filter(|_| on_server) {
                    // Its Close may have been skipped with it: the server may still hold an
                    // older copy of that name.
                    close_later(server, &stmt.server_name);
                }
                Self::unprepare(cx, &stmt, client_name, on_server)
            }
            Event::ParseUndone { client_name } => cx.statements.forget(&client_name),
            Event::Described { stmt, version, adopted, client } => {
                if adopted {
                    cx.statements.set_version(&client, Some((stmt.id, version)));
                }
                described(cx.server.as_deref_mut(), stmt.id, version);
            }
            Event::Retried { stmt, client, why } => {
                retried(cx.server.as_deref_mut(), &stmt, self.registry.epoch(), why);
                cx.statements.set_version(&client, Some((stmt.id, ADOPTING)));
            }
            Event::PlanStale { stmt, why } => plan_stale(cx.server.as_deref_mut(), &stmt, why),
        }
    }
}
