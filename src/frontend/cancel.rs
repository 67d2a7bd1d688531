//! The registry of live client sessions, keyed by the proxy-issued cancel key.
//!
//! CancelRequest routing: a cancel with a client's key is sent to the server connection that
//! client holds at that moment, with that server's own key, and to nothing else (a cancel between
//! transactions is dropped, as the query it aimed at is done). The same entries describe clients
//! and their servers to the admin console.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Copy)]
pub struct ServerKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

/// One client session as the rest of pgpilot may see it.
#[derive(Debug)]
pub struct ClientMeta {
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub peer: String,
    pub connected: SystemTime,
    /// The server connection held right now, if any.
    pub server: Mutex<Option<ServerKey>>,
}

#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), Arc<ClientMeta>>>,
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
    pub fn register(self: &Arc<Self>, meta: ClientMeta) -> Registration {
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
    pub fn clients(&self) -> Vec<Arc<ClientMeta>> {
        let mut v: Vec<_> = self.map.lock().values().cloned().collect();
        v.sort_by_key(|m| m.connected);
        v
    }

    /// Forwards a cancel for `key` if its client holds a server connection right now.
    pub async fn cancel(&self, key: (i32, i32)) {
        let target = self.map.lock().get(&key).and_then(|m| *m.server.lock());
        let Some(t) = target else {
            tracing::debug!("cancel request for an unknown or idle client ignored");
            return;
        };
        let mut packet = Vec::with_capacity(16);
        packet.extend_from_slice(&16i32.to_be_bytes());
        packet.extend_from_slice(&80877102i32.to_be_bytes());
        packet.extend_from_slice(&t.pid.to_be_bytes());
        packet.extend_from_slice(&t.secret.to_be_bytes());
        match tokio::net::TcpStream::connect(t.addr).await {
            Ok(mut s) => {
                let _ = s.write_all(&packet).await;
                let _ = s.shutdown().await;
            }
            Err(e) => tracing::warn!("could not forward a cancel request to {}: {e}", t.addr),
        }
    }
}
