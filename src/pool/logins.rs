//! What a pool's logins were told (ParameterStatus values), so that in transaction mode a login
//! needs no server connection: a pool whose connections are all busy (20 clients idle in a
//! transaction) cannot lock out logins.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

/// What a client is told at login for one set of startup settings, as a server connection of
/// the pool reported it after those settings were applied.
#[derive(Clone)]
pub struct Login {
    pub params: Arc<BTreeMap<String, String>>,
    pub frames: bytes::Bytes,
}

impl Login {
    fn new(params: BTreeMap<String, String>) -> Self {
        Self { frames: crate::net::messages::parameter_statuses(&params), params: Arc::new(params) }
    }
}

/// Distinct startup settings remembered per pool (a client cannot grow the maps without bound).
const MAX_LOGINS: usize = 64;

/// Logins remembered by the signature of the client's startup settings (a service's clients all
/// send the same), and by the signature of all but a plain application_name. Forgotten when a
/// new connection of the pool reports other values than the one before (the server restarted
/// with another configuration or version).
#[derive(Default)]
pub struct Logins(Mutex<Known>);

#[derive(Default)]
struct Known {
    /// What the newest connection reported before any client setting was applied.
    base: Option<Arc<BTreeMap<String, String>>>,
    by_settings: HashMap<u64, Login>,
    by_settings_but_name: HashMap<u64, Login>,
}

impl Logins {
    /// What a login with startup settings `sig` is told, when a connection already said.
    pub fn get(&self, sig: u64) -> Option<Login> {
        self.0.lock().by_settings.get(&sig).cloned()
    }

    /// What a login with settings `but_name` plus application_name `name` is told, from one
    /// that differed only in the name (PostgreSQL reports a printable name as given).
    pub fn like(&self, but_name: u64, name: &str) -> Option<Login> {
        let similar = self.0.lock().by_settings_but_name.get(&but_name)?.params.clone();
        let mut params = (*similar).clone();
        params.insert("application_name".into(), name.into());
        Some(Login::new(params))
    }

    /// What a login with never-seen startup `settings` is told while no connection is free:
    /// the newest connection's values, with the client's own for those it set, as given (a
    /// UTF8 client_encoding spelled as the server reports it). PostgreSQL may spell other values
    /// differently ("iso" is reported as "ISO, MDY", "sjis" as "SJIS"); that inexactness is
    /// taken only so that a busy pool cannot lock a login out (every name but UTF8's counts as a
    /// foreign encoding for lexing, however spelled).
    pub fn from_base(&self, settings: &BTreeMap<String, String>) -> Option<Login> {
        let mut params = (**self.0.lock().base.as_ref()?).clone();
        for (name, value) in settings {
            let Some(key) = params.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned() else { continue };
            let utf8 =
                key == "client_encoding" && value != "UNICODE" && crate::protocol::utf8_encoding(value.as_bytes());
            params.insert(key, if utf8 { "UTF8".into() } else { value.clone() });
        }
        Some(Login::new(params))
    }

    /// Remembers what a login with settings signature `sig` (and, when it has a plain
    /// application_name, `but_name`: the signature without it) was told.
    pub fn remember(&self, sig: u64, but_name: Option<u64>, login: Login) {
        let mut known = self.0.lock();
        if known.by_settings.len() >= MAX_LOGINS || known.by_settings_but_name.len() >= MAX_LOGINS {
            known.by_settings.clear();
            known.by_settings_but_name.clear();
        }
        if let Some(but_name) = but_name.filter(|_| login.params.contains_key("application_name")) {
            known.by_settings_but_name.insert(but_name, login.clone());
        }
        known.by_settings.insert(sig, login);
    }

    /// A new connection of the pool reported `params` before any client setting: different
    /// values from the last one's make every login remembered stale.
    pub fn saw_connection(&self, params: &Arc<BTreeMap<String, String>>) {
        let mut known = self.0.lock();
        if known.base.as_deref() != Some(&**params) {
            known.by_settings.clear();
            known.by_settings_but_name.clear();
            known.base = Some(params.clone());
        }
    }
}
