//! Configuration by environment alone (containers): `PGPILOT_<SECTION>_<KEY>` for every scalar key
//! of a section (`PGPILOT_POOL_MAX_SIZE=20`, lists comma-separated), `PGPILOT_USERS_FILE` for the
//! `[[users]]` list, and the flat names of earlier versions (`DATABASE_URL`, `PGPILOT_UPSTREAM`).
//! A key is typed by the value it replaces, so a password of digits stays a string; a variable
//! naming a section but no key of it is an error (a typo must not be ignored). Other `PGPILOT_`
//! variables (`PGPILOT_LOG`) are not configuration.

use anyhow::{bail, Context, Result};
use toml::Value;

use super::{Config, UserConfig};

/// The sections of the file, as the environment spells them.
const SECTIONS: [&str; 9] = ["server", "tls", "upstream", "pool", "cache", "prepared", "insights", "http", "strategy"];
/// Flat names read elsewhere (the command line's `env` names, logging): not `SECTION_KEY`, even
/// where they look like one (`PGPILOT_HTTP_LISTEN` is `server.http_listen`, not `[http] listen`).
const FLAT: [&str; 6] =
    ["PGPILOT_CONFIG", "PGPILOT_LISTEN", "PGPILOT_HTTP_LISTEN", "PGPILOT_REDIS_URL", "PGPILOT_UPSTREAM", "PGPILOT_LOG"];
/// Keys holding lists of tables: only in a file.
const FILE_ONLY: [&str; 2] = ["rules", "pins"];

/// `config` with every configuration variable of `vars` applied, in the order given.
pub fn apply(config: Config, vars: &[(String, String)]) -> Result<Config> {
    let mut config = config;
    // The one-line redirect, then pgpilot's own flat name for it; `PGPILOT_UPSTREAM_URL` after both.
    for flat in ["DATABASE_URL", "PGPILOT_UPSTREAM"] {
        if let Some((_, url)) = vars.iter().find(|(k, _)| k == flat) {
            config.upstream.url = url.clone();
        }
    }
    let mut tree = Value::try_from(&config).context("configuration as TOML")?;
    let mut users: Option<Vec<UserConfig>> = None;
    let mut changed = false;
    for (name, raw) in vars {
        if name == "PGPILOT_USERS_FILE" {
            users = Some(read_users(raw)?);
            continue;
        }
        if FLAT.contains(&name.as_str()) {
            continue;
        }
        let Some((section, key)) = split(name) else { continue };
        if FILE_ONLY.contains(&key.as_str()) {
            bail!("{name}: [[{section}.{key}]] can only be set in a configuration file");
        }
        let table = tree.get_mut(section).and_then(Value::as_table_mut).context("configuration section")?;
        let value = typed(table.get(&key), raw).with_context(|| format!("{name}={raw:?}"))?;
        table.insert(key, value);
        changed = true;
    }
    let mut config = match changed {
        true => {
            let text = toml::to_string(&tree).context("configuration as TOML")?;
            toml::from_str::<Config>(&text).context("PGPILOT_ variables")?
        }
        false => config,
    };
    if let Some(users) = users {
        config.users = users;
    }
    Ok(config)
}

/// (section, key) of a `PGPILOT_SECTION_KEY` name, or None for a variable that is not configuration.
fn split(name: &str) -> Option<(&'static str, String)> {
    let rest = name.strip_prefix("PGPILOT_")?;
    SECTIONS.iter().find_map(|s| {
        let key = rest.strip_prefix(&s.to_ascii_uppercase())?.strip_prefix('_')?;
        (!key.is_empty()).then(|| (*s, key.to_ascii_lowercase()))
    })
}

/// `raw` as the type of the value it replaces (a key unset by default takes a string).
fn typed(old: Option<&Value>, raw: &str) -> Result<Value> {
    Ok(match old {
        None | Some(Value::String(_)) => Value::String(raw.to_string()),
        Some(Value::Boolean(_)) => Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => bail!("not a boolean (true or false)"),
        }),
        Some(Value::Integer(_)) => Value::Integer(raw.trim().parse().context("not a whole number")?),
        Some(Value::Float(_)) => Value::Float(raw.trim().parse().context("not a number")?),
        Some(Value::Array(items)) => {
            let element = items.first();
            let parts = raw.split(',').map(str::trim).filter(|p| !p.is_empty());
            Value::Array(parts.map(|p| typed(element, p)).collect::<Result<_>>()?)
        }
        Some(other) => bail!("a {} cannot be set from the environment", other.type_str()),
    })
}

/// The `[[users]]` of a TOML file (what a Secret mounts in a container).
fn read_users(path: &str) -> Result<Vec<UserConfig>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        users: Vec<UserConfig>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("PGPILOT_USERS_FILE: reading {path}"))?;
    Ok(toml::from_str::<File>(&text).with_context(|| format!("PGPILOT_USERS_FILE: parsing {path}"))?.users)
}

