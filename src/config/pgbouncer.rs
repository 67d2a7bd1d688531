//! `pgpilot --from-pgbouncer pgbouncer.ini`: an existing PgBouncer configuration (and its
//! `auth_file`) as the equivalent pgpilot TOML, with every setting that cannot be carried over
//! named. The INI dialect is PgBouncer's own (sections, `key = value`, `;`/`#` comments, values
//! of `[databases]` in libpq's `key=value` form), small enough that a general INI crate would add a
//! dependency and still not parse the connection strings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{AuthMethod, Config, PoolMode, UserConfig};

/// The result: the TOML to write, and what did not carry over (one line each, with why).
pub struct Converted {
    pub toml: String,
    pub dropped: Vec<String>,
}

type Section = BTreeMap<String, String>;

/// Reads `path` (and the `auth_file` it names, relative to it) and converts.
pub fn convert_file(path: &Path) -> Result<Converted> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ini = parse_ini(&text)?;
    let auth_file = ini.get("pgbouncer").and_then(|s| s.get("auth_file")).map(|f| {
        let f = PathBuf::from(f);
        if f.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(f)
        } else {
            f
        }
    });
    let (userlist, unread) = match auth_file.map(|f| (std::fs::read_to_string(&f), f)) {
        Some((Ok(text), _)) => (Some(text), None),
        Some((Err(e), f)) => {
            (None, Some(format!("auth_file = {}: not readable ({e}): no users carried over", f.display())))
        }
        None => (None, None),
    };
    let mut out = convert(&ini, userlist.as_deref())?;
    if let Some(note) = unread {
        out.toml = format!("# not carried over: {note}\n{}", out.toml);
        out.dropped.push(note);
    }
    Ok(out)
}

pub fn convert(ini: &BTreeMap<String, Section>, userlist: Option<&str>) -> Result<Converted> {
    let mut c = Config::default();
    let mut dropped = Vec::new();
    let empty = Section::new();
    let pgb = ini.get("pgbouncer").unwrap_or(&empty);
    for (key, value) in pgb {
        if let Err(why) = setting(&mut c, key, value) {
            dropped.push(format!("[pgbouncer] {key} = {value}: {why}"));
        }
    }
    databases(&mut c, ini.get("databases").unwrap_or(&empty), &mut dropped)?;
    if let Some(list) = userlist {
        let auth = pgb.get("auth_type").map(String::as_str).unwrap_or("md5");
        c.users = users(list, auth, &mut dropped)?;
        // (A server entry without user= gives a URL without one: no user then has the URL's password.)
        let upstream = super::load::parse_upstream(&c.upstream.url).ok();
        let url_login = upstream.as_ref().and_then(|u| u.password.is_some().then_some(u.user.as_str()));
        server_logins(&c.users, url_login, &mut dropped);
    }
    user_settings(&mut c.users, ini.get("users").unwrap_or(&empty), &mut dropped);
    for file in ini.get(INCLUDES).into_iter().flat_map(|s| s.keys()) {
        dropped.push(format!("%include {file}: not followed (convert that file on its own and merge)"));
    }
    for section in ini.keys().filter(|s| !matches!(s.as_str(), "pgbouncer" | "databases" | "users" | INCLUDES)) {
        dropped.push(format!("[{section}]: no pgpilot equivalent"));
    }
    let mut toml = String::from("# Converted from a PgBouncer configuration by pgpilot --from-pgbouncer.\n");
    for d in &dropped {
        toml.push_str(&format!("# not carried over: {d}\n"));
    }
    toml.push_str(&toml::to_string(&c).context("writing the configuration")?);
    Ok(Converted { toml, dropped })
}

/// `[users]` lines (`name = pool_size=N pool_mode=...`): pool_size goes to the user's entry; the
/// rest, and users the auth_file does not list (an entry needs their secret), are named.
fn user_settings(users: &mut [UserConfig], section: &Section, dropped: &mut Vec<String>) {
    for (name, value) in section {
        let mut entry = users.iter_mut().find(|u| &u.name == name);
        for (k, v) in connstring(value) {
            match (k.as_str(), entry.as_deref_mut(), v.parse::<usize>()) {
                ("pool_size", Some(u), Ok(n)) => u.pool_size = Some(n.max(1)),
                ("pool_size", None, _) => dropped.push(format!(
                    "[users] {name}: pool_size={v} (no auth_file entry for {name}: add a [[users]] entry with pool_size)"
                )),
                _ => dropped.push(format!("[users] {name}: {k}={v} (per-user settings other than pool_size are not carried)")),
            }
        }
    }
}

