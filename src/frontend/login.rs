//! The end of a login: what the client is told (ParameterStatus values, BackendKeyData,
//! ReadyForQuery), from a server connection or, in transaction mode, from what the pool already
//! knows, so that a pool whose connections are all busy cannot keep a login waiting.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::session::{Flow, Session};
use crate::config::PoolMode;
use crate::net::frame::body;
use crate::net::messages;
use crate::protocol::backend::tx_status;

impl Session {
    /// Finishes the login: a server connection supplies the ParameterStatus values (after the
    /// client's own settings are applied to it), then BackendKeyData and ReadyForQuery, sent in one
    /// write behind `greeting` (the end of the authentication exchange).
    pub async fn start(&mut self, greeting: BytesMut) -> Flow {
        self.cout.extend_from_slice(&greeting);
        // Transaction mode: a login whose startup settings the pool has seen applied needs no
        // server connection (see `pool::Logins`).
        let login = match self.known_login() {
            Some(login) => login,
            None => match self.checkout().await {
                Ok(()) => {
                    let server = self.server.as_mut().expect("checked out");
                    let login = crate::pool::Login { params: server.params.clone(), frames: server.parameter_frames() };
                    let but_name = self.state.login_variant().map(|(sig, _)| sig);
                    self.pool.logins.remember(self.state.sig(), but_name, login.clone());
                    login
                }
                Err(frame) => {
                    let (_, code, msg) = crate::protocol::backend::error_fields(body(&frame));
                    messages::error(&mut self.cout, "FATAL", &code, &msg);
                    let _ = self.client.write_all(&self.cout).await;
                    return Flow::Close;
                }
            },
        };
        self.reading.lexing.at_login(&login.params);
        self.cout.extend_from_slice(&login.frames);
        self.reported.at_login = login.params;
        messages::backend_key_data(&mut self.cout, self.handles.cancel.key.0, self.handles.cancel.key.1);
        messages::ready_for_query(&mut self.cout, tx_status::IDLE);
        if self.mode == PoolMode::Transaction {
            self.release(super::keeping::End::Transaction).await;
        }
        self.flush_client().await
    }

    /// Transaction mode: what the pool already knows to tell this login (its settings seen
    /// applied before, or the same but for a plain application_name), or, when no connection is
    /// free to ask, its best account of them (`Logins::from_base`, not remembered).
    fn known_login(&self) -> Option<crate::pool::Login> {
        if self.mode != PoolMode::Transaction {
            return None;
        }
        let known = self.pool.logins.get(self.state.sig()).or_else(|| {
            let (but_name, name) = self.state.login_variant()?;
            let login = self.pool.logins.like(but_name, name)?;
            self.pool.logins.remember(self.state.sig(), None, login.clone());
            Some(login)
        });
        known
            .or_else(|| (!self.pool.has_capacity()).then(|| self.pool.logins.from_base(self.state.startup())).flatten())
    }
}
