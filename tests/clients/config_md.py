"""Renders docs/CONFIG.md from config/pgpilot.toml (its keys, defaults and comments) and the reload facts below.

Regenerate: python3 tests/clients/config_md.py > docs/CONFIG.md   (test_deploy.py checks the two agree)."""
import os
import re

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def render():
    src = open(os.path.join(ROOT, "config", "pgpilot.toml")).read().splitlines()
    RESTART = {"server.listen", "server.http_listen", "server.tcp_defer_accept_s", "server.unix_socket_dir", "server.worker_threads", "server.auth_secret", "tls.cert", "tls.key",
               "cache.max_bytes", "cache.redis_url", "cache.redis_timeout_ms", "cache.redis_verify_hits", "cache.invalidation",
               "cache.skip_unrepeated", "cache.replication_user", "cache.replication_password",
               "insights.max_fingerprints", "insights.analysis_cache_entries", "prepared.registry_max",
               "strategy.enabled", "strategy.cache_window", "strategy.cache_min_hit_ratio", "strategy.cache_cheap_miss_ms",
               "strategy.cache_reprobe_s", "strategy.cache_ttl_write_intervals"}
    NEW_SESSIONS = {"pool.mode", "strategy.slow_lane_share", "strategy.defer_begin", "server.max_message_bytes", "pool.isolate_attached_code"}
    section, comments, rows = None, [], []
    for line in src:
        if re.match(r"^# ?\[\[[a-z_.]+\]\]", line):
            section = None  # an example list entry: documented apart
            continue
        m = re.match(r"^\[([a-z_.]+)\]$", line)
        if m:
            section, comments = m.group(1), []
            continue
        m = re.match(r"^([a-z0-9_]+) = (.*)$", line)
        if m and section:
            rows.append((section, m.group(1), m.group(2), " ".join(comments)))
            comments = []
            continue
        m = re.match(r"^# ([a-z0-9_]+) = (.*)$", line)
        if m and section and section not in ("users",) and not line.startswith("# name") :
            rows.append((section, m.group(1), "unset (e.g. " + m.group(2) + ")", " ".join(comments)))
            comments = []
            continue
        if line.startswith("#"):
            comments.append(line.lstrip("#").strip())
        elif not line.strip():
            pass
    out = ["# Configuration reference", "",
           "Every key of `config/pgpilot.toml`, its default, its environment variable and when a change takes effect.",
           "Precedence: built-in defaults < the file (`--config`, env `PGPILOT_CONFIG`) < environment < command-line flags.",
           "`pgpilot --check` prints the effective configuration (secrets masked) and exits 0, or names the error and exits 2.",
           "",
           "Environment: `PGPILOT_<SECTION>_<KEY>` sets any scalar key (`PGPILOT_POOL_MAX_SIZE=20`; booleans `true`/`false`,",
           "lists comma-separated: `PGPILOT_SERVER_ADMIN_USERS=ops,app`); a variable naming a section but no key of it is an error.",
           "`[[users]]`, `[[cache.rules]]` and `[[strategy.pins]]` only in a file; `PGPILOT_USERS_FILE=/path/users.toml` reads",
           "the users from a TOML file of `[[users]]` entries (what a container mounts from a secret). Flat names kept from",
           "earlier versions: `DATABASE_URL` and `PGPILOT_UPSTREAM` (the upstream; `PGPILOT_UPSTREAM_URL` wins over both),",
           "`PGPILOT_LISTEN`, `PGPILOT_HTTP_LISTEN`, `PGPILOT_REDIS_URL`, `PGPILOT_CONFIG` (the flags' variables, which win over",
           "the file and the section names); `PGPILOT_LOG` sets the log filter (`info`, `debug`, `pgpilot::cache=trace`).",
           "",
           "Reload (`SIGHUP`, or `RELOAD` in the admin console): **yes** = read where it is used, so a reload applies at once",
           "(pool sizes and timeouts, users, rules); **new sessions** = read when a client logs in; **restart** = fixed at start.",
           ""]
    cur = None
    for section, key, default, desc in rows:
        if section != cur:
            out += ["", f"## [{section}]", "", "| key | default | environment | reload | what it does |", "|---|---|---|---|---|"]
            cur = section
        name = f"{section}.{key}"
        reload = "restart" if name in RESTART else "new sessions" if name in NEW_SESSIONS else "yes"
        env = f"PGPILOT_{section.upper()}_{key.upper()}"
        desc = desc.replace("|", "\\|") or "(described with the key above)"
        default = default.replace("|", "\\|")
        out.append(f"| `{key}` | `{default}` | `{env}` | {reload} | {desc} |")
    out += ["", "## [[users]] (file or PGPILOT_USERS_FILE only)", "",
            "| key | what it does |", "|---|---|",
            "| `name` | the login name |",
            "| `password` | plain password, an md5 hash (`md5...`) or a SCRAM secret (`SCRAM-SHA-256$4096:...`) |",
            "| `auth` | client authentication: `scram-sha-256` (default), `md5` or `trust` |",
            "| `server_user`, `server_password` | credentials pgpilot uses upstream (default: the same name, the password when plain) |",
            "| `pool_size` | pool size for this user's pools (default `[pool] max_size`) |", "",
            "## [[cache.rules]] and [[strategy.pins]] (file only)", "",
            "`[[cache.rules]]`: `table` (unqualified name) or `fingerprint` (hex, as in /queries), and `ttl_s` (0: never cached);",
            "the first rule that matches a read decides its TTL. `[[strategy.pins]]`: `table` or `fingerprint`, and `strategy`",
            "= `cache` (always looked up), `pass-through` (never looked up, never in the slow lane) or `slow-lane`.", ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