/// An auth_file secret that is a hash logs clients in, but pgpilot cannot log in to the server
/// with it (PgBouncer re-uses the client's SCRAM proof or the md5 hash): such users need a
/// `server_password`, except the upstream URL's user when the URL has a password (`url_login`).
fn server_logins(users: &[UserConfig], url_login: Option<&str>, dropped: &mut Vec<String>) {
    for u in users.iter().filter(|u| Some(u.name.as_str()) != url_login) {
        if !matches!(u.secret(), Some(super::users::Secret::Plain(_)) | None) {
            dropped.push(format!(
                "auth_file {}: its secret is a hash, which checks clients but cannot log pgpilot in to the server: \
                 set server_password (or server_user) in its [[users]] entry",
                u.name
            ));
        }
    }
}

/// PgBouncer's server_tls_sslmode (libpq's names; `allow` has no pgpilot equivalent).
fn sslmode(v: &str) -> Result<super::SslMode, String> {
    use super::SslMode::*;
    Ok(match v.trim() {
        "disable" => Disable,
        "prefer" => Prefer,
        "require" => Require,
        "verify-ca" => VerifyCa,
        "verify-full" => VerifyFull,
        other => {
            return Err(format!("sslmode {other:?}: pgpilot has disable, prefer, require, verify-ca, verify-full"))
        }
    })
}

/// One `[pgbouncer]` setting onto `c`, or why it has no place there.
fn setting(c: &mut Config, key: &str, v: &str) -> Result<(), String> {
    let num = |v: &str| v.trim().parse::<u64>().map_err(|_| format!("{v:?} is not a number"));
    // PgBouncer's times are seconds (fractions allowed); pgpilot's are milliseconds.
    let ms = |v: &str| v.trim().parse::<f64>().map(|s| (s * 1000.0) as u64).map_err(|_| format!("{v:?} is not a time"));
    match key {
        "listen_addr" | "listen_port" => listen(c, key, v)?,
        "pool_mode" => {
            c.pool.mode = match v {
                "session" => PoolMode::Session,
                "transaction" => PoolMode::Transaction,
                _ => return Err("statement pooling is not supported (transaction mode is the closest)".into()),
            }
        }
        "max_client_conn" => c.server.max_client_conn = num(v)? as usize,
        "default_pool_size" => c.pool.max_size = num(v)?.max(1) as usize,
        "min_pool_size" => c.pool.min_size = num(v)? as usize,
        "server_idle_timeout" => c.pool.idle_timeout_ms = ms(v)?,
        "server_lifetime" => c.pool.lifetime_ms = ms(v)?,
        "query_wait_timeout" => c.pool.checkout_timeout_ms = ms(v)?,
        "idle_transaction_timeout" => c.pool.idle_transaction_timeout_ms = ms(v)?,
        "query_timeout" => c.pool.query_timeout_ms = ms(v)?,
        "tcp_user_timeout" => c.server.tcp_user_timeout_ms = num(v)?,
        "tcp_keepidle" => c.server.tcp_keepalive_s = num(v)?,
        // PgBouncer's is a switch whose "on" is 45 s.
        "tcp_defer_accept" => c.server.tcp_defer_accept_s = if num(v)? > 0 { 45 } else { 0 },
        "stats_period" => c.server.stats_period_s = num(v)?,
        "server_tls_sslmode" => c.upstream.sslmode = sslmode(v)?,
        "server_tls_ca_file" => c.upstream.sslrootcert = Some(v.into()),
        "server_tls_cert_file" => c.upstream.sslcert = Some(v.into()),
        "server_tls_key_file" => c.upstream.sslkey = Some(v.into()),
        "server_check_delay" => c.pool.health_check_after_ms = ms(v)?,
        "server_connect_timeout" => c.upstream.connect_timeout_ms = ms(v)?,
        "client_login_timeout" => c.server.startup_timeout_ms = ms(v)?,
        "server_reset_query" => c.pool.reset_query = v.to_string(),
        "max_prepared_statements" => match num(v)? {
            0 => return Err("0 turns prepared statements off in PgBouncer; pgpilot always keeps them working".into()),
            n => c.prepared.server_cache_size = n as usize,
        },
        "admin_users" => c.server.admin_users = list(v),
        "max_db_connections" | "max_user_connections" => {
            c.pool.max_server_connections = num(v)? as usize;
            return Err(
                "carried as pool.max_server_connections (one budget for all pools, not per database or user)".into()
            );
        }
        "client_tls_cert_file" => c.tls.cert = Some(v.into()),
        "client_tls_key_file" => c.tls.key = Some(v.into()),
        "auth_type" | "auth_file" | "client_tls_sslmode" => {} // read with the users / implied by tls
        "unix_socket_dir" => c.server.unix_socket_dir = v.into(),
        _ => return Err(unsupported(key).into()),
    }
    Ok(())
}

