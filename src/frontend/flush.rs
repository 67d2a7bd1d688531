//! Buffered bytes out to either peer: what a session has gathered for the client or the server
//! goes out in one write, with the bookkeeping each write carries.

use tokio::io::AsyncWriteExt;

use super::session::{Flow, Session};

impl Session {
    /// Stages see what the replies revealed before the client does: a client that reads an
    /// ErrorResponse for a Parse (tokio-postgres returns before ReadyForQuery arrives) and then
    /// looks at the registry or the metrics finds the statement already gone.
    pub(super) async fn flush_client(&mut self) -> Flow {
        self.deliver_replies();
        if self.cout.is_empty() {
            return Flow::Continue;
        }
        self.counts.sent += self.cout.len() as u64;
        let r = self.client.write_all(&self.cout).await;
        self.cout.clear();
        if r.is_err() {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    pub(super) async fn flush_server(&mut self) -> Flow {
        // (All of it but what waits for a Describe's answer, `reply_hold.rs`.)
        let n = self.pending.writable(&mut self.sout);
        if n == 0 {
            return Flow::Continue;
        }
        self.pending.server_flushed();
        let Some(server) = self.server.as_mut() else {
            self.sout.clear();
            return Flow::Continue;
        };
        self.handles.cancel.meta.running.store(true, std::sync::atomic::Ordering::Release);
        if self.timeouts.deadline.is_none() {
            self.timeouts.deadline = self.timeouts.query.map(|t| tokio::time::Instant::now() + t);
        }
        let r = server.stream.write_all(&self.sout[..n]).await;
        if n == self.sout.len() {
            self.sout.clear();
        } else {
            bytes::Buf::advance(&mut self.sout, n);
        }
        if self.pending.holding() {
            self.pending.written(n);
        }
        if r.is_err() {
            self.server_lost("writing to the server failed").await;
            return Flow::Close;
        }
        Flow::Continue
    }
}
