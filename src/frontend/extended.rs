//! Client -> server in transaction mode: statement names are mapped to the global registry and
//! rewritten to the server's names; Parse, Describe and Close are answered here whenever the
//! registry already knows the answer (no server needed); a Parse is injected before a
//! Bind/Describe on a server that lacks the statement.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::reply_queue::{Action, Check, Event, Kind, Pending};
use super::session::Session;
use super::statements::Opened;
use crate::backend::{ServerConn, ServerCopy};
use crate::config::PoolMode;
use crate::net::frame::body;
use crate::net::messages::{self, sqlstate};
use crate::prepared::messages as pm;
use crate::protocol::frontend::{ClientMessage, Target};

use crate::prepared::{bump, Statement, STATS};

/// Prepares `stmt` on `server` afresh (closing a copy of an older version, evicting the least
/// recently used statement when full). The ParseComplete reaches the client only when the
/// client's own Parse asked for it (`reply`).
fn prepare_on_server(
    server: &mut ServerConn,
    sout: &mut BytesMut,
    pending: &mut Pending,
    stmt: &Arc<Statement>,
    client_name: Option<Bytes>,
    reply: bool,
    epoch: u64,
) {
    if pending.skipping() {
        // The server skips everything up to Sync: a Close or Parse sent now would not run, so
        // leave the server's statements as they are; a client's own Parse is undone as skipped.
        if let Some(client_name) = client_name {
            pending.push(Kind::Local, Action::LocalParse { stmt: stmt.clone(), client_name });
        }
        return;
    }
    for name in server.stale.drain(..) {
        pm::close_statement(sout, &name);
        pending.push(Kind::Close, Action::Suppress);
    }
    if server.prepared.pop(&stmt.id).is_some() {
        pm::close_statement(sout, &stmt.server_name);
        pending.push(Kind::Close, Action::Suppress);
    } else if server.prepared.len() >= server.prepared.cap().get() {
        if let Some((_, old)) = server.prepared.pop_lru() {
            pm::close_statement(sout, &old.stmt.server_name);
            pending.push(Kind::Close, Action::Suppress);
            bump(&STATS.evictions);
        }
    }
    pm::parse(sout, &stmt.server_name, &stmt.query, &stmt.types);
    pending.push(Kind::Parse, Action::Parse { stmt: stmt.clone(), client_name, suppress: !reply });
    let copy = ServerCopy { stmt: stmt.clone(), epoch, version: ServerCopy::FRESH };
    server.prepared.put(stmt.id, copy);
}

/// In `Session::validated`: a fresh description is on its way to this client.
pub(super) const ADOPTING: u64 = u64::MAX;

/// A simple Query (or FunctionCall) destroys the unnamed statement on a real server.
fn kind_replaces_unnamed(tag: u8) -> bool {
    tag == b'Q' || tag == b'F'
}

impl Session {
    /// Sends one client message (`msg`, decoded from `frame`) on to the held server connection.
    pub(super) fn forward(&mut self, msg: &ClientMessage<'_>, frame: &[u8]) {
        let tag = frame[0];
        if kind_replaces_unnamed(tag) {
            self.statements.forget(b"");
        }
        if self.mode == PoolMode::Transaction {
            let handled = match *msg {
                ClientMessage::Parse { name, query, types } => self.forward_parse(name, query, types),
                ClientMessage::Bind { portal, statement, rest } => self.forward_bind(portal, statement, rest),
                ClientMessage::Describe(target) => self.forward_describe(target),
                ClientMessage::Close(target) => self.forward_close(target),
                ClientMessage::Execute { portal, .. } => self.execute_local(portal),
                _ => false,
            };
            if handled {
                return;
            }
            if kind_replaces_unnamed(tag) {
                self.unnamed_parse = None;
                self.local_stmt = false;
                self.local_portal = false;
                if let Some(server) = self.server.as_deref_mut() {
                    server.unnamed = 0;
                }
            }
            self.track_unnamed(msg, frame);
        }
        if let Some(kind) = self.reply_kind(tag, frame) {
            let track = if tag == b'E' || tag == b'Q' { self.track_for(msg) } else { None };
            let action = match *msg {
                ClientMessage::Parse { name, .. } if self.turn.opened == Opened::Fresh => {
                    Action::ClientParse { client_name: Bytes::copy_from_slice(name) }
                }
                _ => Action::Forward,
            };
            self.pending.push_tracked(kind, action, track);
        }
        self.tx.on_client(tag);
        self.sout.extend_from_slice(frame);
    }