/// The effective configuration as TOML with every secret replaced (`--check`).
pub fn masked(config: &Config) -> String {
    toml::to_string(&masked_config(config)).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
}

/// The configuration with every secret replaced: URL passwords, user passwords, tokens, keys
/// (what `--check` and the admin console's SHOW CONFIG show).
pub fn masked_config(config: &Config) -> Config {
    let mut c = config.clone();
    c.upstream.url = mask_url(&c.upstream.url);
    c.cache.redis_url = c.cache.redis_url.as_deref().map(mask_url);
    for secret in [&mut c.http.token, &mut c.server.auth_secret, &mut c.cache.replication_password] {
        mask(secret);
    }
    for u in &mut c.users {
        mask(&mut u.password);
        mask(&mut u.server_password);
    }
    c
}

fn mask(secret: &mut Option<String>) {
    if secret.is_some() {
        *secret = Some("********".into());
    }
}

/// `scheme://user:****@host...`: the password of a URL hidden.
fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:********@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_scalar_key_has_an_environment_name() {
        let c = apply(
            Config::default(),
            &vars(&[
                ("PGPILOT_POOL_MAX_SIZE", "42"),
                ("PGPILOT_POOL_MODE", "session"),
                ("PGPILOT_CACHE_ENABLED", "false"),
                ("PGPILOT_STRATEGY_SLOW_LANE_SHARE", "0.25"),
                ("PGPILOT_SERVER_ADMIN_USERS", "alice, bob"),
                ("PGPILOT_CACHE_REDIS_URL", "redis://r:6379"),
                ("PGPILOT_HTTP_TOKEN", "1234"),
                ("PGPILOT_LOG", "debug"),
                ("PGPILOT_HTTP_LISTEN", "0.0.0.0:1"),
                ("PGPILOTX", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.pool.max_size, 42);
        assert_eq!(c.pool.mode, crate::config::PoolMode::Session);
        assert!(!c.cache.enabled);
        assert_eq!(c.strategy.slow_lane_share, 0.25);
        assert_eq!(c.server.admin_users, ["alice", "bob"]);
        assert_eq!(c.cache.redis_url.as_deref(), Some("redis://r:6379"));
        assert_eq!(c.http.token.as_deref(), Some("1234"), "digits stay a string where a string is expected");
    }

    #[test]
    fn typos_and_wrong_types_are_errors() {
        let err = |v: &[(&str, &str)]| format!("{:#}", apply(Config::default(), &vars(v)).unwrap_err());
        assert!(err(&[("PGPILOT_POOL_MAXSIZE", "3")]).contains("maxsize"));
        assert!(err(&[("PGPILOT_POOL_MAX_SIZE", "many")]).contains("PGPILOT_POOL_MAX_SIZE"));
        assert!(err(&[("PGPILOT_CACHE_ENABLED", "maybe")]).contains("boolean"));
        assert!(err(&[("PGPILOT_CACHE_RULES", "x")]).contains("configuration file"));
    }

    #[test]
    fn the_flat_names_and_their_precedence() {
        let c = apply(
            Config::default(),
            &vars(&[("PGPILOT_UPSTREAM_URL", "postgres://a@h:1"), ("DATABASE_URL", "postgres://b@h:2")]),
        )
        .unwrap();
        assert_eq!(c.upstream.url, "postgres://a@h:1", "the section key over DATABASE_URL");
        let c = apply(
            Config::default(),
            &vars(&[("DATABASE_URL", "postgres://b@h:2"), ("PGPILOT_UPSTREAM", "postgres://c@h:3")]),
        )
        .unwrap();
        assert_eq!(c.upstream.url, "postgres://c@h:3");
    }

    #[test]
    fn users_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("pgpilot-users-{}", std::process::id()));
        std::fs::write(&dir, "[[users]]\nname = \"app\"\npassword = \"s3cret\"\n").unwrap();
        let c = apply(Config::default(), &vars(&[("PGPILOT_USERS_FILE", dir.to_str().unwrap())])).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.users[0].name, "app");
        let shown = masked(&c);
        assert!(!shown.contains("s3cret") && shown.contains("********"), "{shown}");
    }

    #[test]
    fn secrets_are_masked() {
        let mut c = Config::default();
        c.upstream.url = "postgres://app:pw@db:5432/x".into();
        c.cache.redis_url = Some("redis://:redispw@r:6379".into());
        c.http.token = Some("tok".into());
        let shown = masked(&c);
        assert!(shown.contains("postgres://app:********@db:5432/x"), "{shown}");
        assert!(!shown.contains("pw@") && !shown.contains("\"tok\""), "{shown}");
    }
}
