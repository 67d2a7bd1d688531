//! The prepared-statement stage's writes of a registry statement to the held server: a copy
//! prepared afresh (making room, closing an older version) and pgpilot's own Describe of it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Cx;
use super::Queue;
use crate::backend::{ServerConn, ServerCopy};
use crate::frontend::reply_queue::{Action, Check, Kind, Stale};
use crate::frontend::statements::ADOPTING;
use crate::net::messages;
use crate::prepared::{bump, Statement, STATS};
use crate::protocol::frontend as fe;

/// A client's statement name and the (registry id, version) its entry holds: a Bind reads both
/// in the lookup that finds its registry statement.
pub(super) struct Named<'a> {
    pub name: &'a [u8],
    pub held: Option<(u64, u64)>,
}

/// Makes sure the held server has a current copy of `stmt` for a Bind/Describe: a copy from
/// before a DDL seen here, or of another version than the client holds, is prepared again
/// and compared with what the client holds; a client that never got it described here gets
/// it prepared afresh (`bind`: for a Bind, which gets it described and runs it: the copy's
/// runs, this one included, are counted and returned for the server-prepared strategy; else
/// for the client's own Describe, forwarded with `describe_check`).
pub(super) fn ensure_prepared(
    cx: &mut Cx<'_>,
    epoch: u64,
    Named { name, held }: Named<'_>,
    stmt: &Arc<Statement>,
    bind: bool,
) -> Option<u32> {
    // One read of the version on this per-Bind path (and no lookup: the caller's entry).
    let version = stmt.version();
    let held = held.filter(|(id, _)| *id == stmt.id).map(|(_, v)| v);
    let usable = held.is_some_and(|v| v == ADOPTING || (v != 0 && v == version));
    let server = cx.server.as_deref_mut().expect("forward needs a server");
    if let Some(copy) = server.prepared.get_mut(&stmt.id).filter(|c| usable && c.current_as(epoch, version)) {
        bump(&STATS.hits);
        copy.runs = copy.runs.saturating_add(u32::from(bind));
        return bind.then_some(copy.runs);
    }
    bump(&STATS.reparses);
    prepare_on_server(server, cx.sout, cx.pending, stmt, (None, false), epoch);
    let runs = if bind { count_run(server, stmt.id) } else { None };
    cx.tx.on_client(fe::PARSE);
    if bind {
        let check = cx.statements.describe_check(name, stmt);
        inject_describe(cx, stmt, check, Bytes::copy_from_slice(name));
    } else if cx.statements.held(name, stmt).is_none() {
        cx.statements.set_version(name, Some((stmt.id, ADOPTING)));
    }
    runs
}

/// Prepares `stmt` on `server` afresh (closing a copy of an older version, evicting the least
/// recently used statement when full). The ParseComplete reaches the client only when the
/// client's own Parse asked for it (`reply`).
pub(super) fn prepare_on_server(
    server: &mut ServerConn,
    sout: &mut BytesMut,
    pending: &mut Queue,
    stmt: &Arc<Statement>,
    (client_name, reply): (Option<Bytes>, bool),
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
        messages::close_statement(sout, &name);
        pending.push(Kind::Close, Action::Suppress);
    }
    if server.prepared.pop(&stmt.id).is_some() {
        messages::close_statement(sout, &stmt.server_name);
        pending.push(Kind::Close, Action::Suppress);
    } else if server.prepared.len() >= server.prepared.cap().get() {
        if let Some((_, old)) = server.prepared.pop_lru() {
            messages::close_statement(sout, &old.stmt.server_name);
            pending.push(Kind::Close, Action::Suppress);
            bump(&STATS.evictions);
        }
    }
    messages::parse(sout, &stmt.server_name, &stmt.query, &stmt.types);
    pending.push(Kind::Parse, Action::Parse { stmt: stmt.clone(), client_name, suppress: !reply });
    let copy = ServerCopy { stmt: stmt.clone(), epoch, version: ServerCopy::FRESH, runs: 0 };
    server.prepared.put(stmt.id, copy);
}

/// Describes `stmt` on the held server for pgpilot's own bookkeeping (reply not shown).
pub(super) fn inject_describe(cx: &mut Cx<'_>, stmt: &Arc<Statement>, check: Check, client: Bytes) {
    messages::describe_statement(cx.sout, &stmt.server_name);
    let action = Action::describe(stmt.clone(), check, true, client);
    cx.pending.push(Kind::DescribeStatement, action);
    cx.tx.on_client(fe::DESCRIBE);
    hold_for_answer(cx, check);
}

/// A Describe compared with the description the client holds decides whether what the client
/// sent after it may run (`reply_hold.rs`): that waits for the answer, which a Flush asks for now.
pub(super) fn hold_for_answer(cx: &mut Cx<'_>, check: Check) {
    if matches!(check, Check::Compare(_)) && cx.pending.queued() {
        messages::flush(cx.sout);
        cx.pending.hold(cx.sout.len());
    }
}

/// A Bind is served from `stmt`'s copy on `server`: the copy's runs, this one included.
pub(super) fn count_run(server: &mut ServerConn, stmt: u64) -> Option<u32> {
    let copy = server.prepared.peek_mut(&stmt)?;
    copy.runs = copy.runs.saturating_add(1);
    Some(copy.runs)
}

/// The server described `stmt`'s copy: the version it is current as.
pub(super) fn described(server: Option<&mut ServerConn>, stmt: u64, version: u64) {
    if let Some(copy) = server.and_then(|s| s.prepared.peek_mut(&stmt)) {
        copy.version = version;
    }
}

/// A run that failed on a stale copy was sent again on a fresh one (`frontend/reply_retry.rs`),
/// which has had that run.
pub(super) fn retried(server: Option<&mut ServerConn>, stmt: &Arc<Statement>, epoch: u64, why: Stale) {
    bump(&STATS.stale_retries);
    if why == Stale::Plan {
        stmt.went_stale();
    }
    let copy = ServerCopy { stmt: stmt.clone(), epoch, version: ServerCopy::FRESH, runs: 1 };
    if let Some(server) = server {
        server.prepared.put(stmt.id, copy);
    }
}

/// The server's copy can no longer run (its plan is stale, or it is gone): closed before the
/// next use (a Close of a name the server no longer has succeeds).
pub(super) fn plan_stale(server: Option<&mut ServerConn>, stmt: &Arc<Statement>, why: Stale) {
    if why == Stale::Plan {
        stmt.went_stale();
    }
    if let Some(server) = server {
        if server.prepared.pop(&stmt.id).is_some() {
            close_later(server, &stmt.server_name);
        }
    }
}

/// `name` is closed on `server` before its next Parse there (a Close of a name the server no
/// longer has succeeds).
pub(super) fn close_later(server: &mut ServerConn, name: &str) {
    if !server.stale.iter().any(|n| n == name) {
        server.stale.push(name.to_owned());
    }
}