/// `listen_addr` or `listen_port` onto `server.listen` (which holds both).
fn listen(c: &mut Config, key: &str, v: &str) -> Result<(), String> {
    if key == "listen_port" {
        let port = v.trim().parse::<u16>().map_err(|_| format!("{v:?} is not a port"))?;
        let host = c.server.listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h).to_string();
        c.server.listen = format!("{host}:{port}");
        return Ok(());
    }
    let addr = if v == "*" || v == "0.0.0.0" { "0.0.0.0" } else { v.split(',').next().unwrap_or(v).trim() };
    let addr = if addr == "localhost" { "127.0.0.1" } else { addr };
    let port = c.server.listen.rsplit(':').next().unwrap_or("6432").to_string();
    c.server.listen = format!("{addr}:{port}");
    Ok(())
}

/// Why a PgBouncer setting pgpilot does not carry has no place in it.
fn unsupported(key: &str) -> &'static str {
    match key {
        "stats_users" => "every user who can log in may run pgpilot's read-only SHOW commands",
        "unix_socket_mode" | "unix_socket_group" => {
            "pgpilot's socket is mode 0777 (logins on it are authenticated as on TCP)"
        }
        "logfile" | "pidfile" | "user" | "syslog" | "syslog_facility" | "syslog_ident" | "log_connections"
        | "log_disconnections" | "log_pooler_errors" | "log_stats" | "verbose" => {
            "pgpilot logs to stderr (PGPILOT_LOG) and runs as its service manager starts it"
        }
        "ignore_startup_parameters" => "not needed: pgpilot tracks startup parameters per client",
        "reserve_pool_size" | "reserve_pool_timeout" => {
            "no reserve pool: pools size themselves between min_size and max_size (pool.adaptive)"
        }
        _ => "no pgpilot equivalent",
    }
}

/// `[databases]`: pgpilot has one upstream server; entries that point elsewhere, rename the
/// database or carry their own pool settings are named.
fn databases(c: &mut Config, dbs: &Section, dropped: &mut Vec<String>) -> Result<()> {
    let mut server: Option<(String, String, Option<String>, Option<String>)> = None;
    for (name, value) in dbs {
        let kv = connstring(value);
        let get = |k: &str| kv.get(k).cloned();
        let here = (
            get("host").unwrap_or_else(|| "127.0.0.1".into()),
            get("port").unwrap_or_else(|| "5432".into()),
            get("user"),
            get("password"),
        );
        if server.is_none() && !kv.contains_key("host") {
            dropped.push(format!(
                "[databases] {name}: no host= (PgBouncer's default Unix-domain socket): 127.0.0.1 is used; \
                 for the socket, set upstream.url's host to its directory (%2Fvar%2Frun%2Fpostgresql)"
            ));
        }
        match &server {
            None => server = Some(here.clone()),
            Some(s) if s.0 != here.0 || s.1 != here.1 => {
                dropped.push(format!(
                    "[databases] {name}: on {}:{}, another server than the first entry's",
                    here.0, here.1
                ));
                continue;
            }
            _ => {}
        }
        if let Some(db) = get("dbname").filter(|d| d != name && name != "*") {
            dropped.push(format!(
                "[databases] {name}: dbname={db} (aliases are not supported: clients use the real name)"
            ));
        }
        for k in kv.keys().filter(|k| !matches!(k.as_str(), "host" | "port" | "user" | "password" | "dbname")) {
            dropped.push(format!("[databases] {name}: {k} (per-database settings are not carried)"));
        }
    }
    let Some((host, port, user, password)) = server else {
        dropped.push("[databases]: no entry: set upstream.url (or DATABASE_URL / --upstream) to the server".into());
        return Ok(());
    };
    let enc = super::load::percent_encode;
    // An address with colons is IPv6 and goes in brackets; a name or a socket directory encoded.
    let host = if host.contains(':') { format!("[{host}]") } else { enc(&host) };
    let auth = match (user, password) {
        (Some(u), Some(p)) => format!("{}:{}@", enc(&u), enc(&p)),
        (Some(u), None) => format!("{}@", enc(&u)),
        _ => String::new(),
    };
    c.upstream.url = format!("postgres://{auth}{host}:{port}");
    if auth.is_empty() {
        dropped.push("[databases]: no user= on the server entry: set upstream.url's user and password".into());
    }
    Ok(())
}

