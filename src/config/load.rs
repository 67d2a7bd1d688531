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
    url_sslmode(&mut config)?;
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

/// The upstream URL's `sslmode` parameter (`host` and `port` are read by `parse_upstream`; the
/// others, application_name, connect_timeout, ..., are libpq's client-side options and are not
/// applied). Of the URL's sslmode and `[upstream] sslmode` the stricter applies: a DATABASE_URL's `?sslmode=verify-full` must not quietly become `prefer`,
/// and a provider's `?sslmode=require` must not weaken a configured `verify-full`.
fn url_sslmode(config: &mut Config) -> Result<()> {
    use super::SslMode;
    let params = url_params(&config.upstream.url)?;
    let Some((_, value)) = params.iter().rev().find(|(k, _)| k == "sslmode") else { return Ok(()) };
    let mode = match value.as_str() {
        // (allow tries plain first: no stricter than disable for this rule)
        "disable" | "allow" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        _ => bail!("upstream url: sslmode={value:?} (disable, allow, prefer, require, verify-ca, verify-full)"),
    };
    config.upstream.sslmode = config.upstream.sslmode.max(mode);
    Ok(())
}

/// The URL's query parameters, decoded as libpq decodes them (`%XX` only: a `+` stays a `+`, a
/// `#` is a character); a parameter without `=` is an error, as in libpq.
fn url_params(text: &str) -> Result<Vec<(String, String)>> {
    let Some((_, query)) = text.split_once('?') else { return Ok(Vec::new()) };
    let pair = |p: &str| match p.split_once('=') {
        Some((k, v)) => Ok((percent_decode(k), percent_decode(v))),
        None => bail!("upstream url: the parameter {:?} has no value", percent_decode(p)),
    };
    query.split('&').filter(|p| !p.is_empty()).map(pair).collect()
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

/// Parses `postgres://USER[:PASSWORD]@HOST[:PORT][/ignored][?host=H&port=P]`; the database part
/// is ignored because clients choose their database. As in libpq, a host that starts with `/`
/// (percent-encoded in the authority, `%2Fvar%2Frun%2Fpostgresql`, or in a `host` parameter) is
/// the directory of the server's Unix-domain socket, and the parameters win over the authority.
pub fn parse_upstream(text: &str) -> Result<Upstream> {
    // libpq leaves the authority's host empty when a parameter names it (`app@/db?host=/dir`),
    // which a URL parser refuses: a stand-in host that only a `host` parameter may replace.
    let (url, stand_in) = match url::Url::parse(text) {
        Err(url::ParseError::EmptyHost) => (url::Url::parse(&with_host(text, "_")), true),
        parsed => (parsed, false),
    };
    let url = url.with_context(|| format!("{text:?} is not a URL"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        bail!("upstream url must start with postgres://");
    }
    // (the last of a repeated parameter wins, as in libpq)
    let params = url_params(text)?;
    let param = |k: &str| params.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let authority_host = if stand_in { String::new() } else { percent_decode(url.host_str().unwrap_or_default()) };
    let host = param("host").unwrap_or(authority_host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("upstream url has no host");
    }
    let port = match param("port") {
        Some(p) => p.parse().with_context(|| format!("upstream url: port={p:?} is not a port number"))?,
        None => url.port().unwrap_or(5432),
    };
    let user = percent_decode(url.username());
    if user.is_empty() {
        bail!("upstream url has no user (postgres://USER:PASSWORD@HOST:PORT)");
    }
    Ok(Upstream { host: host.to_string(), port, user, password: url.password().map(percent_decode) })
}

/// `text` with `host` written where its authority's host is empty (after the userinfo).
fn with_host(text: &str, host: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else { return text.to_string() };
    let end = text[start..].find(['/', '?', '#']).map_or(text.len(), |i| start + i);
    let at = text[start..end].rfind('@').map_or(start, |i| start + i + 1);
    format!("{}{host}{}", &text[..at], &text[at..])
}

/// `s` as one part of a URL: unreserved characters kept, every other byte `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            // (bytes, not a str slice: a multi-byte character after '%' is no boundary)
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
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
        // Unix-domain sockets, as libpq writes them: an encoded directory, or a host parameter.
        let u = parse_upstream("postgres://app:pw@%2Fvar%2Frun%2Fpostgresql:5433/db").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.password.as_deref()), ("/var/run/postgresql", 5433, Some("pw")));
        let u = parse_upstream("postgresql://app@/db?host=/tmp/pg%20sock&port=6000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("/tmp/pg sock", 6000));
        let u = parse_upstream("postgres://app@[::1]:7000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        let encoded = format!("postgres://{}@{}:5432", percent_encode("a@b"), percent_encode("/run/x y"));
        let u = parse_upstream(&encoded).unwrap();
        assert_eq!((u.user.as_str(), u.host.as_str()), ("a@b", "/run/x y"));
        let u = parse_upstream("postgres://app:pw@:5433/?host=%2Frun").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.password.as_deref()), ("/run", 5433, Some("pw")));
        let u = parse_upstream("postgres://app@h/db?host=/one&host=/t+wo&sslmode=disable").unwrap();
        assert_eq!(u.host, "/t+wo", "the last one, and + is not a space");
        assert!(parse_upstream("postgres://app@/db").is_err(), "no host at all");
        assert_eq!(percent_decode("%€x%4"), "%€x%4", "left as written, no panic");
        assert!(parse_upstream("postgres://app@h/db?sslmode").is_err(), "a parameter without a value");
        use super::super::SslMode;
        let mut cfg = Config::default();
        cfg.upstream.url = "postgres://app@h/db?sslmode=verify-full&application_name=x".into();
        url_sslmode(&mut cfg).unwrap();
        assert_eq!(cfg.upstream.sslmode, SslMode::VerifyFull, "stricter than the default prefer");
        cfg.upstream.url = "postgres://app@h/db?sslmode=require".into();
        url_sslmode(&mut cfg).unwrap();
        assert_eq!(cfg.upstream.sslmode, SslMode::VerifyFull, "the configured verify-full is kept");
        cfg.upstream.url = "postgres://app@h/db?sslmode=allow".into();
        url_sslmode(&mut cfg).unwrap();
        assert_eq!(cfg.upstream.sslmode, SslMode::VerifyFull);
        cfg.upstream.url = "postgres://app@h/db?sslmode=sometimes".into();
        assert!(url_sslmode(&mut cfg).is_err());
        assert!(parse_upstream("postgres://app@h/db?port=x").is_err());
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
