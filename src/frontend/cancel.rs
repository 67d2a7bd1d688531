//! CancelRequest routing. Each client gets a proxy-issued key; a cancel with that key is sent to
//! the server connection the client holds at that moment, with that server's own key, and to
//! nothing else (a cancel between transactions is dropped, as the query it aimed at is done).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Copy)]
pub struct ServerKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

/// Shared between a session (which updates it on checkout and release) and the registry.
pub type Slot = Arc<Mutex<Option<ServerKey>>>;

#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), Slot>>,
}

/// Removes the registration when the session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub key: (i32, i32),
    pub slot: Slot,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.lock().remove(&self.key);
    }
}

impl CancelRegistry {
    pub fn register(self: &Arc<Self>) -> Registration {
        let slot: Slot = Arc::default();
        let mut map = self.map.lock();
        let key = loop {
            let key = (rand::random::<i32>() & 0x7fff_ffff, rand::random::<i32>());
            if !map.contains_key(&key) {
                break key;
            }
        };
        map.insert(key, slot.clone());
        Registration { registry: self.clone(), key, slot }
    }

    /// Forwards a cancel for `key` if its client holds a server connection right now.
    pub async fn cancel(&self, key: (i32, i32)) {
        let target = self.map.lock().get(&key).and_then(|slot| *slot.lock());
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