    /// The client's unnamed statement lives on past its Sync on a real server (asyncpg parses,
    /// syncs, introspects types, then binds it), but here the server connection may change hands
    /// or run pgpilot's own queries in between: remember the Parse, and send it again in front of
    /// a Bind/Describe that names the unnamed statement on a server that no longer holds it.
    fn track_unnamed(&mut self, msg: &ClientMessage<'_>, frame: &[u8]) {
        let Some(server) = self.server.as_deref_mut() else { return };
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
                        pm::close_statement(&mut self.sout, "");
                        self.pending.push(Kind::Close, Action::Suppress);
                        self.tx.on_client(b'C');
                    }
                    return;
                };
                if names_unnamed && server.unnamed != *token {
                    server.unnamed = *token;
                    self.sout.extend_from_slice(parse);
                    self.pending.push(Kind::Parse, Action::Suppress);
                    self.tx.on_client(b'P');
                }
            }
            _ => {}
        }
    }

    /// Which reply completes a forwarded message (None: it gets no reply of its own).
    pub(super) fn reply_kind(&self, tag: u8, frame: &[u8]) -> Option<Kind> {
        Some(match tag {
            b'P' => Kind::Parse,
            b'B' => Kind::Bind,
            b'D' if body(frame).first() == Some(&b'S') => Kind::DescribeStatement,
            b'D' => Kind::DescribePortal,
            b'E' => Kind::Execute,
            b'C' => Kind::Close,
            b'S' if !self.tx.in_copy() => Kind::Sync,
            b'Q' | b'F' => Kind::Query,
            _ => return None,
        })
    }

    /// A reply given here: in turn behind the server's replies when a server is held, else at once.
    pub(super) fn answer(&mut self, reply: Bytes) -> bool {
        if self.server.is_some() {
            self.pending.push_local(reply);
        } else {
            self.cout.extend_from_slice(&reply);
        }
        true
    }

    /// Parse/Describe/Close/DEALLOCATE that need no server (transaction mode, none held).
    pub(super) fn answer_without_server(&mut self, msg: &ClientMessage<'_>) -> bool {
        match *msg {
            ClientMessage::Close(target) => self.forward_close(target),
            ClientMessage::Bind { portal: b"", statement: b"", rest } if self.local_stmt => {
                self.forward_bind(b"", b"", rest)
            }
            ClientMessage::Execute { portal, .. } => self.execute_local(portal),
            ClientMessage::Describe(t @ (Target::Statement(b"") | Target::Portal(b""))) if self.local_stmt => {
                self.forward_describe(t)
            }
            ClientMessage::Parse { name, query, types } => {
                if self.deallocated_name(query).is_some() {
                    return self.forward_parse(name, query, types);
                }
                if name.is_empty() {
                    return false;
                }
                let known = self.app.registry.get_or_insert(query, types, self.registry_scope()).ok();
                known.as_ref().is_some_and(|s| s.is_validated()) && self.forward_parse(name, query, types)
            }
            // Only a description this client was given by a server in this session is answered
            // here: one from another client's server may predate a DDL.
            ClientMessage::Describe(Target::Statement(name)) => {
                self.mapped(name).is_some_and(|s| self.description_held(name, &s).is_some())
                    && self.forward_describe(Target::Statement(name))
            }
            _ => false,
        }
    }

    /// `DEALLOCATE name` of one of the client's statements sent as Parse (psycopg in pipelines):
    /// the unnamed statement becomes a local one answered here through Execute.
    fn deallocated_name(&self, query: &[u8]) -> Option<String> {
        let starts = query.trim_ascii_start().get(..10).is_some_and(|p| p.eq_ignore_ascii_case(b"deallocate"));
        if !starts || !self.statements.has_named() {
            return None;
        }
        crate::frontend::sql_scan::deallocate_of(&String::from_utf8_lossy(query))
            .filter(|n| self.statements.contains(n.as_bytes()))
    }

    /// Execute of the unnamed portal bound to a local DEALLOCATE.
    fn execute_local(&mut self, portal: &[u8]) -> bool {
        portal.is_empty() && self.local_portal && self.answer(messages::command_complete_frame("DEALLOCATE"))
    }

    fn forward_parse(&mut self, name: &[u8], query: &[u8], types: &[u8]) -> bool {
        if name.is_empty() {
            self.local_stmt = false;
            self.unnamed_parse = None;
            if let Some(name) = self.deallocated_name(query) {
                self.statements.close(name.as_bytes());
                self.local_stmt = true;
                return self.answer(pm::parse_complete());
            }
            return self.forward_unnamed_parse(query, types);
        }
        match self.turn.opened {
            Opened::Fresh => {}
            Opened::Duplicate => {
                let name_text = String::from_utf8_lossy(name);
                self.local_error("42P05", &format!("prepared statement \"{name_text}\" already exists"));
                return true;
            }
            Opened::Full => {
                let max = self.app.config.load().prepared.client_max;
                let msg = format!("pgpilot: more than {max} prepared statements open on this connection; close some");
                self.local_error(sqlstate::PROGRAM_LIMIT, &msg);
                return true;
            }
        }
        let stmt = match self.app.registry.get_or_insert(query, types, self.registry_scope()) {
            Ok(stmt) => stmt,
            Err(e) => {
                self.statements.forget(name);
                self.local_error(sqlstate::PROGRAM_LIMIT, &e.to_string());
                return true;
            }
        };
        if let Some(e) = self.statements.get_mut(name) {
            e.registry = Some(stmt.clone());
        }
        self.parse_registered(&stmt, Some(Bytes::copy_from_slice(name)));
        true
    }

    /// The client's Parse of a registry statement: answered here when this client holds its
    /// current version and the server a current copy, or when no server is held and a server
    /// accepted it before (its first Describe or Bind here then prepares it afresh). Otherwise
    /// prepared afresh and described, so a client never gets a description older than a DDL.
    fn parse_registered(&mut self, stmt: &Arc<Statement>, client_name: Option<Bytes>) {
        let epoch = self.app.registry.epoch();
        let key = client_name.clone().unwrap_or_default();
        let holds = self.holds_current(&key, stmt);
        let Some(server) = self.server.as_deref_mut() else {
            bump(&STATS.hits);
            self.cout.extend_from_slice(&pm::parse_complete());
            return;
        };
        if holds && server.prepared.get(&stmt.id).is_some_and(|c| c.current(epoch)) {
            bump(&STATS.hits);
            match client_name {
                Some(client_name) => {
                    self.pending.push(Kind::Local, Action::LocalParse { stmt: stmt.clone(), client_name })
                }
                None => self.pending.push_local(pm::parse_complete()),
            }
            return;
        }
        bump(&STATS.misses);
        prepare_on_server(server, &mut self.sout, &mut self.pending, stmt, client_name, true, epoch);
        self.tx.on_client(b'P');
        self.inject_describe(stmt, Check::Adopt, key.clone());
        self.statements.set_version(&key, Some((stmt.id, ADOPTING)));
    }

    /// Describes `stmt` on the held server for pgpilot's own bookkeeping (reply not shown).
    fn inject_describe(&mut self, stmt: &Arc<Statement>, check: Check, client: Bytes) {
        pm::describe_statement(&mut self.sout, &stmt.server_name);
        let action = Action::Describe { stmt: stmt.clone(), check, suppress: true, client, reply: BytesMut::new() };
        self.pending.push(Kind::DescribeStatement, action);
        self.tx.on_client(b'D');
    }

    /// Unnamed Parse: passed through, or with `reuse_unnamed` mapped to a registry statement.
    fn forward_unnamed_parse(&mut self, query: &[u8], types: &[u8]) -> bool {
        if !self.app.config.load().prepared.reuse_unnamed || self.server.is_none() {
            return false;
        }
        let Ok(stmt) = self.app.registry.get_or_insert(query, types, self.registry_scope()) else { return false };
        self.parse_registered(&stmt, None);
        if let Some(u) = self.statements.get_mut(b"") {
            u.registry = Some(stmt);
        }
        true
    }

    /// The statement a Bind/Describe names: the client's named one, or its reused unnamed one.
    pub(super) fn mapped(&self, name: &[u8]) -> Option<Arc<Statement>> {
        self.statements.registry(name)
    }

    /// Makes sure the held server has a current copy of `stmt` for a Bind/Describe: a copy from
    /// before a DDL seen here, or of another version than the client holds, is prepared again
    /// and compared with what the client holds; a client that never got it described here gets
    /// it prepared afresh (`describe`: and described, unless the caller forwards the client's own
    /// Describe with `describe_check`).
    fn ensure_prepared(&mut self, name: &[u8], stmt: &Arc<Statement>, describe: bool) -> bool {
        let epoch = self.app.registry.epoch();
        // One lookup and one read of the version on this per-Bind path.
        let version = stmt.version();
        let held = self.statements.version(name).filter(|(id, _)| *id == stmt.id).map(|(_, v)| v);
        let usable = held.is_some_and(|v| v == ADOPTING || (v != 0 && v == version));
        let server = self.server.as_deref_mut().expect("forward needs a server");
        let current = server.prepared.get(&stmt.id).is_some_and(|c| c.current_as(epoch, version));
        if current && usable {
            bump(&STATS.hits);
            return true;
        }
        bump(&STATS.reparses);
        prepare_on_server(server, &mut self.sout, &mut self.pending, stmt, None, false, epoch);
        self.tx.on_client(b'P');
        if describe {
            let check = self.describe_check(name, stmt);
            self.inject_describe(stmt, check, Bytes::copy_from_slice(name));
        } else if self.held(name, stmt).is_none() {
            self.statements.set_version(name, Some((stmt.id, ADOPTING)));
        }
        true
    }

    fn forward_bind(&mut self, portal: &[u8], name: &[u8], rest: &[u8]) -> bool {
        if portal.is_empty() {
            self.local_portal = name.is_empty() && self.local_stmt;
            if self.local_portal {
                return self.answer(pm::bind_complete());
            }
        }
        // Unknown names go through unchanged: the server's 26000 names the client's statement.
        let Some(stmt) = self.mapped(name) else { return false };
        if self.ensure_prepared(name, &stmt, true) {
            pm::bind(&mut self.sout, portal, &stmt.server_name, rest);
            self.pending.push(Kind::Bind, Action::Bind { stmt });
            self.tx.on_client(b'B');
        }
        true
    }

    fn forward_describe(&mut self, target: Target<'_>) -> bool {
        match target {
            Target::Portal(b"") if self.local_portal => return self.answer(pm::no_data()),
            Target::Statement(b"") if self.local_stmt => {
                let mut reply = BytesMut::from(&[b't', 0, 0, 0, 6, 0, 0][..]);
                reply.extend_from_slice(&pm::no_data());
                return self.answer(reply.freeze());
            }
            _ => {}
        }
        let Target::Statement(name) = target else { return false };
        let Some(stmt) = self.mapped(name) else { return false };
        if let Some(description) = self.description_held(name, &stmt) {
            return self.answer(description);
        }
        if self.server.is_none() {
            return false; // another session changed the description meanwhile: ask a server
        }
        if self.ensure_prepared(name, &stmt, false) {
            let check = self.describe_check(name, &stmt);
            pm::describe_statement(&mut self.sout, &stmt.server_name);
            let client = Bytes::copy_from_slice(name);
            let action = Action::Describe { stmt, check, suppress: false, client, reply: BytesMut::new() };
            self.pending.push(Kind::DescribeStatement, action);
            self.tx.on_client(b'D');
        }
        true
    }

    /// Close of a named statement (or of an unnamed one mapped to the registry): the client's
    /// entry is gone already (`look_up_statement`), the server copy stays for others (LRU).
    pub(super) fn forward_close(&mut self, target: Target<'_>) -> bool {
        let Target::Statement(name) = target else { return false };
        if name.is_empty() && self.turn.statement.as_ref().is_none_or(|e| e.registry.is_none()) {
            return false;
        }
        self.answer(pm::close_complete())
    }

    /// An error pgpilot raises in the extended protocol: it takes the place of the message's reply
    /// and, as on the server, the rest up to Sync is skipped.
    fn local_error(&mut self, code: &str, msg: &str) {
        let frame = messages::error_frame("ERROR", code, msg).freeze();
        self.answer(frame);
        self.skip_until_sync = true;
    }

    /// `DEALLOCATE name` (simple Query) for one of the client's protocol-level statements.
    pub(super) fn deallocate_locally(&mut self, name: &str) -> bool {
        if self.statements.close(name.as_bytes()).is_none() {
            return false;
        }
        let mut reply = BytesMut::new();
        messages::command_complete(&mut reply, "DEALLOCATE");
        let status = if self.server.is_some() { self.tx.status } else { b'I' };
        messages::ready_for_query(&mut reply, status);
        self.answer(reply.freeze())
    }

    /// DISCARD ALL / DEALLOCATE ALL went to the server: it no longer has any statement.
    pub(super) fn forget_server_statements(&mut self) {
        self.statements.drop_all();
        if let Some(server) = self.server.as_deref_mut() {
            server.prepared.clear();
            server.stale.clear();
        }
    }

    /// Applies what the reply stream revealed about statements.
    pub(super) fn on_statement_events(&mut self, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Completed(c) => self.on_completed(c),
                Event::Filled(fill) => {
                    let fill = *fill;
                    let row_desc = fill.row_desc.unwrap_or_default();
                    self.app.cache.store(*fill.plan, row_desc, fill.body.freeze(), fill.rows);
                }
                Event::ParseFailed { stmt, client_name } => {
                    self.app.registry.remove(&stmt);
                    self.unprepare(&stmt, client_name, true);
                }
                Event::ParseSkipped { stmt, client_name, on_server } => self.unprepare(&stmt, client_name, on_server),
                Event::ParseUndone { client_name } => self.statements.forget(&client_name),
                Event::Described { stmt, version, adopted, client } => {
                    if adopted {
                        self.statements.set_version(&client, Some((stmt.id, version)));
                    }
                    if let Some(copy) = self.server.as_deref_mut().and_then(|s| s.prepared.peek_mut(&stmt.id)) {
                        copy.version = version;
                    }
                }
                Event::PlanStale { stmt } => {
                    stmt.went_stale();
                    if let Some(server) = self.server.as_deref_mut() {
                        if server.prepared.pop(&stmt.id).is_some() {
                            server.stale.push(stmt.server_name.clone());
                        }
                    }
                }
            }
        }
    }

    /// The statement is not prepared on the held server after all, nor under the client's name.
    fn unprepare(&mut self, stmt: &Arc<Statement>, client_name: Option<Bytes>, on_server: bool) {
        let key = client_name.clone().unwrap_or_default();
        if self.adopting(&key, stmt) {
            self.statements.set_version(&key, None);
        }
        if self.statements.registry(b"").is_some_and(|u| Arc::ptr_eq(&u, stmt)) {
            self.statements.forget(b""); // its cache identity and analysis went with the Parse
        }
        if on_server {
            if let Some(server) = self.server.as_deref_mut() {
                server.prepared.pop(&stmt.id);
            }
        }
        if let Some(name) = client_name {
            if self.statements.registry(&name).is_some_and(|s| Arc::ptr_eq(&s, stmt)) {
                self.statements.forget(&name);
            }
        }
    }
}
