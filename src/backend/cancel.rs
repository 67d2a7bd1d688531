//! The registry of live client sessions, keyed by the proxy-issued cancel key.
//!
//! CancelRequest routing: a cancel with a client's key is sent to the server connection that
//! client holds at that moment, with that server's own key, and only while the client has
//! something running there (a cancel for an idle client is dropped, as PostgreSQL ignores one
//! for an idle backend). The server connection stays out of the pool until PostgreSQL has
//! processed the forwarded cancel (it closes the cancel connection after signalling the
//! backend), and the client's cancel connection stays open until then, as on a direct
//! connection: so a cancel can never land on the next query, another client's or its own. The
//! same entries describe clients and their servers to the admin console.

use foldhash::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a forwarded cancel may take before the session stops waiting for it; the server
/// connection is then closed (the cancel may still land), not returned.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A held server connection as cancel routing sees it.
#[derive(Debug, Clone)]
pub struct ServerKey {
    pub addr: crate::net::endpoint::Endpoint,
    pub pid: i32,
    pub secret: i32,
    /// Counts the cancels in flight; the session waits for none before check-in.
    pub gate: Arc<super::cancel_gate::CancelGate>,
}

/// One client session as the rest of pgpilot may see it.
#[derive(Debug)]
pub struct ClientMeta {
    /// Given by the registry: SHOW CLIENTS' `id`, what KILL_CLIENT names.
    pub id: u64,
    /// Wakes the session from outside: to end it (KILL_CLIENT: `killed` set, FATAL 57P01), at
    /// shutdown (`wake_all`), or, idle, to give its buffers back (`nudge_idle`).
    pub wake: Wake,
    pub killed: std::sync::atomic::AtomicBool,
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub application_name: Arc<str>,
    /// None: a client on the Unix-domain socket.
    pub peer: Option<std::net::SocketAddr>,
    pub connected: SystemTime,
    /// The server connection held right now, if any.
    pub server: Mutex<Option<ServerKey>>,
    /// The client has sent the held server something it has not answered with ReadyForQuery.
    pub running: std::sync::atomic::AtomicBool,
}

/// A flag and the session's waker. The session loop polls it each time it parks, so it costs a
/// few atomic operations where a `Notify` took its waiter list's lock (~200 instructions per park,
/// callgrind), and one wake source stands for KILL_CLIENT, shutdown and idle nudges.
#[derive(Debug, Default)]
pub struct Wake {
    set: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl Wake {
    /// Wakes the session (or, not parked, makes its next poll return at once).
    pub fn notify(&self) {
        self.set.store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
    }

    /// Ready once per `notify` (notifications before a poll fold into one).
    pub fn poll_woken(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::sync::atomic::Ordering::AcqRel;
        if self.set.swap(false, AcqRel) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notify between the check and the registration saw no waker: check again.
        if self.set.swap(false, AcqRel) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), Arc<ClientMeta>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Removes the registration when the session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub key: (i32, i32),
    pub meta: Arc<ClientMeta>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.lock().remove(&self.key);
    }
}

impl CancelRegistry {
    pub fn register(self: &Arc<Self>, mut meta: ClientMeta) -> Registration {
        meta.id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let meta = Arc::new(meta);
        let mut map = self.map.lock();
        let key = loop {
            let key = (rand::random::<i32>() & 0x7fff_ffff, rand::random::<i32>());
            if !map.contains_key(&key) {
                break key;
            }
        };
        map.insert(key, meta.clone());
        Registration { registry: self.clone(), key, meta }
    }

    /// Every live client session.
    /// KILL_CLIENT: tells the session with this id to end; whether there was one.
    pub fn kill(&self, id: u64) -> bool {
        let map = self.map.lock();
        let Some(meta) = map.values().find(|m| m.id == id) else { return false };
        meta.killed.store(true, std::sync::atomic::Ordering::Release);
        meta.wake.notify();
        true
    }

    /// Wakes every session that holds no server connection, so an idle one gives its buffers
    /// back (an idle client then costs its socket and a few hundred bytes of state). How many.
    pub fn nudge_idle(&self) -> usize {
        let map = self.map.lock();
        let idle = map.values().filter(|m| m.server.lock().is_none());
        idle.map(|m| m.wake.notify()).count()
    }

    /// Wakes every session (shutdown: each one reads the shutdown signal when woken).
    pub fn wake_all(&self) {
        self.map.lock().values().for_each(|m| m.wake.notify());
    }

    pub fn clients(&self) -> Vec<Arc<ClientMeta>> {
        let mut v: Vec<_> = self.map.lock().values().cloned().collect();
        v.sort_by_key(|m| m.connected);
        v
    }

    /// Forwards a cancel for `key` if its client has a query running on a server right now, and
    /// returns once PostgreSQL has processed it (or after CANCEL_WAIT).
    pub async fn cancel(&self, key: (i32, i32)) {
        let claimed = {
            let map = self.map.lock();
            let Some(meta) = map.get(&key) else {
                tracing::debug!("cancel request for an unknown client ignored");
                return;
            };
            let server = meta.server.lock();
            match server.as_ref() {
                // The session detaches under this lock before it waits on the gate, so a cancel
                // counted in here always precedes that wait.
                Some(t) if meta.running.load(std::sync::atomic::Ordering::Acquire) => Some((t.clone(), t.gate.enter())),
                _ => None,
            }
        };
        let Some((target, _held)) = claimed else {
            tracing::debug!("cancel request for an idle client ignored");
            return;
        };
        if crate::timers::timeout(CANCEL_WAIT, forward(&target)).await.is_err() {
            tracing::warn!(
                "a forwarded cancel request to {} took over {CANCEL_WAIT:?}: that server connection will be closed, not reused",
                target.addr
            );
            target.gate.mark_doubtful();
        }
    }
}

/// Cancels what `t`'s backend runs (pgpilot's own decision, e.g. query_timeout), waiting at most
/// as long as a client's cancel.
pub async fn cancel_backend(t: &ServerKey) {
    let _ = crate::timers::timeout(CANCEL_WAIT, forward(t)).await;
}

/// Sends the CancelRequest with the server's own key and waits for the server to close the
/// connection, which it does after signalling the backend.
async fn forward(t: &ServerKey) {
    let packet = crate::net::messages::cancel_request(t.pid, t.secret);
    use crate::net::endpoint::Socket;
    match t.addr.connect().await {
        Ok(Socket::Tcp(s)) => exchange(s, &packet).await,
        Ok(Socket::Unix(s)) => exchange(s, &packet).await,
        Err(e) => tracing::warn!("could not forward a cancel request to {}: {e}", t.addr),
    }
}

/// Writes the request and reads until the server closes the connection.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, packet: &[u8]) {
    if s.write_all(packet).await.is_ok() {
        let mut sink = [0u8; 64];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
    }
}
