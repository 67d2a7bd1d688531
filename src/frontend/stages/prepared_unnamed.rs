//! The client's unnamed statement in transaction mode: which client Parse each server
//! connection's unnamed statement holds, and that Parse sent again (or a Close) before a Bind or
//! Describe of it on a server that does not hold it.

use bytes::Bytes;

use super::PreparedStage;
use crate::frontend::reply_queue::{Action, Kind};
use crate::frontend::stages::Cx;
use crate::net::messages;
use crate::protocol::frontend::{self as fe, ClientMessage, Target};

impl PreparedStage {
    /// The client's unnamed statement lives on past its Sync on a real server (asyncpg parses,
    /// syncs, introspects types, then binds it), but here the server connection may change hands
    /// or run pgpilot's own queries in between: remember the Parse, and send it again in front of
    /// a Bind/Describe that names the unnamed statement on a server that no longer holds it.
    /// (What the server holds is known from what was sent to it, unless a run sent earlier and
    /// not yet answered failed: the server skipped the rest of it, maybe the Parse or Close that
    /// set it. Such a run's error makes it unknown when read (`Event::RunFailed`); until then,
    /// only what this run set is sure. A message sent while the server skips to the Sync, after
    /// an error already read, changes nothing there, and nothing here.)
    pub(super) fn track_unnamed(&mut self, cx: &mut Cx<'_>, msg: &ClientMessage<'_>, frame: &[u8]) {
        let Some(server) = cx.server.as_deref_mut().filter(|_| !cx.pending.skipping()) else { return };
        match *msg {
            ClientMessage::Parse { name: b"", .. } => {
                let token = crate::backend::next_unnamed_token();
                record(server, &mut self.unnamed_run, (token, cx.tx.run()));
                self.unnamed_parse = Some((token, Bytes::copy_from_slice(frame)));
            }
            ClientMessage::Bind { statement: b"", .. } | ClientMessage::Describe(Target::Statement(b"")) => {
                let held = if self.unnamed_run == Some(cx.tx.run()) || cx.tx.answered() {
                    server.unnamed
                } else {
                    crate::backend::UNNAMED_UNKNOWN
                };
                let Some((token, parse)) = self.unnamed_parse.as_ref() else {
                    if held != 0 {
                        // Another client's unnamed statement may be there: this client has none (26000).
                        record(server, &mut self.unnamed_run, (0, cx.tx.run()));
                        messages::close_statement(cx.sout, "");
                        cx.pending.push(Kind::Close, Action::Suppress);
                        cx.tx.on_client(fe::CLOSE);
                    }
                    return;
                };
                if held != *token {
                    record(server, &mut self.unnamed_run, (*token, cx.tx.run()));
                    cx.sout.extend_from_slice(parse);
                    cx.pending.push(Kind::Parse, Action::Suppress);
                    cx.tx.on_client(fe::PARSE);
                }
            }
            _ => {}
        }
    }
}

/// The server's unnamed statement is set to `token`'s Parse (0: none) in run `run`: the two are
/// kept together, as `track_unnamed` believes the one only with the other.
fn record(server: &mut crate::backend::ServerConn, unnamed_run: &mut Option<u32>, (token, run): (u64, u32)) {
    server.unnamed = token;
    *unnamed_run = Some(run);
}
