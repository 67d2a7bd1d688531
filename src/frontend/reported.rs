//! What the client has been told of its session's parameters (ParameterStatus), so that it hears
//! what a direct connection would tell it: the values at login (shared with the pool's other
//! logins), changes since, and the startup values a RESET in flight returns to.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use foldhash::HashMap;

use crate::net::frame::{body, cstr};

#[derive(Default)]
pub struct Reported {
    /// The ParameterStatus values the client was told at login (the server connection's, shared).
    pub at_login: Arc<BTreeMap<String, String>>,
    /// Values told since, by lower-cased name (they take precedence).
    since: HashMap<String, String>,
    /// Startup values the client's last RESET returns to (until its transaction ends).
    pub restoring: Vec<(String, String)>,
}

impl Reported {
    /// A RESET of these settings was sent: their startup values are what the client's session
    /// holds once it commits.
    pub fn restore(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        for pair in pairs {
            if !self.restoring.iter().any(|(k, _)| k.eq_ignore_ascii_case(&pair.0)) {
                self.restoring.push(pair);
            }
        }
    }

    /// A ParameterStatus on its way to the client (`out`). After a RESET the server reports its
    /// own defaults, while on a direct connection the client's startup values come back: report
    /// those (they are what the client's state is, and what the server gets at the boundary
    /// unless the RESET's transaction rolls back). A value equal to what the client was last
    /// told is not reported again, as PostgreSQL reports only changes.
    pub fn relay(&mut self, frame: &[u8], out: &mut BytesMut) {
        let Some((name, rest)) = cstr(body(frame)) else { return out.extend_from_slice(frame) };
        let name = String::from_utf8_lossy(name).into_owned();
        let restored = self.restoring.iter().find(|(k, _)| k.eq_ignore_ascii_case(&name)).map(|(_, v)| v.clone());
        let value = match restored {
            Some(v) => v,
            None => cstr(rest).map_or(String::new(), |(v, _)| String::from_utf8_lossy(v).into()),
        };
        let key = name.to_ascii_lowercase();
        let told = self.since.get(&key).or_else(|| self.at_login.get(&name));
        if told == Some(&value) {
            return;
        }
        crate::net::messages::parameter_status(out, &name, &value);
        self.since.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, value: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        crate::net::messages::parameter_status(&mut out, name, value);
        out.to_vec()
    }

    #[test]
    fn the_client_hears_changes_only_and_its_startup_values_after_a_reset() {
        let mut r = Reported {
            at_login: Arc::new([("DateStyle".to_string(), "ISO, MDY".to_string())].into_iter().collect()),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        r.relay(&status("DateStyle", "ISO, MDY"), &mut out);
        assert!(out.is_empty(), "as told at login");
        r.relay(&status("DateStyle", "German, DMY"), &mut out);
        assert_eq!(&out[..], &status("DateStyle", "German, DMY")[..]);
        out.clear();
        // RESET: the server reports its default, the client hears its startup value.
        r.restore([("datestyle".to_string(), "ISO, MDY".to_string())]);
        r.restore([("DATESTYLE".to_string(), "ignored: one per name".to_string())]);
        r.relay(&status("DateStyle", "Postgres, MDY"), &mut out);
        assert_eq!(&out[..], &status("DateStyle", "ISO, MDY")[..]);
    }
}
