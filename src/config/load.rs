//! Building a `Config`: defaults < TOML file < environment < flags, then validation.

use anyhow::{bail, Context, Result};

use super::{Cli, Config, Upstream};

/// Loads and validates the configuration the way `--check` and SIGHUP see it.
pub fn load(cli: &Cli) -> Result<Config> {
    let mut upstream_given = cli.upstream.is_some();
    let config = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let tree = toml::from_str::<toml::Table>(&text).with_context(|| format!("parsing {}", path.display()))?;
            upstream_given |= tree.get("upstream").and_then(|u| u.get("url")).is_some();
            toml::from_str::<Config>(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => Config::default(),
    };
    let vars: Vec<(String, String)> = std::env::vars().collect();
    upstream_given |= vars.iter().any(|(k, _)| UPSTREAM_VARS.contains(&k.as_str()));
    let mut config = super::env::apply(config, &vars)?;
    apply_flags(&mut config, cli);
    validate(&config)?;
    if !upstream_given {
        // A default server would only fail later with an authentication error that names nothing.
        bail!("no upstream server: pass --upstream postgres://USER:PASSWORD@HOST:PORT or set DATABASE_URL");
    }
    Ok(config)
}

/// The environment variables that name the upstream server.
const UPSTREAM_VARS: [&str; 3] = ["DATABASE_URL", "PGPILOT_UPSTREAM", "PGPILOT_UPSTREAM_URL"];

fn apply_flags(config: &mut Config, cli: &Cli) {
    if let Some(v) = &cli.listen {
        config.server.listen = v.clone();
    }
    if let Some(v) = &cli.http_listen {
        config.server.http_listen = v.clone();
    }
    if let Some(v) = &cli.upstream {
        config.upstream.url = v.clone();
    }
    if let Some(v) = cli.pool_mode {
        config.pool.mode = v;
    }
    if let Some(v) = &cli.redis_url {
        config.cache.redis_url = Some(v.clone());
    }
}

fn validate(config: &Config) -> Result<()> {
    parse_upstream(&config.upstream.url).context("upstream url")?;
    for (what, addr) in [("server.listen", &config.server.listen), ("server.http_listen", &config.server.http_listen)] {
        addr.parse::<std::net::SocketAddr>().with_context(|| format!("{what} = {addr:?} is not HOST:PORT"))?;
    }
    let pool = &config.pool;
    if pool.max_size == 0 {
        bail!("pool.max_size must be at least 1");
    }
    if pool.min_size > pool.max_size {
        bail!("pool.min_size ({}) is larger than pool.max_size ({})", pool.min_size, pool.max_size);
    }
    let prepared = &config.prepared;
    if prepared.server_cache_size == 0 || prepared.registry_max == 0 || prepared.client_max == 0 {
        bail!("prepared.server_cache_size, registry_max and client_max must be at least 1");
    }
    if config.server.max_message_bytes < 1024 {
        bail!("server.max_message_bytes must be at least 1024");
    }
    config.strategy.check().map_err(anyhow::Error::msg)?;
    for rule in &config.cache.rules {
        if rule.table.is_some() == rule.fingerprint.is_some() {
            bail!("each [[cache.rules]] names exactly one of table or fingerprint");
        }
        if let Some(fp) = &rule.fingerprint {
            u64::from_str_radix(fp, 16).with_context(|| format!("cache rule fingerprint {fp:?} is not hex"))?;
        }
    }
    if let Some(url) = config.cache.redis_url.as_deref().filter(|u| !u.is_empty()) {
        redis::Client::open(url).with_context(|| format!("cache.redis_url {url:?}"))?;
    }
    if config.tls.cert.is_some() != config.tls.key.is_some() {
        bail!("tls.cert and tls.key must be set together");
    }
    for user in &config.users {
        user.validate()?;
    }
    Ok(())
}

/// Parses `postgres://USER[:PASSWORD]@HOST[:PORT][/ignored]`; the database part is ignored because
/// clients choose their database.
pub fn parse_upstream(text: &str) -> Result<Upstream> {
    let url = url::Url::parse(text).with_context(|| format!("{text:?} is not a URL"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        bail!("upstream url must start with postgres://");
    }
    let host = url.host_str().filter(|h| !h.is_empty()).context("upstream url has no host")?;
    let decode = |s: &str| percent_decode(s);
    let user = decode(url.username());
    if user.is_empty() {
        bail!("upstream url has no user (postgres://USER:PASSWORD@HOST:PORT)");
    }
    Ok(Upstream {
        host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
        port: url.port().unwrap_or(5432),
        user,
        password: url.password().map(decode),
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_forms() {
        let u = parse_upstream("postgres://app:p%40ss@db.local:6543/x").unwrap();
        assert_eq!(
            (u.user.as_str(), u.password.as_deref(), u.host.as_str(), u.port),
            ("app", Some("p@ss"), "db.local", 6543)
        );
        let u = parse_upstream("postgresql://app@127.0.0.1").unwrap();
        assert_eq!((u.port, u.password), (5432, None));
        assert!(parse_upstream("mysql://a@b").is_err());
        assert!(parse_upstream("postgres://127.0.0.1:5432").is_err());
    }

    #[test]
    fn the_parsed_upstream_follows_its_url() {
        let mut cfg = Config::default();
        assert_eq!(cfg.upstream().user, "postgres");
        cfg.upstream.url = "postgres://other@10.0.0.1:6000".into();
        let u = cfg.clone().upstream();
        assert_eq!((u.user.as_str(), u.host.as_str(), u.port), ("other", "10.0.0.1", 6000));
        // The login's user entry follows the URL too: borrowed while it is the parsed one.
        assert!(matches!(cfg.find_user("other"), Some(std::borrow::Cow::Owned(_))), "parsed anew");
        assert!(cfg.find_user("postgres").is_none(), "the old URL's user");
        let fresh = cfg.clone();
        let fresh = Config { parsed_upstream: Default::default(), ..fresh };
        assert!(matches!(fresh.find_user("other"), Some(std::borrow::Cow::Borrowed(_))));
        assert!(fresh.find_user("postgres").is_none());
    }

    #[test]
    fn the_documented_example_is_valid_and_matches_the_defaults() {
        let example: Config = toml::from_str(include_str!("../../config/pgpilot.toml")).unwrap();
        validate(&example).unwrap();
        let d = Config::default();
        // Every key the example documents has the default's value (users and rules are examples).
        let (mut shown, mut default) = (example.clone(), d.clone());
        shown.users.clear();
        default.users.clear();
        assert_eq!(toml::to_string(&shown).unwrap(), toml::to_string(&default).unwrap());
        assert_eq!(example.server.listen, d.server.listen);
        assert_eq!(example.pool.max_size, d.pool.max_size);
        assert_eq!(example.pool.checkout_timeout_ms, d.pool.checkout_timeout_ms);
        assert_eq!(example.prepared.server_cache_size, d.prepared.server_cache_size);
        assert_eq!(example.server.max_message_bytes, d.server.max_message_bytes);
    }

    #[test]
    fn validation_rejects_bad_pools() {
        let mut c = Config::default();
        c.pool.min_size = 30;
        assert!(validate(&c).is_err());
        c.pool.min_size = 0;
        c.pool.max_size = 0;
        assert!(validate(&c).is_err());
    }
}