/// `auth_file` lines `"name" "secret"` as users (a SCRAM secret logs in by SCRAM, an md5 hash by
/// md5, a plain password by what auth_type says).
fn users(list: &str, auth_type: &str, dropped: &mut Vec<String>) -> Result<Vec<UserConfig>> {
    let plain_auth = match auth_type {
        "md5" => AuthMethod::Md5,
        "scram-sha-256" | "plain" => AuthMethod::ScramSha256,
        "trust" | "any" => AuthMethod::Trust,
        other => {
            dropped.push(format!(
                "auth_type = {other}: not supported (scram-sha-256, md5 and trust are); users use scram-sha-256"
            ));
            AuthMethod::ScramSha256
        }
    };
    let mut out = Vec::new();
    for (n, line) in list.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let fields = quoted(line);
        let [name, secret] = fields.as_slice() else { bail!("auth_file line {}: expected \"user\" \"secret\"", n + 1) };
        let auth = if plain_auth == AuthMethod::Trust {
            AuthMethod::Trust
        } else if secret.starts_with("SCRAM-SHA-256$") {
            AuthMethod::ScramSha256
        } else if secret.len() == 35 && secret.starts_with("md5") {
            AuthMethod::Md5
        } else {
            plain_auth
        };
        let password = (!secret.is_empty()).then(|| secret.clone());
        out.push(UserConfig {
            name: name.clone(),
            password,
            auth,
            server_user: None,
            server_password: None,
            pool_size: None,
        });
    }
    Ok(out)
}

/// Double-quoted fields of a userlist line (`""` inside a field is one quote).
fn quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut field = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => break,
                c => field.push(c),
            }
        }
        out.push(field);
    }
    out
}

/// libpq's `key=value key='quoted value'` form.
fn connstring(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('\'') {
            Some(q) => q.split_once('\'').unwrap_or((q, "")),
            None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
        };
        out.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = next.trim();
    }
    out
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// The pseudo-section holding `%include` lines' files (not followed).
const INCLUDES: &str = "%include";

