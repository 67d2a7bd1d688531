//! Users allowed to log in, and the secret forms their passwords may take.

use anyhow::{bail, Result};
use serde::Deserialize;

use super::Upstream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    #[default]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub auth: AuthMethod,
    #[serde(default)]
    pub server_user: Option<String>,
    #[serde(default)]
    pub server_password: Option<String>,
    #[serde(default)]
    pub pool_size: Option<usize>,
}

/// What a configured password string is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret<'a> {
    Plain(&'a str),
    /// `md5` + hex(md5(password || user)), as in pg_authid.
    Md5Hash(&'a str),
    /// `SCRAM-SHA-256$iter:salt$stored:server`, as in pg_authid.
    Scram(&'a str),
}

impl UserConfig {
    /// The single login of the one-line setup: the upstream URL's user and password, SCRAM.
    pub fn from_upstream(up: &Upstream) -> Self {
        Self {
            name: up.user.clone(),
            password: up.password.clone(),
            // Without a password in the URL there is nothing to check a client against: the login
            // fails (trust must be asked for, in a [[users]] entry).
            auth: AuthMethod::ScramSha256,
            server_user: None,
            server_password: up.password.clone(),
            pool_size: None,
        }
    }

    pub fn secret(&self) -> Option<Secret<'_>> {
        let p = self.password.as_deref()?;
        Some(if p.starts_with("SCRAM-SHA-256$") {
            Secret::Scram(p)
        } else if p.len() == 35 && p.starts_with("md5") && p[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
            Secret::Md5Hash(p)
        } else {
            Secret::Plain(p)
        })
    }

    /// Credentials toward the server: explicit ones, else the plain client password.
    pub fn server_credentials(&self, upstream: &Upstream) -> (String, Option<String>) {
        let user = self.server_user.clone().unwrap_or_else(|| self.name.clone());
        let password = self.server_password.clone().or_else(|| match self.secret() {
            Some(Secret::Plain(p)) => Some(p.to_string()),
            _ if user == upstream.user => upstream.password.clone(),
            _ => None,
        });
        (user, password)
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            bail!("a [[users]] entry has an empty name");
        }
        match (self.auth, self.secret()) {
            (AuthMethod::Trust, _) => Ok(()),
            (_, None) => bail!("user {:?}: auth {:?} needs a password", self.name, self.auth),
            (AuthMethod::Md5, Some(Secret::Scram(_))) => {
                bail!("user {:?}: md5 auth cannot use a SCRAM secret", self.name)
            }
            (AuthMethod::ScramSha256, Some(Secret::Md5Hash(_))) => {
                bail!("user {:?}: scram-sha-256 auth cannot use an md5 hash", self.name)
            }
            (AuthMethod::ScramSha256, Some(Secret::Scram(s))) => {
                crate::config::secrets::parse_scram_secret(s).map(|_| ())
            }
            _ => Ok(()),
        }
    }
}