/// PgBouncer's INI: `[section]`, `key = value`, comments from `;` or `#` at a line's start.
pub fn parse_ini(text: &str) -> Result<BTreeMap<String, Section>> {
    let mut out: BTreeMap<String, Section> = BTreeMap::new();
    let mut section: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(file) = line.strip_prefix("%include") {
            out.entry(INCLUDES.into()).or_default().insert(file.trim().to_string(), String::new());
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_ascii_lowercase());
            out.entry(name.trim().to_ascii_lowercase()).or_default();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { bail!("line {}: expected key = value", n + 1) };
        let Some(s) = &section else { bail!("line {}: a setting before any [section]", n + 1) };
        out.entry(s.clone()).or_default().insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = "[databases]\n\
        codebase = host=db.internal port=5433 user=app password=s3cret\n\
        workflow = host=db.internal port=5433 dbname=workflow pool_size=40\n\
        legacy = host=other port=5432 dbname=old\n\
        [pgbouncer]\n\
        listen_addr = *\nlisten_port = 6543\npool_mode = transaction\nmax_client_conn = 500\n\
        default_pool_size = 25\nmin_pool_size = 2\nreserve_pool_size = 5\nserver_idle_timeout = 300\n\
        query_wait_timeout = 60\nmax_prepared_statements = 100\nadmin_users = ops, root\n\
        logfile = /var/log/pgbouncer.log\nauth_type = scram-sha-256\ntcp_defer_accept = 0\n\
        unix_socket_dir = /var/run/postgresql\nunix_socket_mode = 0700\n\
        [peers]\n1 = host=peer\n";

    #[test]
    fn settings_carry_over_and_the_rest_is_named() {
        let ini = parse_ini(INI).unwrap();
        let users = "\"app\" \"SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vydg==\"\n\"legacy\" \"md5d41d8cd98f00b204e9800998ecf8427e\"\n\"plain\" \"pw\"\n";
        let out = convert(&ini, Some(users)).unwrap();
        let c: Config = toml::from_str(&out.toml).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:6543");
        assert_eq!((c.pool.max_size, c.pool.min_size, c.server.max_client_conn), (25, 2, 500));
        assert_eq!((c.pool.idle_timeout_ms, c.pool.checkout_timeout_ms), (300_000, 60_000));
        assert_eq!(c.prepared.server_cache_size, 100);
        assert_eq!(c.server.tcp_defer_accept_s, 0);
        assert_eq!(c.server.unix_socket_dir, "/var/run/postgresql");
        assert!(out.toml.contains("# not carried over: [pgbouncer] unix_socket_mode"), "{}", out.toml);
        assert_eq!(c.server.admin_users, ["ops", "root"]);
        assert_eq!(c.upstream.url, "postgres://app:s3cret@db.internal:5433");
        let auths: Vec<_> = c.users.iter().map(|u| (u.name.as_str(), u.auth)).collect();
        assert_eq!(
            auths,
            [("app", AuthMethod::ScramSha256), ("legacy", AuthMethod::Md5), ("plain", AuthMethod::ScramSha256)]
        );
        let named = out.dropped.join("\n");
        for what in ["reserve_pool_size", "logfile", "legacy: on other:5432", "pool_size (per-database", "[peers]"] {
            assert!(named.contains(what), "{what} not named in:\n{named}");
        }
        assert!(out.toml.contains("# not carried over: [pgbouncer] reserve_pool_size"));
        // `legacy` logs in with an md5 hash: its server login is named; `plain` needs nothing.
        assert!(named.contains("auth_file legacy: its secret is a hash"), "{named}");
        assert!(!named.contains("auth_file plain") && !named.contains("auth_file app"), "{named}");
    }

    #[test]
    fn a_server_entry_without_user_still_converts_and_names_every_hashed_login() {
        let ini = parse_ini("[databases]\nmydb = host=db dbname=mydb\n[pgbouncer]\nauth_type = md5\n").unwrap();
        let out = convert(&ini, Some("\"app\" \"md5d41d8cd98f00b204e9800998ecf8427e\"\n")).unwrap();
        let named = out.dropped.join("\n");
        assert!(
            named.contains("no user= on the server entry") && named.contains("auth_file app: its secret"),
            "{named}"
        );
    }

    #[test]
    fn a_socket_directory_host_stays_a_unix_socket() {
        // PgBouncer's `host=/dir` is the server's Unix-domain socket directory (it once became
        // 127.0.0.1, which a server listening only on its socket refuses); odd credentials survive.
        let ini =
            parse_ini("[databases]\nmydb = host=/var/run/postgresql port=5433 user=app password='p@s:s/'\n").unwrap();
        let out = convert(&ini, None).unwrap();
        let cfg: crate::config::Config = toml::from_str(&out.toml).unwrap();
        let up = super::super::load::parse_upstream(&cfg.upstream.url).unwrap();
        assert_eq!(
            (up.host.as_str(), up.port, up.user.as_str(), up.password.as_deref()),
            ("/var/run/postgresql", 5433, "app", Some("p@s:s/"))
        );
        // No host at all: PgBouncer's default socket, which pgpilot cannot guess: named.
        let out = convert(&parse_ini("[databases]\nmydb = port=5433 user=app\n").unwrap(), None).unwrap();
        assert!(out.dropped.join("\n").contains("mydb: no host="), "{:?}", out.dropped);
    }

    #[test]
    fn users_pool_size_carries_and_includes_and_a_missing_server_are_named() {
        let ini = parse_ini("%include /etc/pgbouncer/extra.ini\n[pgbouncer]\n[users]\nplain = pool_size=7 pool_mode=session\nghost = pool_size=3\n").unwrap();
        let out = convert(&ini, Some("\"plain\" \"pw\"\n")).unwrap();
        let c: Config = toml::from_str(&out.toml).unwrap();
        assert_eq!(c.users[0].pool_size, Some(7));
        let named = out.dropped.join("\n");
        for what in [
            "%include /etc/pgbouncer/extra.ini: not followed",
            "[users] plain: pool_mode=session",
            "[users] ghost: pool_size=3 (no auth_file entry",
            "[databases]: no entry",
        ] {
            assert!(named.contains(what), "{what} not named in:\n{named}");
        }
    }

    #[test]
    fn statement_mode_and_bad_lines_are_reported() {
        let out = convert(&parse_ini("[pgbouncer]\npool_mode = statement\n").unwrap(), None).unwrap();
        assert!(out.dropped[0].contains("statement pooling"));
        assert!(parse_ini("no section = 1\n").is_err());
        assert!(users("\"onlyname\"\n", "md5", &mut Vec::new()).is_err());
        assert_eq!(quoted(r#""a""b" "c d""#), ["a\"b", "c d"]);
        assert_eq!(connstring("host=h port=1 password='a b'")["password"], "a b");
    }
}
